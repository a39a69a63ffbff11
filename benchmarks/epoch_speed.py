"""One training epoch of the default MLP: the notebook's pipeline against the harness's loop.

    NEURALFORGE_DATA=$PWD/../shared/data python benchmarks/epoch_speed.py
"""

from notebook import configure, data_root, harness_epoch, notebook_epoch

if __name__ == "__main__":
    root = data_root()
    threads = configure()
    notebook = notebook_epoch(root)
    harness = harness_epoch(root)
    print(f"threads: {threads}")
    print(f"notebook pipeline: {notebook:6.2f} s/epoch")
    print(f"harness loop:      {harness:6.2f} s/epoch")
    print(f"ratio:             {notebook / harness:6.1f}x")
