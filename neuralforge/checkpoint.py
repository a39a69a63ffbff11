"""Checkpoints that a kill cannot tear, that load without running pickled code, and the lock
that keeps two processes out of one run folder."""

from __future__ import annotations

import json
import os
import pickle
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neuralforge.errors import CheckpointError, LockedError
from neuralforge.liveness import process_alive

LOCK = ".lock"


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
    except BaseException:
        os.unlink(tmp)
        raise


def save(obj: dict[str, Any], path: Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f), durable=True)


def load(path: Path) -> dict[str, Any]:
    """Load tensors and primitives only; anything else in the file is refused."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is refused: it holds more than tensors and primitives "
                              f"(weights_only load failed: {first}). Only load checkpoints you trust; "
                              f"delete it to start again.") from None
    except Exception as err:  # torch's legacy unpickler raises KeyError and others on junk
        raise CheckpointError(f"{path} is unreadable ({type(err).__name__}: {err}). "
                              f"Delete it to start again, or use another output folder.") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is not a NeuralForge checkpoint (holds a {type(obj).__name__}).")
    return obj


def member_state(model: nn.Module, k: int) -> dict[str, torch.Tensor]:
    """Member k's weights alone, as a run with one member holds them."""
    return {name: t[k:k + 1].detach().clone() for name, t in model.state_dict().items()}


@torch.no_grad()
def load_weights(model: nn.Module, path: Path) -> None:
    """Start every member from the weights in a best.pt (trainer.init_from)."""
    ckpt = load(path)
    weights = ckpt.get("model")
    own = model.state_dict()
    if not isinstance(weights, dict) or set(weights) != set(own) or any(
            weights[n].shape[1:] != own[n].shape[1:] for n in own):
        raise CheckpointError(f"trainer.init_from={path} does not hold weights of this model's shape.")
    for name, tensor in own.items():
        tensor.copy_(weights[name].expand_as(tensor))


class RunLock:
    """An exclusively created lock file holding pid and host.

    A lock whose process is dead on this host is taken over. A lock from another host cannot
    be checked from here, so it is refused and the message says which file to remove.
    """

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK
        self.held = False

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder.get("host") == me["host"] and not process_alive(holder.get("pid")):
                    self.path.unlink(missing_ok=True)  # its process is gone: take it over
                    continue
                where = f"pid {holder.get('pid')} on {holder.get('host')}"
                raise LockedError(f"{self.path.parent} is in use by {where}. Wait for it, or, if that process "
                                  f"is gone, delete {self.path}.") from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise LockedError(f"could not take {self.path}: another process keeps taking it")

    def _holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # being written this instant, or unreadable: treat as held by someone unknown

    def __exit__(self, *exc: Any) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
