"""The files a run leaves for analysis: results.json, history.csv and predictions.npy.

This schema is the contract between the trainer and `analysis`, which reads it through this
module's names; like `liveness` (the rule that tells a stale run from a live one), the module
is torch-free, so analysis imports it without loading torch. Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


SCHEMA_VERSION = 1
RESULTS, HISTORY, PREDICTIONS = "results.json", "history.csv", "predictions.npy"
HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc",
                   "test_loss", "test_acc", "lr", "seconds")
RUNNING, COMPLETE, FAILED = "running", "complete", "failed"
PRUNED = "pruned"  # stopped early by a search's pruner: final, never resumed, in no statistic


def atomic_write(path: Path, write, durable: bool = False) -> None:
    """Write through `write(file)` into a temporary file beside `path`, then rename over it.

    The rename alone makes the write atomic against a killed process; `durable` also syncs
    the data to disk first, against a crash of the machine (worth it for checkpoints).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
        raise


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


def read_results(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / RESULTS
    if not path.exists():
        return None
    return json.loads(path.read_text())


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


def _git(*args: str) -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


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
