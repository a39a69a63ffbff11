"""A run folder's life, apart from its training: the lock, the check that the folder holds no
other config's records, skip-if-complete, last.pt loaded and checked, the records written each
epoch and at the end, and the lines that say what was chosen.

A group of K members keeps its lock and last.pt in the run folder, and each member's records in
a folder of its own (`seed=5/`); a single run (K = 1) keeps everything in the run folder.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuralforge import checkpoint, data, hardware
from neuralforge.checkpoint import BestState, LastState
from neuralforge.config import VARY_ALL, differences, member_name, member_spec
from neuralforge.record import objective, provenance
from neuralforge.record.atomic import clear_leftovers
from neuralforge.record.errors import CheckpointError, ConfigError, DataError, DivergedError
from neuralforge.record.files import BEST, LAST, RESULTS
from neuralforge.record.lock import RunLock
from neuralforge.record.schema import (
    COMPLETE,
    FAILED,
    PRUNED,
    RUNNING,
    SCHEMA_VERSION,
    Group,
    Metrics,
    Record,
    Timing,
    read_results,
    write_history,
    write_predictions,
    write_results,
)
from neuralforge.training import Outcome, Training

log = logging.getLogger("neuralforge")


def member_folders(run_dir: Path, spec: dict[str, Any]) -> list[Path]:
    if spec["n_seeds"] == 1:
        return [run_dir]
    return [run_dir / member_name(member_spec(spec, k)) for k in range(spec["n_seeds"])]


class RunFolder:
    """The folder of one group of K members of one config (`spec`, hashed to `fp`)."""

    def __init__(self, run_dir: str | Path, spec: dict[str, Any], fp: str, device: torch.device,
                 overrides: Sequence[str] = (), objectives: Sequence[str] = ("val_acc",)) -> None:
        self.dir, self.spec, self.fp = Path(run_dir), spec, fp
        self.overrides, self.objectives = list(overrides), list(objectives)
        self.K = spec["n_seeds"]
        self.folders = member_folders(self.dir, spec)
        self.specs = [member_spec(spec, k) for k in range(self.K)]
        self.lock = RunLock(self.dir)
        self.written: set[int] = set()  # members whose final records are on disk
        # the dataset files' sha256 join it once they are read (Training.data.checksums)
        self.provenance = provenance.provenance(str(device), hardware.device_name(device), spec["threads"])

    # ----------------------------------------------------------------- before training
    def __enter__(self) -> RunFolder:
        self.lock.__enter__()
        for path in clear_leftovers([self.dir, *self.folders]):
            log.info("Removed %s, left by a process that stopped", path)
        return self

    def start(self, training: Training, existing: list[Record | None], resumed: bool) -> None:
        """Say what trains, and keep the diff of a modified tree beside the records. On a resume,
        the final records already on disk stay as written (by that process, with its
        provenance): only a record the checkpoint has overtaken is written again."""
        provenance.keep_source_diff(self.dir, self.provenance)
        if resumed:
            self.written = {k for k, (m, rec) in enumerate(zip(training.members, existing))
                            if m.status != RUNNING and rec is not None and rec.status == m.status}
            log.info("Resuming from epoch %d of %d: %s in %s", training.epoch + 1, self.spec["trainer"]["epochs"],
                     self.seeds_text(), self.dir)
        else:
            log.info("Training %s for %d epochs in %s", self.seeds_text(), self.spec["trainer"]["epochs"], self.dir)

    def __exit__(self, *exc: Any) -> None:
        self.lock.__exit__(*exc)

    def records(self) -> list[Record | None]:
        """Each member's record; a folder that holds a record of another config is refused."""
        # every record in the folder, also those this command would not write (a single run's,
        # where a group now starts; another group's members): last.pt may be gone (keep_last=false)
        found = {path.parent: read_results(path.parent)
                 for path in [self.dir / RESULTS, *sorted(self.dir.glob(f"*=*/{RESULTS}"))]}
        for folder, rec in found.items():
            if rec is not None and rec.fingerprint != self.fp:
                raise ConfigError(
                    f"{folder} holds a run of another config ({differences(rec.config, self.spec)}). "
                    f"Refusing to mix them: give this command the first one's settings, or choose another "
                    f"hydra.run.dir / hydra.sweep.dir.")
        return [found.get(f) for f in self.folders]  # each member's folder is among those read

    def skip(self, existing: list[Record]) -> float:
        """The objective of a group whose members are all complete, reported, not retrained."""
        # data.root and data.path are not fingerprinted (the same files may move): files there
        # must be the run's own. None there (deleted after training), nothing is compared or downloaded.
        d = self.spec["data"]
        try:
            checksums = data.check_files(d)
        except (DataError, OSError):  # missing or unreadable
            checksums = None
        for folder, rec in zip(self.folders, existing):
            if checksums and rec.provenance.get("dataset_sha256", checksums) != checksums:
                raise ConfigError(f"{folder} holds a complete run on other data files than {data.location(d)} "
                                  f"(their sha256 differ). Point it at that run's files, or choose "
                                  f"another hydra.run.dir / hydra.sweep.dir.")
        log.info("Skipped: run already complete in %s (%s)", self.dir, chosen(existing))
        return self.score(existing)

    def last(self) -> LastState | None:
        """last.pt, checked against this config before any data is read; None when there is none."""
        path = self.dir / LAST
        if not path.exists():
            return None
        saved = checkpoint.load(path)
        if saved.get("fingerprint") != self.fp:
            theirs = saved.get("config") or {}
            raise CheckpointError(f"{path} belongs to another config ({differences(theirs, self.spec)}). "
                                  f"Refusing to resume: give this command the first one's settings, or use "
                                  f"another output folder.")
        return LastState.from_dict(saved, path)

    # ----------------------------------------------------------------- while training
    def seeds_text(self) -> str:
        first = self.spec["seed"]
        if self.K == 1:
            return f"seed {first}"
        if self.spec["vary"] == VARY_ALL:
            return f"seeds {first}..{first + self.K - 1} together"
        # members that differ in one source only: named by it, as their folders are
        return f"{self.K} runs together, {member_name(self.specs[0])} to {member_name(self.specs[-1])}"

    def save(self, training: Training, outcome: Outcome | None = None) -> None:
        """After an epoch: best.pt of each member whose chosen epoch it is, last.pt, the records,
        the lock's heartbeat."""
        for k in outcome.new_best if outcome else ():
            m = training.members[k]
            assert m.best_epoch is not None  # a new best was just given its epoch
            BestState(model=training.model.member_state(k), config=self.specs[k], fingerprint=self.fp,
                      epoch=m.best_epoch, selection=training.selection, score=m.best_score).save(self.folders[k] / BEST)
        training.state(self.fp).save(self.dir / LAST)
        self.write_records(training)
        self.lock.beat()

    def write_records(self, training: Training, values: dict[str, float] | None = None) -> list[Record]:
        """Each member's record (and history, and predictions once complete) that is not final on
        disk yet; with `values`, the group's objective, in every member's record."""
        now = time.time()
        out = []
        for k, (m, folder) in enumerate(zip(training.members, self.folders)):
            if k in self.written and values is None:
                continue  # its records were written when it finished
            if k in self.written:  # final already: only the objective joins it
                rec = read_results(folder)
                if rec is not None:
                    rec = replace(rec, objective=values)
                    write_results(folder, rec)
                    out.append(rec)
                    continue
            if m.status != RUNNING:
                self.written.add(k)
            if m.status == COMPLETE:
                write_predictions(folder, training.best_predictions[k].numpy())
            write_history(folder, m.history)
            rec = Record(
                schema_version=SCHEMA_VERSION, status=str(m.status), error=m.error,
                metrics=Metrics.of(m.history, m.best_epoch, training.selection),
                seed=self.specs[k]["seed"], seeds=self.specs[k]["seeds"], config=self.specs[k], fingerprint=self.fp,
                overrides=self.overrides, group=Group(size=self.K, member=k, folder=str(self.dir.resolve())),
                n_params=training.n_params,
                timing=Timing(started=training.started, heartbeat=now, wall_seconds=training.wall(),
                              seconds_per_epoch=float(np.mean([r.seconds for r in m.history])) if m.history
                              else None),
                provenance={**self.provenance, "dataset_sha256": training.data.checksums},
                dropout_masks=training.model.dropout_masks, objective=values)
            write_results(folder, rec)
            out.append(rec)
        return out

    def record_failure(self, training: Training, error: str, unwritable: tuple[type[Exception], ...] = ()) -> None:
        """Every member still running failed with `error`; written where it can be."""
        training.fail(error)
        try:
            self.write_records(training)
        except unwritable:  # a full disk may refuse the records too: they stay as last written
            log.warning("the failure could not be recorded: %s", error)

    def report(self, training: Training, outcome: Outcome) -> None:
        """One line per epoch."""
        h = list(outcome.rows.values())
        if not h:
            return
        epochs = self.spec["trainer"]["epochs"]
        if self.K == 1:
            r = h[0]
            log.info("epoch %d/%d | train loss %.4f acc %.2f%% | val loss %.4f acc %.2f%% | test acc %.2f%% | "
                     "lr %.2e | %.1f s", r.epoch, epochs, r.train_loss, 100 * r.train_acc, r.val_loss,
                     100 * r.val_acc, 100 * r.test_acc, r.lr, outcome.seconds)
            return
        val = np.array([r.val_acc for r in h]) * 100
        test = np.array([r.test_acc for r in h]) * 100
        log.info("epoch %d/%d | %d members | val acc mean %.2f%% [%.2f, %.2f] | test acc mean %.2f%% | %.1f s",
                 outcome.epoch, epochs, len(h), val.mean(), val.min(), val.max(), test.mean(), outcome.seconds)

    # ----------------------------------------------------------------- at the end
    def finish(self, training: Training) -> tuple[float, list[Record]]:
        """The group's final records and its objective; raises when a member failed."""
        # write_records is a no-op after the loop's own last write; it completes the records of a
        # run killed between its final last.pt and them, whose relaunch has nothing left to train
        self.write_records(training)
        failed = [(f, m.error) for f, m in zip(self.folders, training.members) if m.status == FAILED]
        pruned = any(m.status == PRUNED for m in training.members)
        records = [r for r in (read_results(f) for f in self.folders) if r is not None]
        # an objective is a search's, and a search chooses on validation
        values = None if failed or pruned or training.selection != "val_acc" else objective.of(records, self.objectives)
        if values is not None:
            records = self.write_records(training, values)
        # a failed member keeps last.pt: started again, the run reports the failure instead of
        # training the whole group from scratch to diverge once more
        if not self.spec["trainer"]["keep_last"] and all(m.status == COMPLETE for m in training.members):
            (self.dir / LAST).unlink(missing_ok=True)
        self.announce(training, records)
        if failed and self.K == 1:
            raise DivergedError(failed[0][1])
        if failed:
            raise DivergedError(f"{len(failed)} of {self.K} failed: " + "; ".join(f"{f.name}: {e}" for f, e in failed))
        if pruned:
            log.info("Pruned after epoch %d: the search's pruner stopped this trial", training.epoch)
            return math.nan, records  # the sweeper reads the records' status, and tells the trial PRUNED
        return self.score(records), records

    def score(self, records: list[Record]) -> float:
        """What the job returns to Hydra: the first objective; without a validation set, the mean
        test accuracy at the epochs chosen on test."""
        if records[0].objective is not None:
            return records[0].objective[self.objectives[0]]
        if records[0].metrics.selection == "val_acc":  # a record older than the objective field
            return objective.of(records, self.objectives)[self.objectives[0]]
        return float(np.mean([r.metrics.test_acc for r in records]))

    def announce(self, training: Training, records: list[Record]) -> None:
        """One line: what was chosen, at what accuracy, how long it took and where it is."""
        done = [r for r in records if r.status == COMPLETE]
        if not done:
            return
        on = "validation" if training.selection == "val_acc" else "test (data.val_size=0)"
        if self.K == 1:
            m = done[0].metrics
            log.info("Done: epoch %d of %d chosen on %s: %s | %.1f s | results in %s", m.best_epoch, m.epochs_run, on,
                     chosen(done), training.wall(), self.dir)
            return
        log.info("Done: %d of %d seeds complete, epochs chosen on %s: %s | %.1f s | results in %s", len(done), self.K,
                 on, chosen(done), training.wall(), self.dir / f"{self.folders[0].name.split('=')[0]}=*")


def chosen(records: list[Record]) -> str:
    """The chosen epochs' accuracies, as the Done and Skipped lines show them: validation (the
    objective a search reads, for a group the members' mean) and test, in percent."""
    val = [r.metrics.val_acc for r in records if r.metrics.val_acc is not None]
    test = 100 * np.array([r.metrics.test_acc for r in records])
    if len(records) == 1:
        return (f"val acc {100 * val[0]:.2f}%, " if val else "") + f"test acc {test[0]:.2f}%"
    return ((f"val acc mean {100 * np.mean(val):.2f}%, " if val else "") +
            f"test acc mean {test.mean():.2f}% [min {test.min():.2f}, max {test.max():.2f}]")
