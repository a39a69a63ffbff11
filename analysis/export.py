"""python -m analysis export mlflow|tensorboard|wandb FOLDER: a sweep's, a search's or a run's
records written into an experiment tracker, after the fact, with the statistics of the seeds
that no tracker computes.

The tracker runs are the live logger's (neuralforge.trackers): the same identities, found again,
and only what they lack is written. A second export adds nothing; a sweep exported while it runs
and again once it is done ends as one export at the end would leave it. Failed and pruned runs
are exported with their status, stale ones as killed.
"""

from __future__ import annotations

import io
import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from analysis import tables
from analysis.collect import UNREADABLE, collect
from analysis.errors import AnalysisError
from analysis.groups import groups
from analysis.markdown import markdown
from analysis.report import verdicts
from analysis.stats import t_interval
from neuralforge.config import LoggerConf, plain
from neuralforge.record.errors import ConfigError
from neuralforge.record.schema import COMPLETE, MISSING, STALE, STORED, Record, read_results
from neuralforge.trackers.base import (
    ConfigStats,
    Seed,
    SweepStats,
    enabled,
    home,
    open_writer,
    read_history,
    require,
    seed_from_record,
)

log = logging.getLogger("neuralforge.trackers")

BAND_METRICS = ("val_acc", "test_acc", "val_loss", "train_loss")  # the per-epoch means over seeds
SUMMARY_KEYS = ("n", "mean", "std", "sem", "ci_low", "ci_high", "t_low", "t_high", "min", "max")
FLOOR_KEYS = ("floor_std", "remainder_std", "binomial_std")


def export(df: pd.DataFrame, tracker: str, node: dict[str, Any] | None = None, metric: str = "test_acc",
           seed: int = 0) -> dict[str, int]:
    """Write the runs of a collected frame into `tracker` (options in `node`, as the logger
    group's); return how many runs, configs and sweeps it covered."""
    defaults = plain(OmegaConf.structured(LoggerConf))[tracker]
    unknown = sorted(set(node or {}) - set(defaults))
    if unknown:
        raise AnalysisError(f"{', '.join(unknown)} is not an option of {tracker} (its options: "
                            f"{', '.join(k for k in defaults if k != 'enabled')})")
    node = {**defaults, **(node or {})}
    try:
        require([tracker], {tracker: node})
    except ConfigError as err:
        raise AnalysisError(str(err).replace("logger.wandb.mode", "--mode")) from None
    seeds: list[Seed] = []
    records: dict[str, Record] = {}
    states: dict[str, str] = {}
    for row in df.itertuples(index=False):
        if row.status in (MISSING, UNREADABLE):
            continue  # no record to write
        rec = read_results(Path(str(row.folder)))
        if rec is None:  # a manifest's job that left none
            continue
        s = seed_from_record(Path(str(row.folder)), rec)
        seeds.append(s)
        records[s.key] = rec
        # a repeat is a complete run that statistics count once: its record says complete
        states[s.key] = str(row.status) if row.status in (*STORED, STALE) else str(rec.status)
    if not seeds:
        raise AnalysisError(f"no run records under {', '.join(df.attrs.get('roots', []))}")
    by_home: dict[Path, list[Seed]] = defaultdict(list)
    for s in seeds:
        by_home[home(s)].append(s)
    config_stats, sweep_stats = _statistics(df, seeds, metric, seed)
    for where, mine in by_home.items():
        writer = open_writer(tracker, node, where)
        try:
            writer.begin(mine)
            for s in mine:
                writer.record(s, read_history(Path(s.folder)), records[s.key], states[s.key])
            keys = {s.config.key for s in mine}
            for by_config in config_stats:
                if by_config.config.key in keys:
                    writer.config_stats(by_config)
            sweeps = {s.config.sweep.key for s in mine if s.config.sweep is not None}
            for by_sweep in sweep_stats:
                if by_sweep.sweep.key in sweeps:
                    writer.sweep_stats(by_sweep)
        finally:
            writer.close()
    return {"runs": len(seeds), "configs": len({s.config.key for s in seeds}),
            "sweeps": len({s.config.sweep.key for s in seeds if s.config.sweep is not None})}


