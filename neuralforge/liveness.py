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

LOCK = ".lock"  # in a run folder while a process trains in it
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


def run_state(rec: dict[str, Any], now: float | None = None, host: str | None = None) -> str:
    """A results record's status, with "running" split: "stale" when its process is gone.

    On this host the pid tells; from another host only the heartbeat can.
    """
    status = rec.get("status")
    if status != "running":
        return status
    prov = rec.get("provenance") or {}
    if prov.get("host") == (host or socket.gethostname()):
        return "running" if process_alive(prov.get("pid")) else "stale"
    heartbeat = (rec.get("timing") or {}).get("heartbeat")
    return "stale" if heartbeat is None or (now or time.time()) - heartbeat > STALE_AFTER_S else "running"


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
    """Why a lock's holder is gone, or None while it may live."""
    if not holder:
        return f"an empty lock {age:.0f} s old" if age > EMPTY_AFTER_S else None
    if holder.get("host") == socket.gethostname():
        if holder.get("pid") == os.getpid():
            return f"it names this process's pid {os.getpid()}, which a gone process had before"
        return None if process_alive(holder.get("pid")) else f"pid {holder.get('pid')} is dead"
    if age > STALE_AFTER_S:
        return f"pid {holder.get('pid')} on {holder.get('host')} has not refreshed it for {age:.0f} s"
    return None


def without_record(folder: Path) -> str:
    """What became of a sweep's job folder that holds no results.json.

    Hydra writes .hydra/ as a job starts, and the trainer holds the lock while it trains: a job
    that started, holds no lock and wrote no record was refused before training (a bad value;
    its log says why); one whose lock's holder is gone was killed in its first epoch.
    """
    if not (folder / ".hydra").is_dir():
        return "missing"
    holder, age = lock_holder(folder / LOCK)
    if age is None:
        return "failed"
    return "stale" if lock_gone(holder, age) else "running"
