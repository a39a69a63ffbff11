"""Per-config tables from a collected runs frame: the statistics of stats.py applied to each
group of repeats, one DataFrame row per config (or per pair of configs).

Each table's ``attrs`` name the columns in the metric's units (``percent`` when the metric is
an accuracy) so that markdown.py can show them as percentages; the frame itself keeps
fractions at full precision.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests

from analysis import artifacts, stats
from analysis.collect import METRICS, complete
from analysis.errors import AnalysisError
from analysis.groups import Group, group_keys, groups, seed_keys, show
from neuralforge.record.schema import higher_is_better, is_accuracy


def summarize(df: pd.DataFrame, metric: str = "test_acc", by: str | list[str] | None = None,
              seed: int = 0) -> pd.DataFrame:
    """Per config: n, mean, std (with its bootstrap interval and standard error), SEM, median, min, max,
    range, and the 95% CI of the mean by seeded bootstrap (ci_*) and by Student's t (t_*), inside
    the metric's support (an accuracy's in [0, 1])."""
    check_metric(df, metric)
    rows = [{**g.columns, **stats.describe(values, seed, stats.support(metric)),
             "small_n": "yes" if len(values) < stats.SMALL_N else ""}
            for g, values in _values(df, metric, by)]
    out = pd.DataFrame(rows)
    return _units(out, metric, ["mean", "std", "std_low", "std_high", "std_se", "sem", "median", "min", "max", "range",
                                "ci_low", "ci_high", "t_low", "t_high"])


def optimism(df: pd.DataFrame, by: str | list[str] | None = None) -> pd.DataFrame:
    """Per config, what choosing the epoch on test would have added: max test accuracy over
    epochs minus test accuracy at the epoch validation chose."""
    rows = []
    for g in groups(df, by):
        gap = g.runs["max_test_acc"] - g.runs["test_acc"]
        rows.append({**g.columns, "n": len(g.runs), "test_acc": g.runs["test_acc"].mean(),
                     "max_test_acc": g.runs["max_test_acc"].mean(), "optimism": gap.mean(),
                     "optimism_max": gap.max()})
    return _units(pd.DataFrame(rows), "test_acc", ["test_acc", "max_test_acc", "optimism", "optimism_max"])


def expected_max(df: pd.DataFrame, metric: str = "test_acc", by: str | list[str] | None = None) -> pd.DataFrame:
    """Per config and n = 1..N: the expected best `metric` of n of its N runs (Tang et al. 2020):
    the expected maximum, or for a lower-is-better metric such as a loss the expected minimum."""
    check_metric(df, metric)
    best = higher_is_better(metric)
    frames = [pd.DataFrame({**g.columns, "n": np.arange(1, len(values) + 1),
                            "expected_best": stats.expected_best(values, best)})
              for g, values in _values(df, metric, by)]
    return _units(pd.concat(frames, ignore_index=True), metric, ["expected_best"])


# what `summary` shows by default, after the config's columns; the others are behind --all, and
# always in --csv
SUMMARY_COMPACT = ("n", "mean", "std", "ci_low", "ci_high", "min", "max", "small_n")


def compact_summary(table: pd.DataFrame) -> pd.DataFrame:
    """A summary table narrowed to SUMMARY_COMPACT, after the columns that name each config."""
    named = [c for c in table.columns[:list(table.columns).index("n")]]
    out = table[[*named, *SUMMARY_COMPACT]]
    out.attrs = {**table.attrs, "percent": [c for c in table.attrs.get("percent", []) if c in out.columns]}
    return out


# what `compare` shows by default: the difference and P(a > b), each with its CI, the verdict and
# the counts; the other columns are behind --all, and always in --csv
COMPARE_COMPACT = ("a", "b", "n_a", "n_b", "diff", "diff_low", "diff_high", "p_a_gt_b", "p_low", "p_high", "verdict")


def compact(pairs: pd.DataFrame) -> pd.DataFrame:
    """A compare table narrowed to COMPARE_COMPACT, after the keys held equal in each row."""
    held = [c for c in pairs.columns[:list(pairs.columns).index("a")]]
    out = pairs[[*held, *COMPARE_COMPACT]]
    out.attrs = {**pairs.attrs, "percent": [c for c in pairs.attrs.get("percent", []) if c in out.columns]}
    return out


def compare(df: pd.DataFrame, by: str | None = None, metric: str = "test_acc", seed: int = 0) -> pd.DataFrame:
    """Every pair of configs; with `by`, every pair of values of `by` with the other swept keys
    held equal. a minus b: difference of means with bootstrap CI, Welch and Mann-Whitney
    p-values, P(a > b) with bootstrap CI and verdict, Cohen's d, Hedges' g, runs per config
    for 80% power, and a paired t-test on the seeds both ran. *_holm: Holm-adjusted over the
    table."""
    check_metric(df, metric)
    seeds = seed_keys(df)
    if by is None:
        pairs: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any], Group, Group]]
        pairs = [({"a": g.label}, {"b": h.label}, {}, g, h) for g, h in itertools.combinations(groups(df), 2)]
    else:
        group_keys(df, by)  # a clear message when `by` is not a swept key
        strata = [k for k in group_keys(df) if k != by]
        pairs = []
        for block in _split(groups(df, [*strata, by]), strata):
            pairs += [({"a": show(g.key[by])}, {"b": show(h.key[by])}, {k: g.key[k] for k in strata}, g, h)
                      for g, h in itertools.combinations(block, 2)]
    if not pairs:
        raise AnalysisError(f"{by} has one value only, wherever the other keys are equal: nothing to compare"
                            if by else "only one config: nothing to compare")
    rows = []
    for a, b, stratum, g, h in pairs:
        x, y = g.runs[metric].dropna(), h.runs[metric].dropna()
        if x.empty or y.empty:
            continue
        rows.append({**stratum, **a, **b, **stats.compare(x, y, seed, _paired(g.runs, h.runs, seeds, metric),
                                                            higher_is_better(metric))})
    if not rows:
        raise AnalysisError(f"no pair of configs both have {metric} values")
    out = pd.DataFrame(rows)
    for col in ("welch_p", "mwu_p", "paired_p"):
        out[f"{col}_holm"] = _holm(out[col])
    return _units(out, metric, ["mean_a", "mean_b", "diff", "diff_low", "diff_high"])


def noise_floor(df: pd.DataFrame, by: str | list[str] | None = None) -> pd.DataFrame:
    """Per config: observed std of test accuracy beside the std that test-set sampling alone
    would give (floor_std, Jordan 2023), the remainder sqrt(std^2 - floor^2) that is spread
    between the learnt functions, and the naive binomial std sqrt(p (1 - p) / n_test)."""
    rows = [{**g.columns, **stats.noise_floor(preds == labels[None, :])}
            for g, labels, _, preds in _with_predictions(df, by)]
    return _units(pd.DataFrame(rows), "test_acc", ["mean", "std", "floor_std", "remainder_std", "binomial_std"])


def stability(df: pd.DataFrame, by: str | list[str] | None = None) -> pd.DataFrame:
    """Per config, how far its runs agree on the test set: mean pairwise churn (share of
    examples two runs label differently), mean pairwise Cohen's kappa of correctness, share of
    examples some run gets wrong and every run gets wrong, and majority-vote accuracy."""
    rows = [{**g.columns, **stats.stability(preds, labels)} for g, labels, _, preds in _with_predictions(df, by)]
    return _units(pd.DataFrame(rows), "test_acc", ["mean_acc", "ensemble_acc", "churn", "some_wrong", "all_wrong"])


def churn_matrices(df: pd.DataFrame, by: str | list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Per config with two runs or more: pairwise disagreement, indexed by run."""
    out = {}
    for g, _, folders, preds in _with_predictions(df, by, at_least=2):
        names = run_names(g.runs.set_index("folder").loc[folders], seed_keys(df))
        out[g.label] = pd.DataFrame(stats.churn(preds), index=names, columns=names)
    return out


