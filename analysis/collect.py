"""Run folders -> one DataFrame row per run, read from results.json alone.

Histories, predictions and test labels are read later, only by the analyses that need them
(artifacts.py): collecting a thousand runs must stay under two seconds, and a CSV parse per
run would take most of that.

Rows keep every run, whatever its status, so that problems() can list what is not there;
the analyses use complete() and never see a failed, pruned (stopped early by a search's pruner),
stale, running or missing run, nor a repeat of a run already counted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.errors import AnalysisError, NoCompleteRuns
from neuralforge.record.errors import RecordError
from neuralforge.record.files import MANIFEST, RESULTS
from neuralforge.record.keys import ADDED_LATER, NOT_A_CONFIG, is_seed_key
from neuralforge.record.liveness import run_state, without_record  # the sweep summary's rules too
from neuralforge.record.schema import COMPLETE, Metrics, State, Timing, parse

WITHOUT_RECORD: dict[str, str] = {  # a manifest's job that left no results.json, but started
    State.FAILED: ": refused before training (its .refused file says why)",
    State.STALE: ": stopped before its first record (killed or interrupted); it resumes when launched again",
    State.RUNNING: ": in its first epoch (it holds the folder's lock)",
}
REPEAT = "repeat"  # complete, but another complete run already has its config and seeds
UNREADABLE = "unreadable"

# The record's own spellings, in the record's order (neuralforge.record.schema)
METRICS = tuple(f.name for f in fields(Metrics))
TIMES = tuple(f.name for f in fields(Timing) if f.metadata["column"])
NUMERIC = tuple(m for m in (*METRICS, *TIMES, "n_params") if m != "selection")
RUN_COLUMNS = ("status", *METRICS, *TIMES, "n_params", "modified_tree", "error", "overrides", "folder")


def collect(paths: str | os.PathLike | Iterable[str | os.PathLike], *, now: float | None = None) -> pd.DataFrame:
    """One row per run found below `paths` (recursively), one column per config key that
    varies across them (dotted: ``model.hidden``, ``optimizer.lr``), the seed keys, and the
    record's metrics, status, timing and folder.

    ``df.attrs``: ``config_keys`` (the config columns), ``constants`` (config keys that do not
    vary, with their value) and ``roots``.
    """
    roots = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    if not roots:
        raise AnalysisError("no folder given")
    for root in roots:
        if not root.is_dir():
            raise AnalysisError(f"{root}: no such folder")
    found: dict[str, str] = {}  # real path -> path as walked, so overlapping roots count a run once
    manifests: dict[str, str] = {}  # and a sweep's manifest once
    for root in roots:
        _walk(str(root), found, manifests)

    now = time.time() if now is None else now
    host = socket.gethostname()
    rows, configs = [], []
    for path in found.values():
        row, config = _read(path, host, now)
        rows.append(row)
        configs.append(config)
    # a job folder holds its run, or, for a group, its members' folders; compared as real
    # paths, since the roots may name one sweep two ways (relative and absolute, a symlink)
    seen = {os.path.realpath(row["folder"]) for row in rows}
    seen |= {os.path.dirname(folder) for folder in seen}
    for manifest in manifests.values():
        for folder, overrides in _expected(manifest):
            if os.path.realpath(folder) not in seen:
                seen.add(os.path.realpath(folder))
                state = without_record(Path(folder))  # the end-of-sweep summary's rule
                rows.append({"status": state, "error": f"listed in {MANIFEST}, never wrote {RESULTS}"
                                                       + WITHOUT_RECORD.get(state, ""),
                             "overrides": overrides, "folder": folder})
                configs.append({})

    cfg = pd.DataFrame(configs, index=range(len(rows)))
    known = cfg[cfg.notna().any(axis=1)]  # missing and unreadable runs have no config to vary
    varying = [k for k in cfg.columns if is_seed_key(k) or known[k].nunique(dropna=False) > 1]
    varying.sort(key=is_seed_key)  # what was swept first, then the seeds
    constants = {k: known[k].iloc[0] for k in cfg.columns if k not in varying}
    runs = pd.DataFrame(rows)
    runs = runs.reindex(columns=list(RUN_COLUMNS))
    # records write a missing value as null: None, and a column of only None, must be NaN
    runs[list(NUMERIC)] = runs[list(NUMERIC)].apply(pd.to_numeric)
    df = pd.concat([cfg[varying], runs], axis=1)
    df = df.iloc[sorted(range(len(df)), key=lambda i: _natural(str(df["folder"].iat[i])))].reset_index(drop=True)
    df.attrs = {"config_keys": varying, "constants": constants, "roots": [str(r) for r in roots]}
    _mark_repeats(df)
    return df


def _mark_repeats(df: pd.DataFrame) -> None:
    """The same seeds of one config trained twice (a group and single runs, a relaunch with
    another thread count, two trials that drew the same values) are one sample, not two: the
    first run by folder counts, the others are listed as repeats."""
    keys = [k for k in df.attrs["config_keys"] if k not in NOT_A_CONFIG]
    done = df[df["status"] == COMPLETE]
    if not keys or done.empty:
        return
    first = done.groupby(keys, dropna=False, sort=False)["folder"].transform("first")
    for i in done.index[done.duplicated(subset=keys)]:
        df.at[i, "status"] = REPEAT
        df.at[i, "error"] = f"the same config and seeds as {first[i]}"


def complete(df: pd.DataFrame) -> pd.DataFrame:
    """The runs statistics are computed on."""
    done = df[df["status"] == COMPLETE]
    if done.empty:
        where = ", ".join(df.attrs.get("roots", [])) or "these runs"
        others = describe_problems(df)
        raise NoCompleteRuns(f"no complete runs in {where}" + (f" ({others})" if others else ""))
    return done


def problems(df: pd.DataFrame) -> pd.DataFrame:
    """Runs that are not in any statistic, with why: failed, pruned, stale, running, missing, unreadable, repeat."""
    return df.loc[df["status"] != COMPLETE, ["status", "error", "overrides", "folder"]]


def from_modified_tree(df: pd.DataFrame) -> int:
    """Complete runs trained on a tree with uncommitted changes (their source.diff rebuilds them)."""
    return int(((df["status"] == COMPLETE) & (df["modified_tree"] == True)).sum())  # noqa: E712 (NaN rows)


def describe_problems(df: pd.DataFrame) -> str:
    """'2 failed, 1 missing', or '' when every run is complete."""
    counts = df.loc[df["status"] != COMPLETE, "status"].value_counts()
    return ", ".join(f"{n} {status}" for status, n in counts.items())


def _walk(folder: str, found: dict[str, str], manifests: dict[str, str]) -> None:
    # os.scandir answers is_dir from the directory entry itself: no stat per file
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if not entry.name.startswith("."):  # .hydra, .git, ...
                _walk(entry.path, found, manifests)
        elif entry.name == RESULTS:
            found.setdefault(os.path.realpath(entry.path), entry.path)
        elif entry.name == MANIFEST:
            manifests.setdefault(os.path.realpath(entry.path), entry.path)


def _read(path: str, host: str, now: float) -> tuple[dict[str, Any], dict[str, Any]]:
    folder = os.path.normpath(os.path.dirname(path))
    try:
        with open(path, "rb") as f:
            rec = parse(f.read(), Path(path))
    except OSError as err:
        return {"status": UNREADABLE, "error": f"{type(err).__name__}: {err}", "folder": folder}, {}
    except RecordError as err:
        return {"status": UNREADABLE, "error": str(err), "folder": folder}, {}
    metrics = rec.get("metrics") or {}
    timing = rec.get("timing") or {}
    row = {"status": run_state(rec, now, host), **{m: metrics.get(m) for m in METRICS},
           **{t: timing.get(t) for t in TIMES}, "n_params": rec.get("n_params"), "error": rec.get("error"),
           # run from a tree with uncommitted changes: its record names the source.diff that rebuilds it
           "modified_tree": bool((rec.get("provenance") or {}).get("git_dirty")),
           "overrides": " ".join(rec.get("overrides") or []), "folder": folder}
    config = dict(_flatten(rec.get("config") or {}))
    if config:
        for key, old in ADDED_LATER.items():  # records from before the key existed computed at its old value
            config.setdefault(key, old)
        files = (rec.get("provenance") or {}).get("dataset_sha256")
        if files:
            # data.root is not part of a config (the same files may move), the files are: one
            # recipe on two versions of a dataset is two configs, never pooled
            config["data.files"] = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:12]
    return row, config


def _flatten(tree: dict[str, Any], prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        elif isinstance(value, list):
            yield f"{prefix}{key}", str(value)  # "[128, 64]": hashable, groups and sorts like the override
        else:
            yield f"{prefix}{key}", value


def _expected(manifest: str) -> list[tuple[str, str]]:
    try:
        with open(manifest, "rb") as f:
            jobs = json.loads(f.read())["jobs"]
        base = os.path.dirname(manifest)
        return [(os.path.normpath(os.path.join(base, job["folder"])), " ".join(job.get("overrides", [])))
                for job in jobs]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise AnalysisError(f"{manifest} is unreadable ({type(err).__name__}: {err}): "
                            f"fix or delete it to analyse the runs without it") from None


def _natural(text: str) -> list[Any]:
    # seed=2 before seed=10
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]
