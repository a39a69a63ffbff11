"""How busy a parallel search keeps its workers when trials differ in length: Hydra's stock
Optuna sweeper, which launches trials in batches of n_jobs and waits for each batch's slowest,
against nf_optuna, which launches the next trial as soon as one ends. Both on joblib with two
workers, on the real MNIST, searching trainer.epochs in 1..6 with a seeded random sampler.

A worker is busy from a run's start to its last record (`timing.started` and
`timing.heartbeat` in results.json); the busy fraction is the runs' busy time over
2 workers x (last record - first start), so the workers' own start-up is left out.

For nf_optuna it also splits the idle time, from the study's timestamps: the tail (once the
last trial has started, a worker with nothing left to start waits for it), each trial's
start-up (asked for -> its run starts: the launch, Hydra's job set-up) and wind-down (its last
record -> told to the study: the job's end, the result's return, the tell), and the rest.

    NEURALFORGE_DATA=/path/to/data flock /tmp/nf-heavy.lock python benchmarks/search_busy_workers.py [--trials 10] [--seeds 1] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from neuralforge import hardware, records  # noqa: E402

SWEEPERS = {
    "stock": ["hydra/sweeper=optuna", "hydra.sweeper.direction=maximize",
                               "hydra.sweep.subdir=job_${hydra.job.num}"],
    "nf_optuna": ["hydra/sweeper=nf_optuna"],
}


def search(sweep_dir: Path, sweeper: list[str], args: argparse.Namespace) -> dict:
    command = [sys.executable, "run.py", "-m", *sweeper, "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0",
               f"hydra.sweeper.n_trials={args.trials}", "hydra.sweeper.n_jobs=2", "hydra/launcher=joblib",
               "hydra.launcher.n_jobs=2", "trainer.epochs=choice(1,2,3,4,5,6)", "threads=1", "device=cpu",
               f"trainer.batch_size={args.batch_size}", f"n_seeds={args.seeds}", f"hydra.sweep.dir={sweep_dir}"]
    tick = time.time()
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - tick
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(sweeper)} failed:\n{out.stderr[-3000:]}")
    members = [json.loads(p.read_text()) for p in sweep_dir.rglob(records.RESULTS)]
    # a trial's members train together in one job: its busy time counts once
    runs = list({r["group"]["folder"]: r for r in members}.values())
    start = min(r["timing"]["started"] for r in runs)
    end = max(r["timing"]["heartbeat"] for r in runs)
    busy = sum(r["timing"]["heartbeat"] - r["timing"]["started"] for r in runs)
    row = {"trials": len(runs), "epochs": sum(r["metrics"]["epochs_run"] for r in runs),
           "busy": busy / (2 * (end - start)), "span": end - start, "wall": wall}
    if (sweep_dir / "optuna.db").exists():
        row["idle"] = idle_parts(sweep_dir, runs, start, end)
    return row


def idle_parts(sweep_dir: Path, runs: list[dict], start: float, end: float) -> dict[str, float]:
    """Seconds of the 2 workers' idle time, by cause (see the module's docstring)."""
    storage = f"sqlite:///{sweep_dir}/optuna.db"
    study = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)
    by_folder = {Path(r["group"]["folder"]).name: r for r in runs}
    last = max(runs, key=lambda r: r["timing"]["started"])
    # once the last trial has started, each worker runs its final trial, and the one that
    # ends first has nothing left to start
    others = [r["timing"]["heartbeat"] for r in runs if r is not last]
    tail_from = max(last["timing"]["started"], min(last["timing"]["heartbeat"], max(others, default=end)))
    tail = end - tail_from
    startup = winddown = 0.0  # counted inside [start, tail_from] only, as the tail is
    for t in study.trials:
        r = by_folder[t.user_attrs["nf_folder"]]
        startup += max(0.0, r["timing"]["started"] - max(t.datetime_start.timestamp(), start))
        winddown += max(0.0, min(t.datetime_complete.timestamp(), tail_from) - r["timing"]["heartbeat"])
    idle = 2 * (end - start) - sum(r["timing"]["heartbeat"] - r["timing"]["started"] for r in runs)
    return {"tail": tail, "start-up": startup, "wind-down": winddown, "other": idle - tail - startup - winddown}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    # longer trials make the gap between two trials (the job's start-up, ask and tell) a smaller share
    parser.add_argument("--seeds", type=int, default=1, help="seeds trained together in each trial")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--sweepers", default=",".join(SWEEPERS), help="which to run, of: " + ", ".join(SWEEPERS))
    args = parser.parse_args()
    if not os.environ.get("NEURALFORGE_DATA"):
        raise SystemExit("set NEURALFORGE_DATA to the folder that holds MNIST/raw")
    print(f"CPU: {hardware.device_name(torch.device('cpu'))}, {hardware.available_cores()} cores; joblib, 2 workers of "
          f"1 thread; {args.trials} trials of {args.seeds} seeds at batch {args.batch_size}, trainer.epochs drawn from 1..6 "
          f"(random sampler, seed 0)")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(args.sweepers.split(",")):
            r = rows[name] = search(Path(tmp) / str(i), SWEEPERS[name], args)
            print(f"{name:>9}: busy {100 * r['busy']:.1f}% of 2 workers over {r['span']:.0f} s; {r['trials']} "
                  f"trials, {r['epochs']} epochs; command {r['wall']:.0f} s", flush=True)
            if "idle" in r:
                span2 = 2 * r["span"]
                print(" " * 11 + "idle, as a share of 2 workers' time: " + ", ".join(
                    f"{k} {100 * v / span2:.1f}% ({v:.1f} s)" for k, v in r["idle"].items()), flush=True)
    if len(rows) == 2:
        (barrier, free) = rows.values()
        print(f"busy fraction without the barrier / with it: x{free['busy'] / barrier['busy']:.2f}")


if __name__ == "__main__":
    main()
