"""The anatomy of run-to-run randomness (`python run.py -m +experiment=anatomy`): per condition,
how far runs spread when only one source of randomness varies, against `all` (every source at
once), against the test set's own sampling noise (Jordan 2023), and how far the same seeds land
on two thread counts beside a one-bit change of one initial weight (Summers & Dinneen 2021).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import artifacts, stats
from analysis.collect import REPEAT
from analysis.errors import AnalysisError
from neuralforge.record.anatomy import CONDITIONS, THREADS, condition_of, left_out
from neuralforge.record.schema import COMPLETE, is_accuracy

# differences between two configs' means for the table of seeds needed (accuracy, fraction)
DELTAS = (0.001, 0.002, 0.005)


@dataclass
class Anatomy:
    table: pd.DataFrame  # one row per condition
    pairs: pd.DataFrame  # distances between paired runs: threads, perturb against its base, all
    seeds_needed: pd.DataFrame  # runs per config to tell two configs apart, from all's std
    notes: list[str] = field(default_factory=list)
    values: dict[str, np.ndarray] = field(default_factory=dict)  # metric per run, per condition


def has_anatomy(df: pd.DataFrame) -> bool:
    return bool(df["overrides"].dropna().map(condition_of).notna().any())


def by_condition(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The complete runs of each condition, in the order of CONDITIONS. A repeat counts in its
    own condition: every condition's first run is the same base run, and the threads groups
    train all's seeds on other thread counts."""
    done = df[df["status"].isin([COMPLETE, REPEAT])]
    names = done["overrides"].fillna("").map(condition_of)
    found = {c: done[names == c] for c in CONDITIONS if (names == c).any()}
    if not found:
        roots = ", ".join(df.attrs.get("roots", [])) or "these folders"
        raise AnalysisError(f"no anatomy runs under {roots}: `python run.py -m +experiment=anatomy` "
                            f"writes them (each records anatomy=<condition> among its overrides)")
    return found


def anatomy(df: pd.DataFrame, metric: str = "test_acc", seed: int = 0) -> Anatomy:
    conditions = by_condition(df)
    notes = _absent(df, conditions)
    values = {c: runs[metric].dropna().to_numpy(dtype=float) for c, runs in conditions.items()}
    all_std = values["all"].std(ddof=1) if "all" in values and len(values["all"]) > 1 else math.nan
    if math.isnan(all_std):
        notes.append("no `all` condition with two runs or more: shares of its std are not computed")
    loaded, floor_note = _load_predictions(conditions)
    rows = []
    for c, runs in conditions.items():
        v = values[c]
        d = stats.describe(v, seed)
        try:
            floor = _floor(runs, loaded)
        except AnalysisError as err:
            floor, floor_note = {}, f"noise floor not computed: {err}"
        rows.append({"condition": c, "varies": CONDITIONS[c], "n": d["n"], "mean": d["mean"], "std": d["std"],
                     "std_low": d["std_low"], "std_high": d["std_high"], "share_of_all": d["std"] / all_std,
                     "floor_std": floor.get("floor_std", math.nan),
                     "remainder_std": floor.get("remainder_std", math.nan), "churn": floor.get("churn", math.nan)})
    if floor_note:
        notes.append(floor_note)
    table = pd.DataFrame(rows)
    percent = ["mean", "std", "std_low", "std_high", "floor_std", "remainder_std"] if is_accuracy(metric) else []
    table.attrs = {"metric": metric, "percent": percent, "share": ["share_of_all", "churn"]}

    pairs = _pairs(conditions, metric, loaded)
    needed = pd.DataFrame({"delta": DELTAS, "std_all": all_std,
                           "n_per_config": [stats.n_for_power(all_std, d) for d in DELTAS]})
    needed.attrs = {"metric": metric, "percent": ["delta", "std_all"] if is_accuracy(metric) else []}
    return Anatomy(table, pairs, needed, notes, values)


