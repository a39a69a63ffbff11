"""How long `python -m analysis export` takes on a sweep of 1,000 runs of 10 epochs (the budget is
60 s on 2 cores), per tracker, and how long the second export takes, which finds everything there.

The sweep is collect_speed's synthetic one (20 configs of 50 seeds, each with results.json,
history.csv and predictions.npy), with a manifest, in a temporary folder; each tracker writes
beside it (MLflow: a SQLite store). The noise floor is left out: the records name no dataset
that lies here.

    python benchmarks/export_speed.py [--runs 1000] [--trackers mlflow tensorboard wandb]
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from collect_speed import write_sweep

from analysis import collect
from analysis.export import export
from neuralforge import hardware, sweeps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--trackers", nargs="+", default=["mlflow", "tensorboard", "wandb"])
    args = p.parse_args()
    logging.getLogger("neuralforge.trackers").setLevel(logging.ERROR)  # the noise floor's warning
    logging.getLogger("alembic").setLevel(logging.WARNING)
    warnings.simplefilter("ignore")
    print(f"CPU: {hardware.device_name(torch.device('cpu'))}, {hardware.available_cores()} cores; "
          f"{args.runs} runs of 10 epochs")
    for tracker in args.trackers:
        if importlib.util.find_spec(tracker) is None:
            print(f"{tracker}: not installed (pip install -e '.[{tracker}]')")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            sweep = Path(tmp) / "sweep"
            write_sweep(sweep, args.runs)
            sweeps.write_manifest(sweep, [{"folder": f.name, "overrides": []} for f in sweep.iterdir()], kind="grid")
            times = []
            for _ in range(2):
                start = time.perf_counter()
                done = export(collect(sweep), tracker)
                times.append(time.perf_counter() - start)
            assert done["runs"] == args.runs
            print(f"{tracker}: first export {times[0]:.1f} s, second (nothing to add) {times[1]:.1f} s; "
                  f"{done['configs']} configs, budget 60 s")


if __name__ == "__main__":
    main()