def _statistics(df: pd.DataFrame, seeds: list[Seed], metric: str,
                seed: int) -> tuple[list[ConfigStats], list[SweepStats]]:
    """Per config, what `analysis summary` computes; per sweep, `compare`'s table and verdicts."""
    if not (df["status"] == COMPLETE).any():
        return [], []
    by_folder = {os.path.realpath(s.folder): s for s in seeds}
    summary = tables.summarize(df, metric, seed=seed)
    try:
        floor = tables.noise_floor(df)
    except AnalysisError as err:  # no test labels here (the data moved): the rest stands
        log.warning("noise floor not exported: %s", err)
        floor = pd.DataFrame()
    best = tables.expected_max(df, metric)
    out = []
    for g in groups(df):
        first = by_folder.get(os.path.realpath(g.runs["folder"].iloc[0]))
        if first is None:
            continue
        row = _row(summary, g.columns)
        if row is None:
            continue
        values = {k: float(row[k]) for k in SUMMARY_KEYS}
        frow = _row(floor, g.columns) if len(floor) else None
        if frow is not None:
            values.update({f"noise_{k}": float(frow[k]) for k in FLOOR_KEYS})
        expected = [float(v) for v in best.loc[_match(best, g.columns), "expected_best"]]
        one = summary.loc[_match(summary, g.columns)]
        one.attrs = summary.attrs
        out.append(ConfigStats(config=first.config, values=values, expected_best=expected,
                               by_epoch=_by_epoch(g.runs["folder"]), text=markdown(one)))
    sweeps = []
    for sweep in {s.config.sweep.key: s.config.sweep for s in seeds if s.config.sweep is not None}.values():
        mine = df[[os.path.realpath(f).startswith(sweep.folder + os.sep) for f in df["folder"]]]
        mine.attrs = df.attrs
        try:
            pairs = tables.compare(mine, metric=metric, seed=seed)
        except AnalysisError:  # one config: nothing to compare
            continue
        buf = io.StringIO()
        pairs.to_csv(buf, index=False)
        sweeps.append(SweepStats(sweep=sweep, compare_md=markdown(tables.compact(pairs)), compare_csv=buf.getvalue(),
                                 verdicts={f"nf.verdict.{i + 1}": line
                                           for i, line in enumerate(verdicts(pairs, metric))}))
    return out, sweeps


def _match(table: pd.DataFrame, columns: dict[str, Any]) -> pd.Series:
    mask = pd.Series(True, index=table.index)
    for k, v in columns.items():
        mask &= (table[k] == v) | (table[k].isna() & pd.isna(v))
    return mask


def _row(table: pd.DataFrame, columns: dict[str, Any]) -> pd.Series | None:
    hit = table.loc[_match(table, columns)]
    return None if hit.empty else hit.iloc[0]


def _by_epoch(folders: pd.Series) -> dict[int, dict[str, tuple[int, float, float, float]]]:
    """Per epoch and metric: over the config's complete seeds that reached it, n, the mean and
    its 95% CI (Student's t)."""
    values: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for folder in folders:
        for r in read_history(Path(folder)):
            for m in BAND_METRICS:
                if r.get(m) == r.get(m):  # NaN: no validation set
                    values[int(r["epoch"])][m].append(r[m])
    out: dict[int, dict[str, tuple[int, float, float, float]]] = {}
    for epoch, metrics in sorted(values.items()):
        out[epoch] = {}
        for m, v in metrics.items():
            low, high = t_interval(v)
            out[epoch][m] = (len(v), float(sum(v) / len(v)), low, high)
    return out


class ExportAtEnd(Callback):
    """Set by conf/logger/*.yaml: when a sweep, search or single run ends, its trackers get what
    live logging cannot know, the statistics over seeds and configs, and anything live logging
    missed. It never fails the command: a tracker that fails gives one warning line."""

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._export(Path(config.hydra.runtime.output_dir), config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._export(Path(config.hydra.sweep.dir), config)

    def _export(self, folder: Path, config: DictConfig) -> None:
        for name in enabled(config.get("logger")):
            try:
                df = collect(folder)
                export(df, name, plain(config.logger[name]))
            except Exception as err:  # the runs are done and recorded; this is their display
                log.warning("logger %s: the statistics were not exported (%s: %s): python -m analysis export %s %s",
                            name, type(err).__name__, str(err).splitlines()[0] if str(err) else "", name, folder)

