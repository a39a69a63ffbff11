"""Where a run's numbers came from: versions, the git commit and whether the tree was modified
(with the diff that rebuilds it), the device, host and process."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from neuralforge.record import slurm
from neuralforge.record.atomic import write_text
from neuralforge.record.files import SOURCE_DIFF

SOURCE = Path(__file__).resolve().parents[1]  # the code a run records: the harness's own tree


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
    write_text(path, diff)
    prov["source_diff"] = str(path.resolve())


def provenance(device: str, device_name: str, threads: int) -> dict[str, Any]:
    """The run's provenance; the dataset files' sha256 (`dataset_sha256`) join it once read."""
    # imported here: the record package loads no torch until a run asks for its provenance
    import hydra
    import numpy as np
    import torch
    import torchvision

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    prov = {
        "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "hydra": hydra.__version__, "numpy": np.__version__,
        "git_commit": commit, "git_dirty": None if status is None else bool(status),
        "device": device, "device_name": device_name, "threads": threads,
        # what a bit-exact resume on a GPU rests on (hardware.configure_cuda); null off CUDA
        "cudnn_deterministic": torch.backends.cudnn.deterministic if device.startswith("cuda") else None,
        "host": socket.gethostname(), "pid": os.getpid(), "argv": sys.argv,
    }
    job = slurm.this_job()
    if job is not None:
        prov["slurm"] = job
    return prov
