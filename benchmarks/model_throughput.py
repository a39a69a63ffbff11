"""One training epoch (the first) of the MLP and of the CNNs, in one process, on the harness's loop.

    NEURALFORGE_DATA=$PWD/../shared/data python benchmarks/model_throughput.py
"""

from notebook import configure, data_root, harness_epoch, machine

ROWS = [
    ("MLP 784-128-64-10, batch 64 (the notebook's)", []),
    ("CNN [32,64] max-pool, batch 64 (model=cnn)", ["model=cnn"]),
    ("CNN [32,64] max-pool, batch 256", ["model=cnn", "trainer.batch_size=256"]),
    ("CNN [16,32] max-pool, batch 256 (cnn_fast)", ["+experiment=cnn_fast"]),
]

if __name__ == "__main__":
    root = data_root()
    print(f"threads: {configure()}, cpu: {machine()}")
    print("| model | s/epoch | vs MLP |")
    print("|---|---|---|")
    base = None
    for name, overrides in ROWS:
        seconds, = harness_epoch(root, *overrides)
        base = base or seconds
        print(f"| {name} | {seconds:.2f} | {seconds / base:.1f}x |")
