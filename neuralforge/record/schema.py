"""The run record, the contract between the trainer and `analysis`: results.json, history.csv and
predictions.npy, their types and their IO.

Each field says what it holds (`help`), which the record's section of docs/runs.md is generated
from, and the engine builds the record from these classes, so that the schema is written once.
Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import MISSING as NO_DEFAULT
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from neuralforge.record.atomic import atomic_write, write_json
from neuralforge.record.errors import RecordError
from neuralforge.record.files import HISTORY, PREDICTIONS, RESULTS

SCHEMA_VERSION = 1


def is_accuracy(metric: str) -> bool:
    """Whether a metric is an accuracy: a fraction in [0, 1], shown in percent."""
    return metric.endswith("_acc")


def higher_is_better(metric: str) -> bool:
    """A loss and a time are better low; everything else here is better high."""
    return not (metric.endswith("_loss") or metric in ("wall_seconds", "seconds_per_epoch"))


class State(StrEnum):
    """A run's state. A record stores running, complete, failed or pruned; the others are judged
    from outside: stale (recorded as running by a process that is gone), missing (a sweep's job
    that never started). The order is the order in which summaries count them."""
    COMPLETE = "complete"
    FAILED = "failed"
    PRUNED = "pruned"  # stopped early by a search's pruner: final, never resumed, in no statistic
    STALE = "stale"
    RUNNING = "running"
    MISSING = "missing"


RUNNING, COMPLETE, FAILED, PRUNED = State.RUNNING, State.COMPLETE, State.FAILED, State.PRUNED
STALE, MISSING = State.STALE, State.MISSING
STORED = (RUNNING, COMPLETE, FAILED, PRUNED)  # the states a record holds; the others are judged


def key(help: str, default: Any = NO_DEFAULT, *, column: bool = False) -> Any:
    """A record field with its meaning; `column`: analysis's tables show it for each run."""
    return field(default=default, metadata={"help": help, "column": column})


@dataclass(frozen=True)
class Epoch:
    """One row of history.csv: a member's epoch."""
    epoch: int = key("the epoch, from 1")
    train_loss: float = key("mean training loss over the epoch's steps")
    train_acc: float = key("training accuracy over the epoch's steps, as the model was while it trained")
    val_loss: float = key("validation loss after the epoch (NaN with data.val_size=0)")
    val_acc: float = key("validation accuracy after the epoch (NaN with data.val_size=0)")
    test_loss: float = key("test loss after the epoch")
    test_acc: float = key("test accuracy after the epoch")
    lr: float = key("the learning rate at the epoch's end")
    seconds: float = key("the epoch's wall time, for the whole group")


HISTORY_COLUMNS = tuple(f.name for f in fields(Epoch))


@dataclass(frozen=True)
class Metrics:
    """The chosen epoch's row, and what the choice hides."""
    best_epoch: int | None = key("the epoch chosen on `selection`")
    epochs_run: int = key("epochs trained")
    selection: str = key("what chose the epoch: val_acc, or test_acc with data.val_size=0")
    val_acc: float | None = key("validation accuracy at the chosen epoch")
    val_loss: float | None = key("validation loss at the chosen epoch")
    test_acc: float | None = key("test accuracy at the chosen epoch: the number analysis compares by default")
    test_loss: float | None = key("test loss at the chosen epoch")
    train_acc: float | None = key("training accuracy at the chosen epoch")
    train_loss: float | None = key("training loss at the chosen epoch")
    last_test_acc: float | None = key("test accuracy at the last epoch")
    max_test_acc: float | None = key("the best test accuracy of any epoch: what choosing on test would report")

    @classmethod
    def of(cls, history: list[Epoch], best_epoch: int | None, selection: str) -> Metrics:
        best = next((r for r in history if r.epoch == best_epoch), None)
        chosen = {k: getattr(best, k) if best else None
                  for k in ("val_acc", "val_loss", "test_acc", "test_loss", "train_acc", "train_loss")}
        return cls(best_epoch=best_epoch, epochs_run=len(history), selection=selection, **chosen,
                   last_test_acc=history[-1].test_acc if history else None,
                   max_test_acc=max(r.test_acc for r in history) if history else None)


@dataclass(frozen=True)
class Timing:
    started: float = key("when the run first started (Unix time)")
    heartbeat: float = key("when the record was last written: each epoch while the run trains")
    wall_seconds: float = key("time spent training, over every launch that resumed it", column=True)
    seconds_per_epoch: float | None = key("mean wall time of its epochs", column=True)


@dataclass(frozen=True)
class Group:
    size: int = key("members trained together in one process (n_seeds)")
    member: int = key("this run's place in the group, from 0")
    folder: str = key("the group's folder, which holds the shared last.pt")


