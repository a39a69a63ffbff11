"""The files a run leaves for analysis: results.json, history.csv and predictions.npy.

This schema is the contract between the trainer and `analysis`, which reads it through this
module's names; like `liveness` (the rule that tells a stale run from a live one), the module
is torch-free, so analysis imports it without loading torch. Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from neuralforge.errors import DiskFullError, RecordError


SCHEMA_VERSION = 1
# the files of a run folder and of a sweep folder
RESULTS, HISTORY, PREDICTIONS = "results.json", "history.csv", "predictions.npy"
LAST, BEST = "last.pt", "best.pt"
LOCK = ".lock"  # in a run folder while a process trains in it
REFUSED = ".refused"  # in a sweep job's folder whose command was refused before training: why
MANIFEST = "manifest.json"  # in a sweep folder: the jobs it expects
SOURCE_DIFF = "source.diff"  # beside a record from a modified tree: the diff against its commit
TEMP_SUFFIX = ".tmp"  # atomic_write's temporary files: .<name>.<random>.tmp
HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc",
                   "test_loss", "test_acc", "lr", "seconds")


class State(StrEnum):
    """A run's state. A record stores running, complete, failed or pruned; the others are judged from
    outside: stale (recorded as running by a process that is gone), missing (a sweep's job that
    never started). The order is the order in which summaries count them."""
    COMPLETE = "complete"
    FAILED = "failed"
    PRUNED = "pruned"  # stopped early by a search's pruner: final, never resumed, in no statistic
    STALE = "stale"
    RUNNING = "running"
    MISSING = "missing"


RUNNING, COMPLETE, FAILED, PRUNED = State.RUNNING, State.COMPLETE, State.FAILED, State.PRUNED
STALE, MISSING = State.STALE, State.MISSING


class Metrics(TypedDict):
    best_epoch: int | None
    epochs_run: int
    selection: str  # what chose the epoch: val_acc, or test_acc with data.val_size=0
    val_acc: float | None
    val_loss: float | None
    test_acc: float | None
    test_loss: float | None
    train_acc: float | None
    train_loss: float | None
    last_test_acc: float | None
    max_test_acc: float | None


class Timing(TypedDict):
    started: float
    heartbeat: float
    wall_seconds: float
    seconds_per_epoch: float | None


class Group(TypedDict):
    size: int
    member: int
    folder: str


class Record(TypedDict):
    """results.json: the contract between the trainer and analysis."""
    schema_version: int
    status: str  # a stored State
    error: str | None
    metrics: Metrics
    seed: int
    seeds: dict[str, int]
    config: dict[str, Any]
    fingerprint: str
    overrides: list[str]
    group: Group
    n_params: int
    dropout_masks: str  # whose generator drew each member's dropout masks
    timing: Timing
    provenance: dict[str, Any]


def atomic_write(path: Path, write, durable: bool = False) -> None:
    """Write through `write(file)` into a temporary file beside `path`, then rename over it.

    The rename alone makes the write atomic against a killed process; `durable` also syncs
    the data to disk first, against a crash of the machine (worth it for checkpoints).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide results from the rest of a team
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):  # an interrupt right after the rename
            os.unlink(tmp)
        if isinstance(err.__context__, KeyboardInterrupt):
            # torch.save's zip writer, interrupted, raises a RuntimeError on its way out: the
            # run was stopped, not broken (it stays resumable instead of recorded as failed)
            raise err.__context__ from None
        if _disk_full(err) and not isinstance(err, DiskFullError):
            # torch's zip writer reports a full disk as "unexpected pos ...": say what happened
            raise DiskFullError(f"no space left on the device while writing {path}: free some and launch the same "
                                f"command again (it resumes from the last finished epoch)") from None
        raise


def _disk_full(err: BaseException | None) -> bool:
    """Whether ENOSPC is anywhere in the chain of exceptions that `err` ends."""
    while err is not None:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        err = err.__cause__ or err.__context__
    return False



