"""Writes that a kill cannot tear: into a temporary file beside the target, then renamed over it."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from neuralforge.record.errors import DiskFullError
from neuralforge.record.files import REFUSED, TEMP_SUFFIX


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any], durable: bool = False) -> None:
    """Write through `write(file)` into a temporary file beside `path`, then rename over it.

    The rename alone makes the write atomic against a killed process; `durable` also syncs
    the data to disk first, against a crash of the machine (worth it for checkpoints).
    """
    path = Path(path)
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
        if isinstance(err.__context__, (KeyboardInterrupt, SystemExit)):
            # torch.save's zip writer, interrupted (Ctrl-C, or submitit's exit after it requeued
            # a job on SLURM's signal), raises a RuntimeError on its way out: the run was
            # stopped, not broken (it stays resumable instead of recorded as failed)
            raise err.__context__ from None
        if disk_full(err) and not isinstance(err, DiskFullError):
            # torch's zip writer reports a full disk as "unexpected pos ...": say what happened
            raise DiskFullError(f"no space left on the device while writing {path} (ENOSPC): free some and launch "
                                f"the same command again (it resumes from the last finished epoch)") from None
        raise


def disk_full(err: BaseException | None) -> bool:
    """Whether ENOSPC is anywhere in the chain of exceptions that `err` ends."""
    while err is not None:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        err = err.__cause__ or err.__context__
    return False


def write_json(path: Path, obj: dict[str, Any]) -> None:
    """Strict JSON, which every parser reads: NaN and infinities (no validation set, a diverged
    loss) are written as null."""
    atomic_write(path, lambda f: f.write(json.dumps(_finite(obj), indent=2, allow_nan=False).encode()))


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_bytes(path: Path, blob: bytes) -> None:
    atomic_write(path, lambda f: f.write(blob))


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


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
