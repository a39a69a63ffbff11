"""What pruning saves in `hparams_search=mlp_recipe`, on the real MNIST: the same search (the
same sampler seed, the same n_trials) once per pruner, one after the other in this process.

For each search: the member-epochs spent (epochs trained, summed over trials and seeds), the
best validation mean found, the trials pruned, and the wall time; then each pruned search's
ratios to the unpruned one (`none`, run first).

    NEURALFORGE_DATA=/path/to/data flock /tmp/nf-heavy.lock python benchmarks/search_pruning.py \
        [--trials 10] [--seeds 2] [--epochs 1,2,3] [--pruners none,seed_noise,median,hyperband] [OVERRIDE ...]

The preset searches 24 trials of 4 seeds over 10, 20 or 30 epochs; the defaults here scale it
down (fewer trials, seeds and epochs) to fit a few minutes per search on a small CPU; overrides
such as trainer.batch_size=256 data.augment.shift=0 fix (and take out of the search) what costs most.
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


def search(sweep_dir: Path, pruner: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, "run.py", "-m", "hparams_search=mlp_recipe", f"hydra/sweeper/pruner={pruner}",
               f"hydra.sweeper.n_trials={args.trials}", f"seeds_per_trial={args.seeds}",
               f"trainer.epochs=choice({args.epochs})", f"threads={args.threads}", "device=cpu",
               f"hydra.sweep.dir={sweep_dir}", *args.extra]
    if pruner in ("median", "percentile", "seed_noise"):  # the others start pruning by their own rules
        command.append(f"hydra.sweeper.pruner.n_startup_trials={args.startup}")
    tick = time.time()
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - tick
    if out.returncode != 0:
        raise SystemExit(f"search with pruner {pruner} failed:\n{out.stderr[-3000:]}")
    study = optuna.load_study(study_name="mlp_recipe", storage=f"sqlite:///{sweep_dir}/optuna.db")
    member_epochs = sum(json.loads(p.read_text())["metrics"]["epochs_run"] for p in sweep_dir.rglob(records.RESULTS))
    states = [t.state.name for t in study.trials]
    return {"pruner": pruner, "member_epochs": member_epochs, "best": study.best_value,
            "best_trial": study.best_trial.number, "pruned": states.count("PRUNED"),
            "complete": states.count("COMPLETE"), "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", default="1,2,3", help="the choices of trainer.epochs searched")
    parser.add_argument("--startup", type=int, default=3, help="completed trials before median, percentile or seed_noise prunes")
    parser.add_argument("--threads", type=int, default=hardware.available_cores())
    parser.add_argument("--pruners", default="none,seed_noise,median,hyperband")
    parser.add_argument("extra", nargs="*", help="more overrides for every search")
    args = parser.parse_args()
    if not os.environ.get("NEURALFORGE_DATA"):
        raise SystemExit("set NEURALFORGE_DATA to the folder that holds MNIST/raw")
    print(f"CPU: {hardware.device_name(torch.device('cpu'))}, {hardware.available_cores()} cores; torch threads {args.threads}")
    print(f"hparams_search=mlp_recipe, {args.trials} trials of {args.seeds} seeds, trainer.epochs=choice({args.epochs}), "
          f"pruners wait for {args.startup} complete trials; sampler seed 0 (the preset's)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for pruner in args.pruners.split(","):
            rows.append(search(Path(tmp) / pruner, pruner, args))
            r = rows[-1]
            print(f"{r['pruner']:>11}: {r['member_epochs']:4d} member-epochs, best validation mean "
                  f"{100 * r['best']:.2f}% (trial {r['best_trial']}), {r['pruned']} pruned / {r['complete']} complete, "
                  f"{r['wall']:.0f} s", flush=True)
    base = rows[0]
    for r in rows[1:]:
        print(f"{r['pruner']:>11} vs {base['pruner']}: member-epochs x{r['member_epochs'] / base['member_epochs']:.2f}, "
              f"best validation mean {100 * (r['best'] - base['best']):+.2f} points, "
              f"wall time x{r['wall'] / base['wall']:.2f}")


if __name__ == "__main__":
    main()
