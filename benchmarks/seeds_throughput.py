"""Seconds per model-epoch of the default MLP: the notebook's pipeline, the harness's single run,
and K seeds trained together in one process.

    NEURALFORGE_DATA=$PWD/../shared/data python benchmarks/seeds_throughput.py [K ...]

Each path trains two epochs; the table gives the second, which is what every later epoch of a
run costs (the first also pays one-off costs: first touches of memory, the optimizer's state).
Peak RSS is the process's high-water mark after each row; the rows run in increasing K, so
each row's figure is that K's peak.
"""

import resource
import sys

import torch

from notebook import configure, data_root, harness_epoch, notebook_epoch


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    root = data_root()
    sizes = [int(k) for k in sys.argv[1:]] or [8, 32, 128]
    threads = configure()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"threads: {threads}, harness device: {device}")
    print("| path | K | s/epoch | s/model-epoch | vs notebook | peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    base = notebook_epoch(root, epochs=2)[-1]
    print(f"| notebook pipeline | 1 | {base:.2f} | {base:.3f} | 1.0x | {peak_rss_mb():.0f} |")
    for k in [1, *sizes]:
        seconds = harness_epoch(root, f"n_seeds={k}", f"device={device}", epochs=2)[-1]
        path = "harness single run" if k == 1 else "harness, K seeds together"
        print(f"| {path} | {k} | {seconds:.2f} | {seconds / k:.3f} | {base / (seconds / k):.1f}x | {peak_rss_mb():.0f} |")
