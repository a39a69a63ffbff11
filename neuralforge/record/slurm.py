"""What SLURM says of a job: the job this process runs in, and whether a job recorded in a lock
or a record still runs, from SLURM's own facts instead of a clock.

A job requeued (preempted, or by `scontrol requeue`, or by submitit at its time limit) keeps its
job id and counts its restarts; the process of an earlier restart is gone by the time the new
one starts (SLURM holds a requeued job until its processes have ended). So a holder recorded as
job J restart r is gone when this process is job J with a higher restart count, or when SLURM
says job J is no longer running restart r. Where SLURM cannot be asked, nothing is known, and
the caller keeps its clock.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

LIVE = ("RUNNING", "COMPLETING", "SUSPENDED", "CONFIGURING", "STAGE_OUT", "RESIZING", "SIGNALING")
ASK_TIMEOUT_S = 10


def this_job() -> dict[str, Any] | None:
    """The SLURM job this process runs in, as a lock or a record keeps it; None outside SLURM."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    out: dict[str, Any] = {"cluster": os.environ.get("SLURM_CLUSTER_NAME"), "job_id": job,
                           "restart": int(os.environ.get("SLURM_RESTART_COUNT") or 0)}
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        out["array"] = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return out


def job_gone(recorded: dict[str, Any]) -> str | None:
    """Why the SLURM job `recorded` (this_job() of the process that wrote it) is gone; None
    while it may run, or when SLURM cannot tell."""
    job, restart = str(recorded.get("job_id")), int(recorded.get("restart") or 0)
    mine = this_job()
    if mine and mine["job_id"] == job and mine.get("cluster") == recorded.get("cluster"):
        if mine["restart"] > restart:
            return f"SLURM job {job} was requeued: this is its restart {mine['restart']}, the lock's was {restart}"
        return None  # this very job (an earlier process of it on this restart is judged by its pid)
    state = _state(job)
    if state is None:
        return None
    name, restarts = state
    if name not in LIVE:
        return f"SLURM job {job} is {name}"
    if restarts is not None and restarts != restart:
        return f"SLURM job {job} runs its restart {restarts}, the lock's was {restart}"
    return None


def _state(job: str) -> tuple[str, int | None] | None:
    """(state, restarts) of a job: from scontrol while the controller knows it, then from sacct;
    None where neither can answer."""
    out = _ask(["scontrol", "show", "job", "--oneliner", job])
    if out is not None:
        fields = dict(item.split("=", 1) for item in out.split() if "=" in item)
        if "JobState" in fields:
            restarts = fields.get("Restarts")
            return fields["JobState"], int(restarts) if restarts and restarts.isdigit() else None
    out = _ask(["sacct", "--noheader", "--allocations", "--parsable2", "--format=State", "--jobs", job])
    if out:
        return out.splitlines()[-1].split()[0], None  # "CANCELLED by 0": the state is its first word
    return None


def _ask(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=ASK_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
