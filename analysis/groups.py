"""Which runs are repeats of one config: the same values of every swept key except the seeds.

Keys that change where or how fast a run computes but not what it computes (device, thread
count, the data folder, how many seeds share a process) do not split a config either.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.collect import RUN_COLUMNS, complete
from analysis.errors import AnalysisError
from neuralforge.record.keys import NOT_A_CONFIG, is_seed_key

ALL = "all runs"
MAX_LABEL_KEYS = 3  # past this many swept keys, a config is better named by its folder, if it has one


@dataclass
class Group:
    key: dict[str, Any]  # {"model.hidden": "[128, 64]"}, or {"group": "all runs"} when nothing is swept
    runs: pd.DataFrame  # complete runs only
    name: str | None = None  # the folder the config came from, when that names it alone

    @property
    def label(self) -> str:
        return label(self.columns)

    @property
    def columns(self) -> dict[str, Any]:
        """How a table row names this config: its folder's name, else its keys; a search's
        trials by their numbers and the values they drew."""
        if self.name is not None:
            return {"config": self.name}
        if "trial" in self.runs.columns and len(self.runs) and self.runs["trial"].notna().all():
            return {"trial": ", ".join(str(int(t)) for t in sorted(set(self.runs["trial"]))), **self.key}
        return self.key


def label(columns: dict[str, Any]) -> str:
    """How text names a config, from the columns a table row names it by (Group.columns)."""
    if "config" in columns:
        return str(columns["config"])
    return ", ".join(f"{k}={show(v)}" if k != "group" else str(v) for k, v in columns.items())


def config_keys(df: pd.DataFrame) -> list[str]:
    keys = df.attrs.get("config_keys")
    if keys is None:
        keys = [c for c in df.columns if c not in RUN_COLUMNS]  # a frame that lost its attrs: the rest are config keys
    return [k for k in keys if k in df.columns]


def seed_keys(df: pd.DataFrame) -> list[str]:
    return [k for k in config_keys(df) if is_seed_key(k)]


def group_keys(df: pd.DataFrame, by: str | list[str] | None = None) -> list[str]:
    if by is None:
        return [k for k in config_keys(df) if not is_seed_key(k) and k not in NOT_A_CONFIG]
    by = [by] if isinstance(by, str) else list(by)
    unknown = [k for k in by if k not in config_keys(df)]
    if unknown:
        swept = ", ".join(k for k in config_keys(df) if not is_seed_key(k)) or "none"
        raise AnalysisError(f"{', '.join(unknown)} does not vary across these runs (keys that do: {swept})")
    return by


def groups(df: pd.DataFrame, by: str | list[str] | None = None) -> list[Group]:
    """The complete runs, split by `by` (default: every swept config key), in key order."""
    runs = complete(df)
    roots = df.attrs.get("roots", [])
    runs.attrs = {}  # pandas deep-copies attrs on every operation: the groups need none
    keys = group_keys(df, by)
    if not keys:
        return [Group({"group": ALL}, runs)]
    parts = [Group(dict(zip(keys, values)), part) for values, part in runs.groupby(keys, dropna=False, sort=True)]
    with contextlib.suppress(TypeError):  # values no order compares: pandas' order stays
        parts.sort(key=lambda g: tuple(_as_sorted(g.key[k]) for k in keys))
    search = "trial" in runs.columns and runs["trial"].notna().all()
    if search:
        # a search's configs are its trials: listed in the order they were asked for, each
        # named by the values it drew (however many keys the search searched)
        parts.sort(key=lambda g: g.runs["trial"].min())
    elif by is None and len(keys) > MAX_LABEL_KEYS:
        _name_by_folder(parts, roots)
    return parts


def _as_sorted(value: Any) -> Any:
    """A list-valued key ("[256, 128]", as collect flattens it) orders by its numbers, not its text:
    [64] before [128, 64] before [1024]."""
    if isinstance(value, str) and value.startswith("["):
        with contextlib.suppress(ValueError):
            return tuple(json.loads(value))
    return value


def _name_by_folder(parts: list[Group], roots: list[str]) -> None:
    """Configs that differ in many keys make unreadable labels. When each config's runs all sit
    under one folder of their own (`notebook/`, `recipe/` below the folder analysed), that
    folder's name labels it."""
    def top(folder: str) -> str | None:
        for root in roots:
            rel = os.path.relpath(folder, root)
            if not rel.startswith(".."):
                return rel.split(os.sep)[0] if rel != "." else None
        return None

    names = [{top(f) for f in g.runs["folder"]} for g in parts]
    if len(parts) > 1 and all(len(n) == 1 and None not in n for n in names) and len(set.union(*names)) == len(parts):
        for g, n in zip(parts, names):
            g.name = n.pop()


def show(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "None"
        return f"{value:g}"
    return str(value)
