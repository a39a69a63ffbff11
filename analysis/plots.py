"""PNG figures of a sweep, drawn on matplotlib Figure objects: no pyplot, so nothing here
changes the caller's backend or global state (a notebook keeps its own)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis import artifacts, stats
from analysis.groups import Group
from neuralforge.record.schema import higher_is_better, is_accuracy

DPI = 130
MAX_LINES = 10  # more lines than this in one axes cannot be told apart: the best are drawn
MAX_PANELS = 9
METRIC_NAMES = {"test_acc": "test accuracy", "val_acc": "validation accuracy", "train_acc": "train accuracy",
                "max_test_acc": "max test accuracy over epochs", "last_test_acc": "last-epoch test accuracy"}


def metric_label(metric: str) -> str:
    name = METRIC_NAMES.get(metric, metric)
    return f"{name} (%)" if is_accuracy(metric) else name


def _scale(metric: str) -> float:
    return 100.0 if is_accuracy(metric) else 1.0


def _colours(n: int):
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _best(groups: list[Group], metric: str) -> tuple[list[Group], str]:
    if len(groups) <= MAX_LINES:
        return groups, ""
    sign = 1 if higher_is_better(metric) else -1
    # a config without the metric (validation metrics with data.val_size=0) ranks last
    ranked = sorted(groups, key=lambda g: -math.inf if math.isnan(m := g.runs[metric].mean()) else sign * m,
                    reverse=True)[:MAX_LINES]
    return [g for g in groups if any(g is r for r in ranked)], f" (best {MAX_LINES} of {len(groups)} configs)"


def _legend(ax, **kwargs) -> None:
    if ax.get_legend_handles_labels()[0]:  # nothing drawn (no histories, no values): no legend
        ax.legend(**kwargs)


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def distribution(groups: list[Group], metric: str, path: Path, seed: int = 0) -> Path:
    """Every run as a point, per config, with the mean and its 95% bootstrap CI."""
    s = _scale(metric)
    fig = Figure(figsize=(max(5.0, 1.0 + 0.9 * len(groups)), 4.5))
    ax = fig.subplots()
    rng = np.random.default_rng(seed)
    labelled = False
    for i, (g, colour) in enumerate(zip(groups, _colours(len(groups)))):
        v = g.runs[metric].dropna().to_numpy(dtype=float)
        if not len(v):
            continue  # no value for this config (validation metrics with data.val_size=0)
        d = stats.describe(v, seed, stats.support(metric))
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(v)), s * v, s=18, alpha=0.6, color=colour,
                   label=None if labelled else "runs")
        # a percentile bootstrap of a handful of runs is their min-max range: Student's t there
        kind = "t" if len(v) < stats.SMALL_N else "ci"
        low, high = (d[f"{kind}_low"], d[f"{kind}_high"]) if np.isfinite(d[f"{kind}_low"]) else (d["mean"], d["mean"])
        ax.errorbar(i + 0.3, s * d["mean"], yerr=[[s * (d["mean"] - low)], [s * (high - d["mean"])]], fmt="D",
                    color="black", capsize=4, markersize=5,
                    label=None if labelled else f"mean, 95% CI (bootstrap; Student's t under n = {stats.SMALL_N})")
        labelled = True
    names = [f"{g.label}\nn = {len(g.runs[metric].dropna())}" for g in groups]
    ax.set_xticks(range(len(groups)), names, rotation=30 if len(groups) > 2 else 0,
                  ha="right" if len(groups) > 2 else "center", fontsize=8)
    ax.set_xlabel("config")
    ax.set_ylabel(metric_label(metric))
    ax.set_title(f"{METRIC_NAMES.get(metric, metric).capitalize()} per config")
    ax.grid(axis="y", alpha=0.3)
    _legend(ax, loc="best", fontsize=8)
    return _save(fig, path)


def learning_curves(groups: list[Group], path: Path, metric: str = "test_acc") -> Path:
    """Validation and test accuracy over epochs: mean over each config's runs, band of ±1 std."""
    shown, note = _best(groups, metric)
    fig = Figure(figsize=(11, 4.5))
    axes = fig.subplots(1, 2, sharey=True)
    for g, colour in zip(shown, _colours(len(shown))):
        h = artifacts.histories(g.runs)
        if h.empty:
            continue
        by_epoch = h.groupby("epoch")[["val_acc", "test_acc"]].agg(["mean", "std"])
        for ax, col in zip(axes, ("val_acc", "test_acc")):
            mean, std = 100 * by_epoch[(col, "mean")], 100 * by_epoch[(col, "std")].fillna(0)
            if mean.isna().all():
                continue
            ax.plot(mean.index, mean, color=colour, label=g.label)
            ax.fill_between(mean.index, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
    axes[1].tick_params(labelleft=True)  # sharey hides them, and the panels are read apart
    for ax, col in zip(axes, ("val_acc", "test_acc")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric_label(col))
        ax.set_title(f"{METRIC_NAMES[col].capitalize()}: mean ± std over runs")
        ax.grid(alpha=0.3)
    _legend(axes[1], fontsize=8, title="config" + note, title_fontsize=8, loc="lower right")
    return _save(fig, path)


def ecdf(groups: list[Group], metric: str, path: Path) -> Path:
    """Empirical CDF of each config's results."""
    shown, note = _best(groups, metric)
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for g, colour in zip(shown, _colours(len(shown))):
        v = g.runs[metric].dropna().to_numpy(dtype=float)
        if len(v):  # none for validation metrics with data.val_size=0
            ax.ecdf(_scale(metric) * v, color=colour, label=g.label)
    ax.set_xlabel(metric_label(metric))
    ax.set_ylabel("fraction of runs ≤ x")
    ax.set_title(f"Distribution of {METRIC_NAMES.get(metric, metric)} over runs")
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=8, title="config" + note, title_fontsize=8, loc="upper left")
    return _save(fig, path)


