"""What a search optimises, computed once, by the job that trained the trial, from its members'
records; written into those records (`objective`), and read back by the sweeper."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from neuralforge.record.errors import ConfigError
from neuralforge.record.schema import Record, is_accuracy


def _val_accs(recs: Sequence[Record]) -> list[float]:
    # NaN for a record with no validation accuracy, so that the objective says so
    return [math.nan if r.metrics.val_acc is None else r.metrics.val_acc for r in recs]


def _val_acc_std(recs: Sequence[Record]) -> float:
    if len(recs) < 2:
        raise ConfigError("objective val_acc_std is the spread over a trial's seeds: set seeds_per_trial >= 2")
    return float(np.std(_val_accs(recs), ddof=1))


@dataclass(frozen=True)
class Objective:
    meaning: str
    of: Callable[[Sequence[Record]], float]


OBJECTIVES = {
    "val_acc": Objective("validation accuracy at each member's chosen epoch, mean over the group",
                         lambda recs: float(np.mean(_val_accs(recs)))),
    "val_acc_std": Objective("sample standard deviation of val_acc over the group's members", _val_acc_std),
    "wall_seconds": Objective("the group's training time",
                              lambda recs: float(max(r.timing.wall_seconds for r in recs))),
    "n_params": Objective("one member's parameters", lambda recs: float(recs[0].n_params)),
}


def names(value: Any) -> list[str]:
    """The `objective` key as a list of names, each checked."""
    out = [value] if isinstance(value, str) else [str(v) for v in value]
    unknown = [n for n in out if n not in OBJECTIVES]
    if not out or unknown:
        raise ConfigError(f"objective={unknown[0] if unknown else '[]'} is unknown: use one or a list of "
                          f"{', '.join(OBJECTIVES)} (e.g. objective=[val_acc,wall_seconds])")
    return out


def of(records: Sequence[Record], wanted: Sequence[str]) -> dict[str, float]:
    """The objectives of a finished group, from its members' records."""
    return {name: OBJECTIVES[name].of(records) for name in wanted}


def shown(values: dict[str, float]) -> str:
    """Objective values as every line shows them: 'val_acc 97.42%', accuracies in percent."""
    return ", ".join(f"{name} {100 * v:.2f}%" if is_accuracy(name) else f"{name} {v:.4g}" for name, v in values.items())
