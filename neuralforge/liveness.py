"""Whether the process behind a lock, a run record or a trial still lives.

It imports nothing of the trainer, so that analysis can share the rule without torch.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

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
