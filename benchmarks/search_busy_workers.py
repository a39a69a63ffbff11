"""How busy a parallel search keeps its workers when trials differ in length: Hydra's stock
Optuna sweeper, which launches trials in batches of n_jobs and waits for each batch's slowest,
against nf_optuna, which launches the next trial as soon as one ends. Both on joblib with two
workers, on the real MNIST, searching trainer.epochs in 1..6 with a seeded random sampler.

A worker is busy from a run's start to its last record (`timing.started` and
`timing.heartbeat` in results.json); the busy fraction is the runs' busy time over
2 workers x (last record - first start), so the workers' own start-up is left out.

It also splits the idle time: the gaps between trials (a worker's last record of one trial
to its next trial's start: the job's end, the tell, the ask, the launch and Hydra's job
set-up), and the tail (once the last trial has started, the worker that ends first has
nothing left to start). With batches, waiting for a batch's slowest trial is in the gaps.

    NEURALFORGE_DATA=/path/to/data flock /tmp/nf-heavy.lock python benchmarks/search_busy_workers.py \
        [--trials 10] [--seeds 1] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from neuralforge import hardware  # noqa: E402
from neuralforge.record.files import RESULTS  # noqa: E402
from neuralforge.record.schema import read_results  # noqa: E402

SWEEPERS = {
    "stock": ["hydra/sweeper=optuna", "hydra.sweeper.direction=maximize",
                               "hydra.sweep.subdir=job_${hydra.job.num}"],
    "nf_optuna": ["hydra/sweeper=nf_optuna"],
    # a third trial waits in joblib's queue, asked for and sent, for the first worker that frees
    "nf_optuna+1": ["hydra/sweeper=nf_optuna", "hydra.sweeper.n_jobs=3"],
}


def search(sweep_dir: Path, sweeper: list[str], args: argparse.Namespace) -> dict:
    command = [sys.executable, "run.py", "-m", sweeper[0], "hydra/sweeper/sampler=random",
               "hydra.sweeper.sampler.seed=0",
               f"hydra.sweeper.n_trials={args.trials}", "hydra.sweeper.n_jobs=2", "hydra/launcher=joblib",
               "hydra.launcher.n_jobs=2", "trainer.epochs=choice(1,2,3,4,5,6)", "threads=1", "device=cpu",
               f"trainer.batch_size={args.batch_size}", f"n_seeds={args.seeds}", f"hydra.sweep.dir={sweep_dir}",
               *sweeper[1:]]
    tick = time.time()
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - tick
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(sweeper)} failed:\n{out.stderr[-3000:]}")
    members = [read_results(p.parent) for p in sweep_dir.rglob(RESULTS)]
    # a trial's members train together in one job: its busy time counts once
    runs = list({r.group.folder: r for r in members}.values())
    start = min(r.timing.started for r in runs)
    end = max(r.timing.heartbeat for r in runs)
    spans = sorted((r.timing.started, r.timing.heartbeat) for r in runs)
    busy = sum(e - s for s, e in spans)
    return {"trials": len(runs), "epochs": sum(r.metrics.epochs_run for r in runs),
            "busy": busy / (2 * (end - start)), "span": end - start, "wall": wall,
            "idle": idle_parts(spans, 2 * (end - start) - busy)}


def idle_parts(spans: list[tuple[float, float]], idle: float) -> dict[str, float]:
    """Seconds of the 2 workers' idle time, by cause (see the module's docstring); spans are
    the trials' (start, last record), in order of start."""
    # each trial after the first two starts on the worker that freed first: its gap is the
    # time from that worker's last record to its own start
    free, gaps = sorted(e for _, e in spans[:2]), []
    for s, e in spans[2:]:
        gaps.append(s - free.pop(0))
        free = sorted([*free, e])
    tail = free[-1] - free[0] if len(free) == 2 else 0.0
    return {"tail": tail, "between trials": sum(gaps), "mean gap": sum(gaps) / max(len(gaps), 1),
            "other": idle - tail - sum(gaps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    # longer trials make the gap between two trials (the job's start-up, ask and tell) a smaller share
    parser.add_argument("--seeds", type=int, default=1, help="seeds trained together in each trial")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--sweepers", default="stock,nf_optuna", help="which to run, of: " + ", ".join(SWEEPERS))
    args = parser.parse_args()
    if not os.environ.get("NEURALFORGE_DATA"):
        raise SystemExit("set NEURALFORGE_DATA to the folder that holds MNIST/raw")
    print(f"CPU: {hardware.device_name(torch.device('cpu'))}, {hardware.available_cores()} cores; joblib, 2 workers of "
          f"1 thread; {args.trials} trials of {args.seeds} seeds at batch {args.batch_size}, "
          f"trainer.epochs drawn from 1..6 "
          f"(random sampler, seed 0)")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(args.sweepers.split(",")):
            r = rows[name] = search(Path(tmp) / str(i), SWEEPERS[name], args)
            print(f"{name:>11}: busy {100 * r['busy']:.1f}% of 2 workers over {r['span']:.0f} s; {r['trials']} "
                  f"trials, {r['epochs']} epochs; command {r['wall']:.0f} s", flush=True)
            idle = r["idle"]
            print(" " * 13 + f"idle: tail {100 * idle['tail'] / (2 * r['span']):.1f}%, between trials "
                  f"{100 * idle['between trials'] / (2 * r['span']):.1f}% ({idle['mean gap']:.2f} s a trial), other "
                  f"{100 * idle['other'] / (2 * r['span']):.1f}% of the 2 workers' time", flush=True)
    if len(rows) == 2:
        (barrier, free) = rows.values()
        print(f"busy fraction without the barrier / with it: x{free['busy'] / barrier['busy']:.2f}")


if __name__ == "__main__":
    main()
