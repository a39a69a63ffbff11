"""Training epochs of the default MLP: the notebook's pipeline against the harness's loop.

    NEURALFORGE_DATA=$PWD/../shared/data python benchmarks/epoch_speed.py

Each side trains two epochs. The first carries one-off costs (first touches of memory, the
optimizer's state); the second is what every later epoch of a run costs.
"""

from notebook import configure, data_root, harness_epoch, machine, notebook_epoch

if __name__ == "__main__":
    root = data_root()
    threads = configure()
    notebook = notebook_epoch(root, epochs=2)
    harness = harness_epoch(root, epochs=2)
    print(f"threads: {threads}, cpu: {machine()}")
    print("|  | notebook pipeline | harness loop | ratio |")
    print("|---|---|---|---|")
    for name, a, b in zip(("first epoch", "second epoch"), notebook, harness):
        print(f"| {name} | {a:.2f} s | {b:.2f} s | {a / b:.1f}x |")
