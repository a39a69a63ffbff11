"""Several workers on one Optuna study: PostgreSQL against SQLite, by the same command.

P processes each run `python run.py -m hparams_search=mlp_optuna` on one study with
hydra/launcher=joblib and hydra.sweeper.n_jobs=J, so P x J trials are in flight at once, until
the study holds N trials. Small trials (one seed, a 32-16 MLP, 2 epochs on the tests'
synthetic IDX dataset, one thread each), so that the storage's share of the time shows.
PostgreSQL is started on 127.0.0.1 for the run (tests/servers.py); SQLite is a file in the
sweep folder, as the search's preset has it.

For each storage it prints the trials in the study, how many were lost (not complete or
pruned at the end, or without a matching record in their folder), how many were run twice
(a folder trained by a second process from scratch, or a trial taken over as if its search
were gone), the wall time from launch to the last process's exit, trials per minute, and
the ratio of the two storages' medians over --repeat searches each.

    flock /tmp/nf-heavy.lock python benchmarks/search_storage.py [--processes 2] [--jobs 2] [--trials 40] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from conftest import FAST, write_dataset  # noqa: E402
from servers import postgres_server  # noqa: E402

from neuralforge import hardware  # noqa: E402
from neuralforge.record.files import LOG  # noqa: E402
from neuralforge.record.schema import read_results  # noqa: E402

STUDY = "storage_bench"


def search(data: Path, storage: str, sweep_dir: Path, study_name: str, processes: int, jobs: int, trials: int) -> dict:
    """Runs the P processes to the end; what the study and the folders hold then."""
    command = [sys.executable, "run.py", "-m", "hparams_search=mlp_optuna", f"data.root={data}", *FAST,
               "seeds_per_trial=1", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}",
               f"hydra.sweeper.n_jobs={jobs}", f"hydra.sweeper.n_trials={trials}",
               f"hydra.sweeper.storage={storage}", f"hydra.sweeper.study_name={study_name}",
               f"hydra.sweep.dir={sweep_dir}"]
    env = {k: v for k, v in os.environ.items() if k != "NEURALFORGE_DATA"}
    logs = [sweep_dir.parent / f"{sweep_dir.name}.{i}.log" for i in range(processes)]
    start = time.perf_counter()
    procs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
             for log in logs]
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - start
    study = optuna.load_study(study_name=study_name, storage=storage)
    lost = twice = 0
    for t in study.trials:
        folder = sweep_dir / f"trial_{t.number:04d}"
        ended = t.state.name in ("COMPLETE", "PRUNED")
        rec = read_results(folder)
        lost += not (ended and rec is not None and rec.status == t.state.name.lower()
                     and rec.config["trial"] == t.number)
        log = folder / LOG
        twice += log.exists() and log.read_text().count("Training seed") > 1
    said = "".join(log.read_text() for log in logs)
    twice += said.count("by a process that is gone: this search resumes it")
    done = sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
    return {"codes": codes, "trials": len(study.trials), "done": done, "lost": lost, "twice": twice,
            "wall": wall, "per_min": done / wall * 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2, help="hydra.sweeper.n_jobs of each process")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3, help="searches per storage, the two storages alternating")
    args = parser.parse_args()
    out: dict[str, list[dict]] = {"sqlite": [], "postgresql": []}
    with tempfile.TemporaryDirectory(prefix="nf-storage-") as tmp, postgres_server() as postgres:
        tmp = Path(tmp)
        data = write_dataset(tmp / "idx")
        for i in range(args.repeat):
            # a new study each time: the same study would already hold its trials
            storages = {"sqlite": f"sqlite:///{tmp / f'sqlite{i}' / 'optuna.db'}", "postgresql": postgres}
            for name, storage in storages.items():
                out[name].append(search(data, storage, tmp / f"{name}{i}", f"{STUDY}{i}", args.processes, args.jobs,
                                        args.trials))
    print(f"CPU: {hardware.device_name(torch.device('cpu'))}, {hardware.available_cores()} cores; {args.processes} "
          f"processes x hydra.sweeper.n_jobs={args.jobs} (joblib), n_trials={args.trials}, optuna {optuna.__version__}")
    print("| storage | exit codes | trials | complete or pruned | lost | run twice | wall s | trials/min |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, runs in out.items():
        for r in runs:
            print(f"| {name} | {r['codes']} | {r['trials']} | {r['done']} | {r['lost']} | {r['twice']} | "
                  f"{r['wall']:.1f} | {r['per_min']:.1f} |")
    median = {name: statistics.median(r["per_min"] for r in runs) for name, runs in out.items()}
    print(f"median trials per minute: SQLite {median['sqlite']:.1f}, PostgreSQL {median['postgresql']:.1f}; "
          f"PostgreSQL / SQLite: {median['postgresql'] / median['sqlite']:.2f}")


if __name__ == "__main__":
    main()
