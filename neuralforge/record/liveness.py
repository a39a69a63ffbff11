"""Whether the process behind a lock, a run record or a trial still lives.

It imports nothing of the trainer, so that analysis can share the rule without torch.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from neuralforge.record import slurm
from neuralforge.record.files import LOCK, REFUSED
from neuralforge.record.schema import State

STALE_AFTER_S = 1800  # a heartbeat this old from another host means its process is gone


def process_alive(pid: Any) -> bool:
    """Whether process `pid` runs on this host; True whenever that cannot be told."""
    if not isinstance(pid, int) or pid <= 0 or os.name == "nt":  # os.kill(pid, 0) terminates on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, owned by someone else
        return True
    return True


def gone(host: Any, pid: Any, silent_for: float | None, stale_after: float = STALE_AFTER_S,
         here: str | None = None) -> bool:
    """Whether the process `pid` on `host` is gone: on this host its pid tells; from another
    host only how long it has given no sign of life (None: never) can."""
    if host == (here or socket.gethostname()):
        return not process_alive(pid)
    return silent_for is None or silent_for > stale_after


def run_state(rec: dict[str, Any], now: float | None = None, host: str | None = None) -> str:
    """A results record's status, with "running" split: "stale" when its process is gone."""
    status: str = rec.get("status", "")
    if status != State.RUNNING:
        return status
    prov = rec.get("provenance") or {}
    heartbeat = (rec.get("timing") or {}).get("heartbeat")
    silent_for = None if heartbeat is None else (now or time.time()) - heartbeat
    if prov.get("slurm") and prov.get("host") != (host or socket.gethostname()) and slurm.job_gone(prov["slurm"]):
        return State.STALE
    return State.STALE if gone(prov.get("host"), prov.get("pid"), silent_for, here=host) else State.RUNNING


EMPTY_AFTER_S = 60  # a lock is empty for an instant while written: one this old was never finished


def lock_holder(path: Path) -> tuple[dict[str, Any], float | None]:
    """A lock's content ({} when empty or unreadable) and seconds since it was refreshed
    (None when there is no lock)."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return {}, None
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}, age
    return (holder if isinstance(holder, dict) else {}), age


def lock_gone(holder: dict[str, Any], age: float) -> str | None:
    """Why a lock's holder is gone, or None while it may live. A holder SLURM can vouch for is
    judged by SLURM's facts (slurm.job_gone) before any clock."""
    if not holder:
        return f"an empty lock {age:.0f} s old" if age > EMPTY_AFTER_S else None
    host, pid = holder.get("host"), holder.get("pid")
    here = host == socket.gethostname()
    if here and pid == os.getpid():
        return f"it names this process's pid {pid}, which a gone process had before"
    if holder.get("slurm") and not here:
        why = slurm.job_gone(holder["slurm"])
        if why is not None:
            return why
    if not gone(host, pid, age):
        return None
    return f"pid {pid} is dead" if here else f"pid {pid} on {host} has not refreshed it for {age:.0f} s"


def without_record(folder: Path) -> str:
    """What became of a sweep's job folder that holds no results.json.

    Hydra writes .hydra/ as a job starts, and the trainer holds the lock while it trains. A job
    refused before training (a bad value) says why in its .refused file: failed. One that holds
    no lock was stopped before it took it (killed, or Ctrl-C), and one whose lock's holder is
    gone was killed in its first epoch: stale, and either resumes when launched again.
    """
    if not (folder / ".hydra").is_dir():
        return State.MISSING
    if (folder / REFUSED).exists():
        return State.FAILED
    holder, age = lock_holder(folder / LOCK)
    if age is None or lock_gone(holder, age):
        return State.STALE
    return State.RUNNING