def _absent(df: pd.DataFrame, conditions: dict[str, pd.DataFrame]) -> list[str]:
    """Why each condition without runs is not there: the recipe cannot vary it, or it did not run."""
    recipe = {}
    for key in ("data.augment.shift", "model.dropout"):
        if key in df.attrs.get("constants", {}):
            recipe[key] = df.attrs["constants"][key]
        elif key in df.columns:
            recipe[key] = df[key].dropna().iloc[0] if df[key].notna().any() else None
    cannot = left_out(recipe.get("data.augment.shift", 0), recipe.get("model.dropout", 0))
    return [f"{c}: left out, {cannot[c]}" if c in cannot else
            f"{c}: no complete runs (python -m analysis problems lists what is missing)"
            for c in CONDITIONS if c not in conditions]


def _load_predictions(conditions: dict[str, pd.DataFrame]) -> tuple[dict[str, np.ndarray], str | None]:
    """Each run's predicted test labels by folder, read once (floors and pairs index them), and
    why a condition's could not be read."""
    loaded: dict[str, np.ndarray] = {}
    note = None
    for runs in conditions.values():
        try:
            folders, preds = artifacts.predictions(runs)
        except AnalysisError as err:
            note = f"noise floor not computed: {err}"
            continue
        loaded.update(zip(folders, preds if preds is not None else []))
    return loaded, note


def _stack(runs: pd.DataFrame, loaded: dict[str, np.ndarray]) -> np.ndarray | None:
    """The runs' predictions as a (runs, test examples) array, or None unless every run left them."""
    if runs.empty or not runs["folder"].isin(loaded).all():
        return None
    return np.stack([loaded[folder] for folder in runs["folder"]])


def _floor(runs: pd.DataFrame, loaded: dict[str, np.ndarray]) -> dict[str, float]:
    """Test-set noise floor (Jordan 2023) and mean pairwise churn of the runs' predictions."""
    runs = runs[runs["folder"].isin(loaded)]
    preds = _stack(runs, loaded)
    if preds is None or len(preds) < 2:
        return {}
    labels = artifacts.test_labels(str(runs["folder"].iat[0]))
    out = stats.noise_floor(preds == labels[None, :])
    out["churn"] = stats.stability(preds, labels)["churn"]
    return out


def _pairs(conditions: dict[str, pd.DataFrame], metric: str, loaded: dict[str, np.ndarray]) -> pd.DataFrame:
    rows = []
    if all(c in conditions for c in THREADS):
        a, b = (conditions[c].set_index("seed") for c in THREADS)
        both = a.index.intersection(b.index)
        if len(both):
            rows.append({"pair": "threads_1 vs threads_2, same seeds",
                         **_distance(a.loc[both], b.loc[both], metric, loaded)})
    if "perturb" in conditions and "init_perturb" in conditions["perturb"]:
        runs = conditions["perturb"].sort_values("init_perturb")
        base, others = runs.iloc[[0]], runs.iloc[1:]
        if len(others):
            rows.append({"pair": f"perturb vs its base (init_perturb={base['init_perturb'].iat[0]:g})",
                         **_distance(base.loc[base.index.repeat(len(others))], others, metric, loaded)})
    if "all" in conditions and len(conditions["all"]) > 1:
        runs = conditions["all"]
        i, j = map(list, zip(*itertools.combinations(range(len(runs)), 2)))
        rows.append({"pair": "all: two runs, every seed different",
                     **_distance(runs.iloc[i], runs.iloc[j], metric, loaded)})
    table = pd.DataFrame(rows)
    table.attrs = {"metric": metric, "percent": ["mean_abs_diff", "max_abs_diff"] if is_accuracy(metric) else [],
                   "share": ["churn"]}
    return table


def _distance(a: pd.DataFrame, b: pd.DataFrame, metric: str, loaded: dict[str, np.ndarray]) -> dict[str, float]:
    """Pair by pair, a's runs against b's; churn only where every run left its predictions."""
    preds_a, preds_b = _stack(a, loaded), _stack(b, loaded)
    if preds_a is None or preds_b is None:
        preds_a = preds_b = None
    return stats.paired_distance(a[metric], b[metric], preds_a, preds_b)
