"""Seeds each of two configs needs before a race's confidence sequences tell them apart, by
method: the Gaussian t sequence (Lai 1976) against sequences that assume only bounded values.

Simulated accuracies: each run N(mean, sd) with sd 0.15 points (the notebook MLP's seed-to-seed
spread on MNIST), the configs 0.1, 0.3 and 1 point apart, the better at 98%. Each config's
sequence is at alpha / 2 (two configs, as a race of two uses), alpha 0.05; a pair is told apart
at the first n where the worse config's upper end lies below the better's lower end. Prints the
median n over the simulations (and how many hit the cap), and the CPU.

    python benchmarks/race_seeds_needed.py                     # t, bounded on [0, 1] and [0.9, 1]
    python benchmarks/race_seeds_needed.py --methods betting   # Waudby-Smith & Ramdas's hedged
        # betting sequence, from the confseq package's pure-Python part (confseq 0.0.11 imports
        # only with numpy < 2, and its compiled part does not build on Python 3.11: run it in a
        # separate environment, PYTHONPATH=<confseq sdist>/src)
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time

import numpy as np

MEAN, SD, ALPHA = 0.98, 0.0015, 0.05
GAPS = (0.001, 0.003, 0.01)


def cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def first_separated(lows_a, highs_b, cap: int) -> int:
    apart = np.nonzero(highs_b < lows_a)[0]
    return int(apart[0]) + 1 if len(apart) else cap


def project_path(name: str, x):
    """The project's sequence at every n: (lows, highs)."""
    from analysis import sequential
    level = ALPHA / 2
    if name == "t":
        return sequential.t_cs_path(x, level)
    if name == "bounded":
        return sequential.bounded_cs_path(x, level, (0.0, 1.0))
    if name == "bounded_0.9":  # a narrower support declared: a run below 90% would break it
        return sequential.bounded_cs_path(np.clip(x, 0.9, 1.0), level, (0.9, 1.0))
    raise SystemExit(f"unknown method {name}")


def betting_curve(x, cap: int, breaks: int):
    from confseq.betting import betting_cs
    lows, highs = betting_cs(x[:cap], alpha=ALPHA / 2, breaks=breaks, running_intersection=True)
    return np.asarray(lows), np.asarray(highs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["t", "bounded", "bounded_0.9"],
                   help="t, bounded, bounded_0.9, betting")
    p.add_argument("--sims", type=int, default=100)
    p.add_argument("--cap", type=int, default=20000, help="the most seeds tried")
    p.add_argument("--breaks", type=int, default=10000, help="betting: grid points of candidate means in [0, 1]")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    print(f"CPU: {cpu()}; sd {100 * SD:.2f} points, alpha {ALPHA} over 2 configs; median seeds per config to tell "
          f"them apart ({args.sims} simulations; '>cap' where more than half did not within {args.cap})")
    for method in args.methods:
        t0 = time.perf_counter()
        row = []
        for gap in GAPS:
            needed = []
            for _ in range(args.sims if method != "betting" else max(5, args.sims // 20)):
                a = np.clip(rng.normal(MEAN, SD, args.cap), 0, 1)
                b = np.clip(rng.normal(MEAN - gap, SD, args.cap), 0, 1)
                if method == "betting":
                    (la, _), (_, hb) = betting_curve(a, args.cap, args.breaks), betting_curve(b, args.cap, args.breaks)
                else:
                    (la, _), (_, hb) = project_path(method, a), project_path(method, b)
                needed.append(first_separated(la, hb, args.cap))
            med = np.median(needed)
            row.append(f"{100 * gap:.1f} points: " + (f">{args.cap}" if med >= args.cap else f"{med:.0f}"))
        print(f"{method:12s} " + "; ".join(row) + f"  ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