def clear_leftovers(folders: list[Path]) -> list[Path]:
    """Remove what a stopped process left in its run folders: temporaries a kill landed on,
    and a refusal that this launch no longer makes. Called with the folder's lock held, so
    that no live process's file is touched. Returns what was removed."""
    removed = []
    for folder in folders:
        for path in [*Path(folder).glob(f".*{TEMP_SUFFIX}"), Path(folder) / REFUSED]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def write_json(path: Path, obj: dict[str, Any]) -> None:
    """Strict JSON, which every parser reads: NaN and infinities (no validation set, a diverged
    loss) are written as null."""
    atomic_write(path, lambda f: f.write(json.dumps(_finite(obj), indent=2, allow_nan=False).encode()))


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def read_results(folder: Path) -> Record | None:
    """The run's record, None where there is none; one that cannot be read is a one-line error
    that names the file."""
    path = Path(folder) / RESULTS
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    return parse(blob, path)


def parse(blob: bytes, path: Path) -> Record:
    try:
        rec = json.loads(blob)
    except ValueError as err:
        raise RecordError(f"{path} is not valid JSON ({err}): it was cut short or edited. Delete it (the run's "
                          f"last.pt, if any, rebuilds it) or move the folder away.") from None
    if not isinstance(rec, dict) or "status" not in rec:
        raise RecordError(f"{path} is not a NeuralForge record (no status). Delete it or move the folder away.")
    return rec  # type: ignore[return-value]


def write_history(folder: Path, rows: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: repr(row[c]) if isinstance(row[c], float) else row[c] for c in HISTORY_COLUMNS}
                     for row in rows)
    atomic_write(Path(folder) / HISTORY, lambda f: f.write(buf.getvalue().encode()))


def write_predictions(folder: Path, labels: np.ndarray) -> None:
    atomic_write(Path(folder) / PREDICTIONS, lambda f: np.save(f, labels.astype(np.uint8)))


def metrics(history: list[dict[str, float]], best_epoch: int | None, selection: str) -> dict[str, Any]:
    """The selected epoch's row (chosen on `selection`), plus what selection hides."""
    out: dict[str, Any] = {"best_epoch": best_epoch, "epochs_run": len(history), "selection": selection}
    best = next((r for r in history if r["epoch"] == best_epoch), None)
    for key in ("val_acc", "val_loss", "test_acc", "test_loss", "train_acc", "train_loss"):
        out[key] = best[key] if best else None
    out["last_test_acc"] = history[-1]["test_acc"] if history else None
    out["max_test_acc"] = max(r["test_acc"] for r in history) if history else None
    return out


SOURCE = Path(__file__).resolve().parent  # the code a run records: the harness's own tree


def _git(*args: str, strip: bool = True, repo: Path = SOURCE) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() if strip else out.stdout


def keep_source_diff(folder: Path, prov: dict[str, Any], repo: Path = SOURCE) -> None:
    """On a modified tree, write the diff of the tracked files against the recorded commit
    beside the run's records, and name it in `prov`: with the commit, it rebuilds the code that
    ran (`git checkout <commit> && git apply source.diff`)."""
    if not prov.get("git_dirty"):
        return
    diff = _git("diff", "HEAD", "--binary", strip=False, repo=repo)
    if diff is None:
        return
    path = Path(folder) / SOURCE_DIFF
    atomic_write(path, lambda f: f.write(diff.encode()))
    prov["source_diff"] = str(path.resolve())


def provenance(device: str, device_name: str, threads: int, checksums: dict[str, str]) -> dict[str, Any]:
    import hydra
    import torch
    import torchvision

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "hydra": hydra.__version__, "numpy": np.__version__,
        "git_commit": commit, "git_dirty": None if status is None else bool(status),
        "device": device, "device_name": device_name, "threads": threads,
        "host": socket.gethostname(), "pid": os.getpid(), "argv": sys.argv,
        "dataset_sha256": checksums,
    }