def expected_max(groups: list[Group], metric: str, path: Path) -> Path:
    """Expected best result of n runs, per config, for n up to the runs there are."""
    shown, note = _best(groups, metric)
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for g, colour in zip(shown, _colours(len(shown))):
        curve = stats.expected_best(g.runs[metric].dropna().to_numpy(dtype=float), higher_is_better(metric))
        if not len(curve):
            continue
        ax.plot(np.arange(1, len(curve) + 1), _scale(metric) * curve, marker="o", markersize=3, color=colour,
                label=g.label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("number of runs n")
    ax.set_ylabel(f"expected best {metric_label(metric)}")
    ax.set_title(f"Expected {'maximum' if higher_is_better(metric) else 'minimum'} over n runs "
                 f"(Tang et al. 2020)")
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=8, title="config" + note, title_fontsize=8, loc="lower right")
    return _save(fig, path)


def churn(matrices: dict[str, pd.DataFrame], path: Path) -> Path:
    """Heat map per config of how often two runs label a test example differently."""
    labels = list(matrices)[:MAX_PANELS]
    cols = min(3, len(labels))
    rows = math.ceil(len(labels) / cols)
    fig = Figure(figsize=(4.8 * cols + 1, 4.4 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    vmax = max(100 * m.to_numpy().max() for m in matrices.values()) or 1.0
    images = []
    for ax, label in zip(axes, labels):
        m = matrices[label]
        images.append(ax.imshow(100 * m.to_numpy(), vmin=0, vmax=vmax, cmap="viridis"))
        ticks = range(len(m)) if len(m) <= 16 else []
        ax.set_xticks(ticks, [m.index[i] for i in ticks], rotation=90, fontsize=7)
        ax.set_yticks(ticks, [m.index[i] for i in ticks], fontsize=7)
        ax.set_xlabel("run")
        ax.set_ylabel("run")
        ax.set_title(label, fontsize=9)
    for ax in axes[len(labels):]:
        ax.set_visible(False)
    more = f" (first {MAX_PANELS} of {len(matrices)} configs)" if len(matrices) > MAX_PANELS else ""
    fig.suptitle(f"Churn: pairwise disagreement of test predictions{more}")
    fig.colorbar(images[-1], ax=axes[:len(labels)].tolist(), label="disagreement (% of test examples)")
    return _save(fig, path)


def anatomy(values: dict[str, np.ndarray], table: pd.DataFrame, metric: str, path: Path, seed: int = 0) -> Path:
    """Each condition's runs beside all's (grey), with the mean ± std of each and the test-set
    noise floor (Jordan 2023) marked as a band of ± floor_std around the condition's mean."""
    s = _scale(metric)
    rows = table.set_index("condition")
    names = list(values)
    fig = Figure(figsize=(max(6.0, 1.2 * len(names) + 1.5), 4.8))
    ax = fig.subplots()
    rng = np.random.default_rng(seed)
    colours = _colours(len(names))
    labelled: set[str] = set()

    def once(label: str) -> str | None:
        if label in labelled:
            return None
        labelled.add(label)
        return label

    for i, (name, colour) in enumerate(zip(names, colours)):
        v = s * values[name]
        floor = float(rows["floor_std"].loc[name]) if "floor_std" in rows.columns else math.nan
        if np.isfinite(floor) and len(v):
            ax.bar(i - 0.17, 2 * s * floor, bottom=v.mean() - s * floor, width=0.34, color="0.85", zorder=0,
                   label=once("test-set noise floor: mean ± floor std (Jordan 2023)"))
        ax.scatter(i - 0.17 + rng.uniform(-0.09, 0.09, len(v)), v, s=14, alpha=0.7, color=colour, zorder=2)
        if len(v) > 1:
            ax.errorbar(i - 0.17, v.mean(), yerr=v.std(ddof=1), fmt="_", color="black", capsize=5, zorder=3,
                        markersize=14, label=once("mean ± std"))
        if name != "all" and "all" in values:
            w = s * values["all"]
            ax.scatter(i + 0.17 + rng.uniform(-0.09, 0.09, len(w)), w, s=10, alpha=0.5, color="0.5", zorder=2,
                       label=once("all (every seed varies), for reference"))
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=9)
    ax.set_xlabel("condition: the only source that varies")
    ax.set_ylabel(metric_label(metric))
    ax.set_title("Anatomy of run-to-run spread: each source alone beside all of them")
    ax.grid(axis="y", alpha=0.3)
    _legend(ax, loc="best", fontsize=8)
    return _save(fig, path)


def race(found, metric: str, path: Path) -> Path:
    """A race (analysis.racing.Race): each config's anytime-valid interval and mean against the
    seeds it holds after each round, an x where it was eliminated."""
    s = _scale(metric)
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.subplots()
    configs = list(found.standings)
    finite = [v for r in found.rounds for _, m, lo, hi in r.intervals.values() for v in (lo, hi) if np.isfinite(v)]
    floor, ceiling = (min(finite), max(finite)) if finite else (0.0, 1.0)
    for c, colour in zip(configs, _colours(len(configs))):
        pts = [r.intervals[c] for r in found.rounds if c in r.intervals]
        if not pts:
            continue
        seeds = [p[0] for p in pts]
        # an interval still infinite (too few seeds) is drawn to the edge of the others
        low = [s * (p[2] if np.isfinite(p[2]) else floor) for p in pts]
        high = [s * (p[3] if np.isfinite(p[3]) else ceiling) for p in pts]
        ax.fill_between(seeds, low, high, color=colour, alpha=0.18, step="post" if len(seeds) == 1 else None)
        ax.plot(seeds, [s * p[1] for p in pts], "o-", color=colour, markersize=3, label=c)
        st = found.standings[c]
        if st.status == "eliminated":
            ax.plot(st.seeds, s * st.mean, "x", color="black", markersize=9, markeredgewidth=2)
    ax.plot([], [], "x", color="black", label="eliminated")
    ax.set_xlabel("seeds per config")
    ax.set_ylabel(metric_label(metric))
    ax.set_ylim(s * floor, s * ceiling)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"race: {found.ended or 'goes on'} ({found.runs} runs); bands: anytime-valid intervals", fontsize=10)
    _legend(ax, fontsize=8, loc="best")
    return _save(fig, path)
