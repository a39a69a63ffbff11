"""What live logging costs a group of K = 32 seeds of the default MLP on real MNIST: the seconds
spent in the tracker's calls per epoch, against the epoch's own seconds, for MLflow (a SQLite
store) and TensorBoard; and each whole run beside logger=none, all in one process.

    NEURALFORGE_DATA=$PWD/../shared/data python benchmarks/logging_cost.py [--k 32] [--epochs 2]

The budget is 2% of an epoch. A tracker writes from a thread of its own, so three figures tell
its cost: the time the training thread spends in the live logger's calls (queueing the
calls); the CPU time the logger's thread spends writing an epoch (time.thread_time), which at
most takes that much from training, against the epoch's seconds; and the epoch's seconds beside
logger=none's (on 2 shared cores these drift by a few percent from run to run, more than the
logger costs: --repeat alternates the loggers that many times). Opening (importing the client,
creating the runs) and closing (waiting for the queue to drain) are one-off costs, shown apart.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

from notebook import data_root, harness_config, machine

from neuralforge import engine
from neuralforge.record.schema import COMPLETE, read_results
from neuralforge.trackers import base, live


class Working:
    """The real writer, with the CPU and wall time its thread spends in each epoch's calls added up."""

    def __init__(self, inner: base.Writer, spent: dict[str, float]) -> None:
        self.inner, self.spent, self.name = inner, spent, inner.name

    def _time(self, call, *args):
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            return call(*args)
        finally:
            self.spent["cpu"] = self.spent.get("cpu", 0.0) + time.thread_time() - cpu
            self.spent["busy"] = self.spent.get("busy", 0.0) + time.perf_counter() - wall

    def begin(self, seeds):
        self.inner.begin(seeds)  # once, in the first epoch: not an epoch's cost

    def rows(self, seed, rows):
        self._time(self.inner.rows, seed, rows)

    def final(self, seed, rec, state):
        self._time(self.inner.final, seed, rec, state)

    def close(self):
        self.inner.close()


class Timed(live.Live):
    """The real live logger, with the time the training thread spends in each of its calls added up:
    the first epoch's call opens the trackers (timed as open), the others queue rows."""

    def __init__(self, spent: dict[str, float], *args) -> None:
        super().__init__(*args)
        self.spent = spent

    def _time(self, what: str, call, *args):
        tick = time.perf_counter()
        try:
            return call(*args)
        finally:
            self.spent[what] = self.spent.get(what, 0.0) + time.perf_counter() - tick

    def epoch_done(self, training, outcome) -> bool:
        return self._time("epochs" if self.seeds else "open", super().epoch_done, training, outcome)

    def finished(self, records) -> None:
        self._time("epochs", super().finished, records)

    def close(self) -> None:
        self._time("close", super().close)


def run(root: str, k: int, epochs: int, logger: list[str], folder: Path) -> dict[str, float]:
    spent: dict[str, float] = {}
    made = live.open_writer
    live.open_writer = lambda *a: Working(made(*a), spent)
    try:
        cfg = harness_config(root, f"n_seeds={k}", f"trainer.epochs={epochs}", *logger)
        tick = time.perf_counter()
        with Timed(spent, cfg.logger, folder / "run") as timed:
            engine.train(cfg, folder / "run", listeners=[timed])
        spent["wall"] = time.perf_counter() - tick
    finally:
        live.open_writer = made
    history = base.read_history(folder / "run" / "seed=0")[1:]  # the first also pays for opening, in the background
    spent["epoch_seconds"] = sum(r["seconds"] for r in history) / len(history)
    assert read_results(folder / "run" / "seed=0").status == COMPLETE
    return spent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    warnings.simplefilter("ignore")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    root = data_root()
    print(f"CPU: {machine()}; K = {args.k} seeds of the default MLP, {args.epochs} epochs on MNIST, one process")
    print("| logger | epochs 2+ (s) | vs none | training thread's wait per epoch (s) | logger thread's CPU per "
          "epoch (s) | its share of an epoch | open (s) | close (s) | run (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    base_epoch: list[float] = []
    for _ in range(args.repeat):
        for name, logger in [("none", []), ("mlflow", ["logger=mlflow"]), ("tensorboard", ["logger=tensorboard"])]:
            with tempfile.TemporaryDirectory() as tmp:
                extra = {"mlflow": [f"logger.mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db"],
                         "tensorboard": [f"logger.tensorboard.dir={tmp}/tb"]}.get(name, [])
                s = run(root, args.k, args.epochs, logger + extra, Path(tmp))
            if name == "none":
                base_epoch = [s["epoch_seconds"]]
            wait, cpu = s.get("epochs", 0.0) / args.epochs, s.get("cpu", 0.0) / args.epochs
            print(f"| {name} | {s['epoch_seconds']:.2f} | {s['epoch_seconds'] / base_epoch[0]:.3f}x | {wait:.4f} | "
                  f"{cpu:.4f} | {100 * cpu / s['epoch_seconds']:.2f}% | {s.get('open', 0):.2f} | "
                  f"{s.get('close', 0):.3f} | {s['wall']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
