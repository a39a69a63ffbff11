"""float32 products computed in float32 or in bfloat16: the speed of K seeds trained together,
and whether the accuracies they reach differ.

    NEURALFORGE_DATA=$PWD/../shared/data python benchmarks/matmul_precision.py [--k 32] [--epochs 10]

Both groups train the same K seeds (same weights, data order and validation split) in one
process, their epochs alternating so that the machine's drift falls on both alike; each epoch
is timed alone. At the end both are evaluated on the test set, and each seed's two accuracies
are compared: a paired test, since a seed at one precision and the same seed at the other share
everything but the rounding.
"""

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch
from notebook import configure, data_root, harness_config, machine
from scipy import stats

from neuralforge.engine import settle
from neuralforge.training import Training

PRECISIONS = ("highest", "medium")


def product_error(precision: str) -> float:
    """Relative error of a batched product at this precision against float64: about 1e-7 in
    float32, about 1e-3 when the factors are rounded to bfloat16. Whether `medium` rounds depends
    on the CPU: oneDNN does with AMX, and computed in float32 on an AMD EPYC with AVX512-BF16."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(32, 64, 784, generator=g), torch.randn(32, 784, 128, generator=g)
    torch.set_float32_matmul_precision(precision)
    exact = torch.bmm(a.double(), b.double())
    return ((torch.bmm(a, b).double() - exact).abs().max() / exact.abs().max()).item()

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    print(f"threads: {configure()}, cpu: {machine()}, K = {args.k}, {args.epochs} epochs")
    error = {p: product_error(p) for p in PRECISIONS}
    print(f"relative error of a product: highest {error['highest']:.1e}, medium {error['medium']:.1e} "
          f"({'bfloat16 factors' if error['medium'] > 1e-4 else 'float32'} at medium on this CPU)")
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for p in PRECISIONS:
            cfg = harness_config(data_root(), f"n_seeds={args.k}", f"matmul_precision={p}")
            runs[p] = Training(cfg, *settle(cfg))  # settle sets the precision; each epoch sets it again
        seconds = {p: [] for p in PRECISIONS}
        for i in range(args.epochs):
            for p in PRECISIONS if i % 2 == 0 else PRECISIONS[::-1]:
                torch.set_float32_matmul_precision(p)
                tick = time.perf_counter()
                runs[p].train_epoch()
                seconds[p].append(time.perf_counter() - tick)
        acc = {}
        for p, run in runs.items():
            torch.set_float32_matmul_precision(p)
            acc[p] = run.evaluate(run.data.test_x, run.data.test_y)[1].numpy() * 100

    print("| matmul_precision | s/epoch after the first | s/model-epoch | test acc %: mean (sd) |")
    print("|---|---|---|---|")
    mean = {p: statistics.mean(s[1:]) for p, s in seconds.items()}
    for p in PRECISIONS:
        sd = f" ({acc[p].std(ddof=1):.2f})" if args.k > 1 else ""
        print(f"| {p} | {mean[p]:.2f} | {mean[p] / args.k:.3f} | {acc[p].mean():.2f}{sd} |")
    print(f"medium is {mean['highest'] / mean['medium']:.2f}x as fast")
    diff = acc["medium"] - acc["highest"]
    if not diff.any():
        raise SystemExit("every seed reached the same accuracy at both settings: medium ran highest's kernels here")
    if len(diff) < 2:
        raise SystemExit(f"medium - highest: {diff[0]:+.2f} points (one seed: no test)")
    low, high = stats.t.interval(0.95, len(diff) - 1, loc=diff.mean(), scale=stats.sem(diff))
    print(f"medium - highest, per seed: mean {diff.mean():+.3f} points, 95% CI [{low:+.3f}, {high:+.3f}]; "
          f"Wilcoxon signed-rank p = {stats.wilcoxon(diff).pvalue:.3f}; "
          f"{np.count_nonzero(diff)} of {len(diff)} seeds differ")
