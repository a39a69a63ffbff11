"""What pruning saves in `hparams_search=mlp_recipe`, on the real MNIST: the same search (the
same sampler seed, the same n_trials) once per pruner, one after the other in this process.

For each search: the member-epochs spent (epochs trained, summed over trials and seeds), the
best validation mean found, the trials pruned, and the wall time; then each pruned search's
ratios to the unpruned one (`none`, which comes first).

    NEURALFORGE_DATA=/path/to/data flock /tmp/nf-heavy.lock python benchmarks/search_pruning.py \
        [--trials 10] [--seeds 2] [--epochs 1,2,3] [--pruners none,seed_noise,median,hyperband] \
        [--keep DIR] [--replay [PRUNERS]] [OVERRIDE ...]

A pruner is a name of `hydra/sweeper/pruner=`, with arguments after colons:
`successive_halving:min_resource=2:reduction_factor=3`.

With --keep DIR the searches stay in DIR/<pruner>, and a search already finished there (its
row saved in DIR/<pruner>/benchmark.json) is read back, not run again: a full-scale unpruned
search takes most of an hour on a small CPU, and can then be compared with each new pruner.
Rows read back say so, since their wall times were measured in an earlier run.

--replay also replays the unpruned search's learning curves through each pruner (those
searched, or those it lists), trial by
trial in the order they ran: which trials it would have stopped, the member-epochs it would
have spent, and the best it would have kept. The trials are held fixed (a real pruned search
samples its later trials from what it pruned), so this compares the pruners' decisions alone,
in seconds, without training.

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
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from neuralforge import hardware  # noqa: E402
from neuralforge.record.atomic import write_json  # noqa: E402
from neuralforge.record.files import RESULTS  # noqa: E402
from neuralforge.record.study import Attr  # noqa: E402
from neuralforge.search.configs import PRUNERS  # noqa: E402
from neuralforge.search.trial import build_pruner  # noqa: E402

ROW = "benchmark.json"
STUDY = "mlp_recipe"


def pruner_arguments(spec: str, startup: int | None) -> tuple[str, dict[str, str]]:
    """`name:key=value:...` as the pruner's name and its arguments."""
    name, *pairs = spec.split(":")
    if name not in PRUNERS:
        raise SystemExit(f"--pruners: {name} is not one of {', '.join(PRUNERS)}")
    arguments = dict(pair.split("=", 1) for pair in pairs)
    if startup is not None and "n_startup_trials" in PRUNERS[name].__dataclass_fields__:
        arguments.setdefault("n_startup_trials", str(startup))  # the others start pruning by their own rules
    return name, arguments


def search(sweep_dir: Path, spec: str, args: argparse.Namespace) -> dict:
    if (sweep_dir / ROW).exists():
        return {**json.loads((sweep_dir / ROW).read_text()), "reused": True}
    name, arguments = pruner_arguments(spec, args.startup)
    command = [sys.executable, "run.py", "-m", "hparams_search=mlp_recipe", f"hydra/sweeper/pruner={name}",
               *(f"hydra.sweeper.pruner.{k}={v}" for k, v in arguments.items()),
               f"hydra.sweeper.n_trials={args.trials}", f"seeds_per_trial={args.seeds}",
               f"trainer.epochs=choice({args.epochs})", f"threads={args.threads}", "device=cpu",
               f"hydra.sweep.dir={sweep_dir}", *args.extra]
    tick = time.time()
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - tick
    if out.returncode != 0:
        raise SystemExit(f"search with pruner {spec} failed:\n{out.stderr[-3000:]}")
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{sweep_dir}/optuna.db")
    member_epochs = sum(json.loads(p.read_text())["metrics"]["epochs_run"] for p in sweep_dir.rglob(RESULTS))
    states = [t.state.name for t in study.trials]
    row = {"pruner": spec, "member_epochs": member_epochs, "best": study.best_value,
           "best_trial": study.best_trial.number, "best_params": study.best_trial.params,
           "pruned": states.count("PRUNED"), "complete": states.count("COMPLETE"), "wall": wall,
           "command": " ".join(command[1:])}
    write_json(sweep_dir / ROW, row)
    return {**row, "reused": False}


