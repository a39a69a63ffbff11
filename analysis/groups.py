"""Which runs are repeats of one config: the same values of every swept key except the seeds.

Keys that change where or how fast a run computes but not what it computes (device, thread
count, the data folder, how many seeds share a process) do not split a config either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.collect import complete, is_seed_key
from analysis.errors import AnalysisError

NON_SEMANTIC = frozenset({
    "n_seeds", "seeds_per_trial", "threads", "device",
    "data.root", "data.download", "trainer.keep_last", "trainer.eval_batch_size",
    "trial",  # the Optuna trial's number: two trials that drew the same values are repeats
})
# Top-level config keys that are not sections, for frames that lost attrs on the way
_TOP_LEVEL = ("seed", "n_seeds", "seeds_per_trial", "trial", "device", "threads")
ALL = "all runs"


@dataclass
class Group:
    key: dict[str, Any]  # {"model.hidden": "[128, 64]"}, or {"group": "all runs"} when nothing is swept
    runs: pd.DataFrame  # complete runs only

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={show(v)}" if k != "group" else str(v) for k, v in self.key.items())


def config_keys(df: pd.DataFrame) -> list[str]:
    keys = df.attrs.get("config_keys")
    if keys is None:
        keys = [c for c in df.columns if "." in c or c in _TOP_LEVEL]
    return [k for k in keys if k in df.columns]


def seed_keys(df: pd.DataFrame) -> list[str]:
    return [k for k in config_keys(df) if is_seed_key(k)]


def group_keys(df: pd.DataFrame, by: str | list[str] | None = None) -> list[str]:
    if by is None:
        return [k for k in config_keys(df) if not is_seed_key(k) and k not in NON_SEMANTIC]
    by = [by] if isinstance(by, str) else list(by)
    unknown = [k for k in by if k not in config_keys(df)]
    if unknown:
        swept = ", ".join(k for k in config_keys(df) if not is_seed_key(k)) or "none"
        raise AnalysisError(f"{', '.join(unknown)} does not vary across these runs (keys that do: {swept})")
    return by


def groups(df: pd.DataFrame, by: str | list[str] | None = None) -> list[Group]:
    """The complete runs, split by `by` (default: every swept config key), in key order."""
    runs = complete(df)
    runs.attrs = {}  # pandas deep-copies attrs on every operation: the groups need none
    keys = group_keys(df, by)
    if not keys:
        return [Group({"group": ALL}, runs)]
    return [Group(dict(zip(keys, values)), part)
            for values, part in runs.groupby(keys, dropna=False, sort=True)]


def show(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "None"
        return f"{value:g}"
    return str(value)
