"""Checkpoints that a kill cannot tear and that load without running pickled code: last.pt, what
a resume needs, and best.pt, one member's weights at its chosen epoch. Each is one dataclass, so
that saving and loading are one definition."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Self

import torch

from neuralforge.record.atomic import atomic_write
from neuralforge.record.errors import CheckpointError

RESTART = "Delete it to start again, or use another output folder."
INIT_FROM = "Give trainer.init_from the path of a run's best.pt."


def weights(path: Path) -> dict[str, torch.Tensor]:
    """The weights in a checkpoint (trainer.init_from): a best.pt's `model`, whatever else it holds."""
    model = load(path, INIT_FROM).get("model")
    if not isinstance(model, dict):
        raise CheckpointError(f"trainer.init_from={path} holds no model weights. {INIT_FROM}")
    return model


def save(obj: dict[str, Any], path: Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f), durable=True)


def load(path: Path, remedy: str = RESTART) -> dict[str, Any]:
    """Load tensors and primitives only; anything else in the file is refused. `remedy` ends
    the error: what the user should do about a bad file in this place."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is refused: it holds more than tensors and primitives "
                              f"(weights_only load failed: {first}). Only load checkpoints you trust. "
                              f"{remedy}") from None
    except Exception as err:  # torch's legacy unpickler raises KeyError and others on junk
        raise CheckpointError(f"{path} is unreadable ({type(err).__name__}: {err}). {remedy}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is not a NeuralForge checkpoint (holds a {type(obj).__name__}). {remedy}")
    return obj


@dataclass(frozen=True)
class _Saved:
    """A checkpoint dataclass: its fields are the file's keys, all tensors and primitives, but
    `path`, where it was read from, which is not saved."""

    path: Path = field(default=Path(), compare=False, kw_only=True)

    def save(self, path: Path) -> None:
        # not dataclasses.asdict, which would deep-copy every tensor
        save({f.name: getattr(self, f.name) for f in fields(self) if f.name != "path"}, path)

    @classmethod
    def load(cls, path: Path, remedy: str = RESTART) -> Self:
        return cls.from_dict(load(path, remedy), path, remedy)

    @classmethod
    def from_dict(cls, obj: dict[str, Any], path: Path, remedy: str = RESTART) -> Self:
        names = {f.name for f in fields(cls) if f.name != "path"}
        if not names <= set(obj):
            raise CheckpointError(f"{path} is not a NeuralForge {cls.__name__} (it lacks "
                                  f"{', '.join(sorted(names - set(obj)))}). {remedy}")
        return cls(**{k: obj[k] for k in names}, path=Path(path))


@dataclass(frozen=True)
class LastState(_Saved):
    """last.pt: everything a resume needs."""
    fingerprint: str
    config: dict[str, Any]  # the group's resolved config, for the message when the fingerprint differs
    epoch: int  # epochs finished
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    rng: dict[str, list[torch.Tensor]]  # the drawing generators' states, per source, per member
    data: dict[str, str]  # the dataset files' sha256: a resume on other files is refused
    members: list[dict[str, Any]]  # each member's progress (training.Member, as plain data)
    best_predictions: torch.Tensor  # (K, n_test) uint8 at each member's chosen epoch
    elapsed: float
    started: float


@dataclass(frozen=True)
class BestState(_Saved):
    """best.pt: one member's weights at its chosen epoch, as a single model holds them, so that

        net.load_state_dict(BestState.load("seed=3/best.pt").model)

    loads them into a fresh copy of the network (your own module, or MLP/CNN with members=1)."""
    model: dict[str, torch.Tensor]
    config: dict[str, Any]  # the member's resolved config
    fingerprint: str
    epoch: int
    selection: str  # what chose the epoch: val_acc, or test_acc with data.val_size=0
    score: float  # its value there