def replay(unpruned: optuna.Study, spec: str, args: argparse.Namespace) -> dict:
    """The unpruned study's trials, reported epoch by epoch to a new in-memory study with this
    pruner, in their order; a trial stops where the pruner says so."""
    name, arguments = pruner_arguments(spec, args.startup)
    node = OmegaConf.merge(OmegaConf.structured(PRUNERS[name]), OmegaConf.from_dotlist(
        [f"{k}={v}" for k, v in arguments.items()]))
    # the real search's study name: Hyperband assigns trials to brackets by hashing it
    study = optuna.create_study(study_name=unpruned.study_name, direction="maximize",
                                pruner=build_pruner(OmegaConf.to_container(node)))
    spent, best, pruned = 0, None, 0
    for t in sorted(unpruned.get_trials(states=(optuna.trial.TrialState.COMPLETE,)), key=lambda t: t.number):
        trial, steps = study.ask(), sorted(t.intermediate_values)
        per_seed = t.user_attrs.get(Attr.PER_SEED_BY_EPOCH, {})
        for step in steps:
            trial.set_user_attr(Attr.PER_SEED_BY_EPOCH, {k: v for k, v in per_seed.items() if int(k) <= step})
            trial.report(t.intermediate_values[step], step)
            if step < steps[-1] and trial.should_prune():  # the job never asks after its last epoch
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                spent, pruned = spent + step * len(t.user_attrs["seeds"]), pruned + 1
                break
        else:
            study.tell(trial, t.value)
            spent += steps[-1] * len(t.user_attrs["seeds"])
            best = t if best is None or t.value > best.value else best
    return {"pruner": spec, "member_epochs": spent, "best": best.value, "best_trial": best.number, "pruned": pruned}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", default="1,2,3", help="the choices of trainer.epochs searched")
    parser.add_argument("--startup", type=int, help="completed trials before median, percentile or seed_noise prunes "
                        "(default: each pruner's own)")
    parser.add_argument("--threads", type=int, default=hardware.available_cores())
    parser.add_argument("--pruners", default="none,seed_noise,median,hyperband",
                        help="the searches, `none` first; arguments after colons: "
                             "successive_halving:reduction_factor=3")
    parser.add_argument("--keep", type=Path, help="keep the searches here, and reuse those finished")
    parser.add_argument("--replay", nargs="?", const="", metavar="PRUNERS",
                        help="also replay the unpruned search through each pruner searched, or through these")
    parser.add_argument("extra", nargs="*", help="more overrides for every search")
    args = parser.parse_args()
    if not os.environ.get("NEURALFORGE_DATA"):
        raise SystemExit("set NEURALFORGE_DATA to the folder that holds MNIST/raw")
    specs = args.pruners.split(",")
    if specs[0] != "none":
        raise SystemExit("--pruners: give `none` first, the search the others are compared with")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"CPU: {hardware.device_name(torch.device('cpu'))}, {hardware.available_cores()} cores; "
          f"torch threads {args.threads}")
    waits = (f"; median, percentile and seed_noise wait for {args.startup} complete trials unless told"
             if args.startup is not None else "")
    print(f"hparams_search=mlp_recipe, {args.trials} trials of {args.seeds} seeds, "
          f"trainer.epochs=choice({args.epochs}), "
          f"sampler seed 0 (the preset's){waits}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = (args.keep or Path(tmp)).resolve()
        for spec in specs:
            rows.append(search(folder / spec.replace(":", "_").replace("=", "-"), spec, args))
            r = rows[-1]
            print(f"{r['pruner']:>11}: {r['member_epochs']:4d} member-epochs, best validation mean "
                  f"{100 * r['best']:.2f}% (trial {r['best_trial']}), {r['pruned']} pruned / {r['complete']} complete, "
                  f"{r['wall']:.0f} s{' (read back from an earlier run)' if r['reused'] else ''}", flush=True)
        base = rows[0]
        for r in rows[1:]:
            print(f"{r['pruner']:>11} vs none: member-epochs x{r['member_epochs'] / base['member_epochs']:.2f}, "
                  f"best validation mean {100 * (r['best'] - base['best']):+.2f} points, "
                  f"wall time x{r['wall'] / base['wall']:.2f}")
        if args.replay is not None:
            unpruned = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{folder / 'none'}/optuna.db")
            print(f"Replayed on the unpruned search's {len(unpruned.trials)} trials, in their order:")
            for spec in args.replay.split(",") if args.replay else specs[1:]:
                r = replay(unpruned, spec, args)
                print(f"{r['pruner']:>11}: member-epochs x{r['member_epochs'] / base['member_epochs']:.2f}, "
                      f"best validation mean {100 * r['best']:.2f}% (trial {r['best_trial']}, "
                      f"{100 * (r['best'] - base['best']):+.2f} points), {r['pruned']} pruned")


if __name__ == "__main__":
    main()
