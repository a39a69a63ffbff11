"""Variance of a config's results by source of randomness: how much comes from the initial
weights, how much from the data order, how much from their interaction.

The sources must be crossed in a balanced grid (every init seed with every order seed, the
same number of runs per cell). The components are the two-way (k-way) random-effects model's:
mean squares from statsmodels' ANOVA, solved for the variance components through their
expected values, E[MS_T] = s2_residual + sum over terms U containing T of
(runs per cell x levels of the factors outside U) s2_U.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from statsmodels.formula.api import ols
from statsmodels.stats.anova import anova_lm

from analysis.groups import ALL, groups, seed_keys
from analysis.tables import check_metric
from neuralforge.record.keys import SEED_SOURCES, is_seed_key
from neuralforge.record.schema import is_accuracy


def variance(df: pd.DataFrame, metric: str = "test_acc", by: str | list[str] | None = None) -> pd.DataFrame:
    """Per config with a grid of seed sources: one row per source, interaction and residual,
    with degrees of freedom, mean square, variance component, its std and its share.
    ``attrs["notes"]`` says what could not be separated, or why there is no table."""
    check_metric(df, metric)
    frames, notes = [], []
    for group in groups(df, by):
        runs = group.runs.dropna(subset=[metric])
        table, group_notes = components(runs, seed_keys(df), metric)
        prefix = f"{group.label}: " if group.key != {"group": ALL} else ""
        notes += [prefix + n for n in group_notes]
        if table is not None:
            frames.append(table.assign(**group.key).reindex(columns=[*group.key, *table.columns]))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    out.attrs = {"notes": notes, "percent": ["std"] if is_accuracy(metric) else [],
                 "share": ["share"], "metric": metric}
    return out


def factors(runs: pd.DataFrame, keys: list[str]) -> dict[str, str]:
    """The seed sources that vary in `runs`, as {name: column}. Sources that always move
    together (a plain seed sweep moves all five) are one factor named after all of them."""
    varying = [k for k in keys if is_seed_key(k) and runs[k].nunique() > 1]
    merged: list[list[str]] = []
    for key in varying:
        for members in merged:
            if _aliased(runs, members[0], key):
                members.append(key)
                break
        else:
            merged.append([key])
    return {_name(members): members[0] for members in merged}


def components(runs: pd.DataFrame, keys: list[str], metric: str) -> tuple[pd.DataFrame | None, list[str]]:
    found = factors(runs, keys)
    grid, reps = _largest_grid(runs, found)
    if grid is None:
        if len(found) < 2:
            why = f"only {next(iter(found))} varies" if found else "no seed source varies"
        else:
            why = f"{', '.join(found)} vary but are not crossed in a balanced grid"
        return None, [f"no variance decomposition: {why} (e.g. sweep seeds.init=0,1,2 seeds.order=0,1,2)"]
    names = list(grid)
    levels = {name: runs[grid[name]].nunique() for name in names}
    data = pd.DataFrame({f"f{i}": runs[grid[name]].astype(str).to_numpy() for i, name in enumerate(names)})
    data["y"] = runs[metric].to_numpy(dtype=float)

    k = len(names)
    terms = [t for size in range(1, k + 1) for t in itertools.combinations(range(k), size)]
    # With one run per cell the full interaction has no replicate to be told apart from: it
    # is left out of the model and becomes the residual.
    fitted = terms if reps > 1 else terms[:-1]
    formula = "y ~ " + " + ".join(_term(t) for t in fitted)
    anova = anova_lm(ols(formula, data).fit(), typ=1)
    ms = {t: anova.loc[_term(t), "mean_sq"] for t in fitted}
    residual = anova.loc["Residual", "mean_sq"]

    def coef(u):
        return reps * math.prod(levels[names[i]] for i in range(k) if i not in u)

    raw: dict[tuple[int, ...], float] = {}
    for t in sorted(fitted, key=len, reverse=True):
        higher = sum(coef(u) * raw[u] for u in fitted if set(u) > set(t))
        raw[t] = (ms[t] - residual - higher) / coef(t)

    notes = []
    top = " × ".join(names)
    rows = [{"source": " × ".join(names[i] for i in t), "df": anova.loc[_term(t), "df"], "mean_sq": ms[t],
             "variance": max(0.0, raw[t])} for t in fitted]
    residual_name = f"{top} + residual" if reps == 1 else "residual"
    rows.append({"source": residual_name, "df": anova.loc["Residual", "df"], "mean_sq": residual,
                 "variance": residual})
    table = pd.DataFrame(rows)
    total = table["variance"].sum()
    table["std"] = np.sqrt(table["variance"])
    table["share"] = table["variance"] / total if total > 0 else math.nan
    table.loc[len(table)] = {"source": "total", "df": len(runs) - 1, "mean_sq": math.nan, "variance": total,
                             "std": math.sqrt(total), "share": 1.0 if total > 0 else math.nan}

    if reps == 1:
        notes.append(f"one run per cell: the {top} interaction cannot be separated from residual noise, "
                     f"so they are reported together")
    negative = [row["source"] for row, t in zip(rows, fitted) if raw[t] < 0]
    if negative:
        notes.append(f"{', '.join(negative)}: estimate below zero, shown as 0 (no evidence of this source)")
    outside = [name for name in found if name not in grid]
    if outside:
        notes.append(f"{', '.join(outside)} also vary, within the grid's cells: counted in the residual")
    return table, notes


def _largest_grid(runs: pd.DataFrame, found: dict[str, str]) -> tuple[dict[str, str] | None, int]:
    names = list(found)
    for size in range(len(names), 1, -1):
        for subset in itertools.combinations(names, size):
            cols = [found[n] for n in subset]
            cells = runs.groupby(cols).size()
            if len(cells) == math.prod(runs[c].nunique() for c in cols) and cells.nunique() == 1:
                return {n: found[n] for n in subset}, int(cells.iloc[0])
    return None, 0


def _aliased(runs: pd.DataFrame, a: str, b: str) -> bool:
    return runs.groupby(a)[b].nunique().max() == 1 and runs.groupby(b)[a].nunique().max() == 1


def _name(keys: list[str]) -> str:
    sources = [k.removeprefix("seeds.") for k in keys if k != "seed"]
    if not sources or len(sources) == len(SEED_SOURCES):
        return "seed"
    return "+".join(sources)


def _term(t: tuple[int, ...]) -> str:
    return ":".join(f"C(f{i})" for i in t)