@dataclass(frozen=True)
class Record:
    """results.json."""
    schema_version: int = key("the record's version")
    status: str = key("running, complete, failed or pruned (stopped by a search's pruner)")
    error: str | None = key("why it failed")
    metrics: Metrics = key("the chosen epoch's figures (below)")
    seed: int = key("the master seed")
    seeds: dict[str, int] = key("each seed source's seed: init, order, split, augment, dropout")
    config: dict[str, Any] = key("the fully resolved config, threads and device included")
    fingerprint: str = key("hash of everything that decides the run's numbers; a resume checks it first")
    overrides: list[str] = key("the command line's overrides")
    group: Group = key("the group it trained in (below)")
    n_params: int = key("the model's parameters, one member's")
    timing: Timing = key("below")
    provenance: dict[str, Any] = key("python, torch, torchvision, hydra and numpy versions; git_commit and "
                                     "git_dirty (with source_diff, the path of the diff that rebuilds a modified "
                                     "tree); device and device_name; threads; cudnn_deterministic (on CUDA); host, "
                                     "pid and argv; the dataset files' sha256; under SLURM, `slurm`: the cluster, "
                                     "job id, restart count and array task")
    dropout_masks: str | None = key("whose generator drew the member's dropout masks", None)
    objective: dict[str, float] | None = key("in a search, the trial's objective values, computed by its job once "
                                             "the group is finished (the same in every member's record)", None)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = str(self.status)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any], path: Path) -> Record:
        """A record as read; fields added after it was written take their defaults."""
        try:
            parts = {"metrics": Metrics, "timing": Timing, "group": Group}
            values = {f.name: obj[f.name] for f in fields(cls) if f.name in obj}
            for name, part in parts.items():
                values[name] = part(**{f.name: values[name].get(f.name) for f in fields(part)})
            return cls(**values)
        except (KeyError, TypeError, AttributeError) as err:
            raise RecordError(f"{path} is not a NeuralForge record ({type(err).__name__}: {err}). Delete it or move "
                              f"the folder away.") from None

    @property
    def state(self) -> State:
        return State(self.status)


def parse(blob: bytes, path: Path) -> dict[str, Any]:
    """results.json's content as plain data (what collect reads, fast); one that cannot be read is a
    one-line error that names the file."""
    try:
        rec = json.loads(blob)
    except ValueError as err:
        raise RecordError(f"{path} is not valid JSON ({err}): it was cut short or edited. Delete it (the run's "
                          f"last.pt, if any, rebuilds it) or move the folder away.") from None
    if not isinstance(rec, dict) or rec.get("status") not in STORED:
        raise RecordError(f"{path} is not a NeuralForge record (no status). Delete it or move the folder away.")
    return rec


def read_results(folder: Path) -> Record | None:
    """The run's record, None where there is none."""
    path = Path(folder) / RESULTS
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    return Record.from_json(parse(blob, path), path)


def write_results(folder: Path, record: Record) -> None:
    write_json(Path(folder) / RESULTS, record.to_json())


def write_history(folder: Path, rows: Iterable[Epoch]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HISTORY_COLUMNS)
    # repr: the float's shortest exact spelling, which reads back to the same bits
    writer.writerows([repr(v) if isinstance(v, float) else v for v in astuple(r)] for r in rows)
    atomic_write(Path(folder) / HISTORY, lambda f: f.write(buf.getvalue().encode()))


def astuple(row: Epoch) -> tuple[Any, ...]:
    return tuple(getattr(row, c) for c in HISTORY_COLUMNS)


def write_predictions(folder: Path, labels: np.ndarray) -> None:
    atomic_write(Path(folder) / PREDICTIONS, lambda f: np.save(f, labels.astype(np.uint8)))


def fields_help(cls: type, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted field, meaning) of a record class, its nested parts after it."""
    out, nested = [], []
    for f in fields(cls):
        out.append((f"{prefix}{f.name}", f.metadata["help"]))
        part = {"metrics": Metrics, "timing": Timing, "group": Group}.get(f.name) if cls is Record else None
        if part is not None:
            nested += fields_help(part, f"{f.name}.")
    return out + nested


def markdown() -> str:
    """The record's section of docs/runs.md."""
    lines = ["`results.json` (`neuralforge.record.schema.Record`):", "", "| field | holds |", "| --- | --- |"]
    lines += [f"| `{name}` | {text} |" for name, text in fields_help(Record)]
    lines += ["", "`history.csv`, one row per epoch (`Epoch`):", "", "| column | holds |", "| --- | --- |"]
    lines += [f"| `{name}` | {text} |" for name, text in fields_help(Epoch)]
    return "\n".join(lines)