def run_names(runs: pd.DataFrame, seeds: list[str]) -> list[str]:
    """Short names for runs of one config: the seed values that tell them apart."""
    varying = [k for k in seeds if runs[k].nunique() > 1]
    if "seed" in varying and all(runs[k].equals(runs["seed"]) for k in varying):
        varying = ["seed"]
    if not varying:
        return [str(i) for i in range(len(runs))]
    return [", ".join(f"{k.removeprefix('seeds.')}={show(v)}" for k, v in zip(varying, row))
            for row in runs[varying].itertuples(index=False)]


def _values(df: pd.DataFrame, metric: str, by) -> list[tuple[Group, np.ndarray]]:
    out = [(g, g.runs[metric].dropna().to_numpy(dtype=float)) for g in groups(df, by)]
    return [(g, v) for g, v in out if len(v)]


def check_metric(df: pd.DataFrame, metric: str) -> None:
    if metric not in df.columns or metric == "selection" or not pd.api.types.is_numeric_dtype(df[metric]):
        known = [m for m in (*METRICS, "wall_seconds", "seconds_per_epoch") if m in df.columns and m != "selection"]
        raise AnalysisError(f"metric {metric!r} is not in the records: use one of {', '.join(known)}")
    if complete(df)[metric].isna().all():
        raise AnalysisError(f"no complete run has a {metric} value (validation metrics are null "
                            f"for runs with data.val_size=0): choose another --metric")


def _with_predictions(df: pd.DataFrame, by, at_least: int = 1):
    """Each config with `at_least` runs that left predictions: (group, true test labels, the
    runs' folders, their predictions stacked)."""
    for g in groups(df, by):
        folders, preds = artifacts.predictions(g.runs)
        if preds is None or len(preds) < at_least:
            continue
        labels = artifacts.test_labels(folders[0])
        if len(labels) != preds.shape[1]:
            raise AnalysisError(f"{folders[0]}: {preds.shape[1]} predictions for {len(labels)} test labels")
        yield g, labels, folders, preds


def _paired(a: pd.DataFrame, b: pd.DataFrame, seeds: list[str], metric: str):
    """Both configs' results on the seeds both ran, in matching order; None when the seeds
    do not identify runs (repeated within a config)."""
    if not seeds or a.duplicated(seeds).any() or b.duplicated(seeds).any():
        return None
    both = a[[*seeds, metric]].merge(b[[*seeds, metric]], on=seeds, suffixes=("_a", "_b")).dropna()
    if both.empty:
        return None
    return both[f"{metric}_a"].to_numpy(), both[f"{metric}_b"].to_numpy()


def _holm(p: pd.Series) -> pd.Series:
    out = pd.Series(np.nan, index=p.index)
    ok = p.notna()
    if ok.any():
        out[ok] = multipletests(p[ok].to_numpy(dtype=float), method="holm")[1]
    return out


def _split(gs: list[Group], strata: list[str]) -> list[list[Group]]:
    by_stratum: dict[tuple, list[Group]] = {}
    for g in gs:
        by_stratum.setdefault(tuple(show(g.key[k]) for k in strata), []).append(g)
    return list(by_stratum.values())


def _units(table: pd.DataFrame, metric: str, columns: list[str]) -> pd.DataFrame:
    table.attrs = {"metric": metric, "percent": columns if is_accuracy(metric) else []}
    return table

