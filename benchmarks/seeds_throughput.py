"""Seconds per model-epoch of the default MLP: the notebook's pipeline, the harness's single run,
and K seeds trained together in one process.

    NEURALFORGE_DATA=$PWD/../shared/data python benchmarks/seeds_throughput.py [K ...] [--matmul-precision P]

The harness's rows run at `matmul_precision=P` (default highest, the float32 the notebook uses).

Each path trains two epochs; the table gives the second, which is what every later epoch of a
run costs (the first also pays one-off costs: first touches of memory, the optimizer's state).
Each row runs in a fresh child process, one after another, so that its peak RSS is its own
and not the high-water mark of the rows before it.
"""

import argparse
import multiprocessing
import resource
from concurrent.futures import ProcessPoolExecutor

import torch
from notebook import configure, data_root, harness_epoch, machine, notebook_epoch

from neuralforge.config import MATMUL_PRECISIONS


def row(root: str, k: int, device: str, precision: str) -> tuple[float, float]:
    """Seconds of the second epoch and peak RSS in MB; k = 0 is the notebook's pipeline."""
    configure()
    if k == 0:
        seconds = notebook_epoch(root, epochs=2)[-1]
    else:
        seconds = harness_epoch(root, f"n_seeds={k}", f"device={device}", f"matmul_precision={precision}",
                                epochs=2)[-1]
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("sizes", nargs="*", type=int, default=[8, 32, 128])
    parser.add_argument("--matmul-precision", default="highest", choices=MATMUL_PRECISIONS)
    args = parser.parse_args()
    root, sizes, precision = data_root(), args.sizes, args.matmul_precision
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"threads: {configure()}, cpu: {machine()}, harness device: {device}, matmul_precision: {precision}")
    print("| path | K | s/epoch | s/model-epoch | vs notebook | peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1)
    base = None
    for k in [0, 1, *sizes]:
        seconds, rss = pool.submit(row, root, k, device, precision).result()
        if k == 0:
            base = seconds
            print(f"| notebook pipeline | 1 | {base:.2f} | {base:.3f} | 1.0x | {rss:.0f} |", flush=True)
            continue
        path = "harness single run" if k == 1 else "harness, K seeds together"
        print(f"| {path} | {k} | {seconds:.2f} | {seconds / k:.3f} | {base / (seconds / k):.1f}x | {rss:.0f} |",
              flush=True)
