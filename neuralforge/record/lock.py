"""The lock that keeps two processes out of one run folder. Torch-free, like the liveness rule
it applies."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from neuralforge.record import slurm
from neuralforge.record.errors import LockedError
from neuralforge.record.files import LOCK
from neuralforge.record.liveness import lock_gone, lock_holder

log = logging.getLogger("neuralforge")


class RunLock:
    """An exclusively created lock file holding pid and host (and, in a SLURM job, the job and
    its restart count), refreshed by its run every epoch.

    A lock is taken over when its holder is gone: on this host, when its pid is dead (or is
    this process's own, left by a process that had the pid before); from another host, when
    SLURM says its job ended or was requeued (a requeued job takes its own lock over at once);
    otherwise, where nobody can be asked, when it has not been refreshed for
    `liveness.STALE_AFTER_S`, the rule analysis applies to run records; an empty lock (killed
    while writing it) after a minute.
    """

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK
        self.held = False

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive(self.path.parent):  # two processes taking over one stale lock: one wins
            for _ in range(3):
                if self._claim():
                    break
                holder, age = lock_holder(self.path)
                if age is None:
                    continue  # released this instant
                why = lock_gone(holder, age)
                if why is None:
                    where = f"pid {holder.get('pid')} on {holder.get('host')}"
                    raise LockedError(f"{self.path.parent} is in use by {where} (its lock was refreshed "
                                      f"{age:.0f} s ago). Wait for it, or, if that process is gone, "
                                      f"delete {self.path}.")
                log.warning("Taking over %s: %s", self.path, why)
                self.path.unlink(missing_ok=True)
            else:
                raise LockedError(f"could not take {self.path}: other processes keep taking it")
        self.held = True
        return self

    def _claim(self) -> bool:
        """Create the lock naming this process; False when a lock is already there."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(_owner(), f)
        return True

    def beat(self) -> None:
        """Refresh the lock's time: another host then knows its holder still runs."""
        if not self.held:
            return
        holder, age = lock_holder(self.path)
        if age is None:  # deleted by hand while the run trains: take it again
            if self._claim():
                log.warning("%s was deleted while this run trained: taken again", self.path)
                return
            holder = lock_holder(self.path)[0]
        if not _mine(holder):
            self.held = False
            raise LockedError(f"{self.path} was taken by pid {holder.get('pid')} on {holder.get('host')} while "
                              f"this run trained (deleted by hand?): stopping this run")
        os.utime(self.path)

    def __exit__(self, *exc: Any) -> None:
        if self.held:
            if _mine(lock_holder(self.path)[0]):
                self.path.unlink(missing_ok=True)  # only its own: never another process's
            self.held = False


def _owner() -> dict[str, Any]:
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    job = slurm.this_job()
    if job is not None:  # what SLURM can vouch for: whether this job still runs, from another host
        owner["slurm"] = job
    return owner


def _mine(holder: dict[str, Any]) -> bool:
    return holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Serialise lock takeovers in `folder` between processes (flock on the folder itself).

    Best effort: where the file system refuses flock on a folder (NFS), takeovers go
    unserialised, as they would without it.
    """
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # releases the flock
