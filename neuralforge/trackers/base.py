"""What every tracker is given: the hierarchy sweep (or search) -> config -> seed, each node's
identity, name, params and tags, and the writers' common interface.

Identity is derived from the records alone, so that a live run, its relaunch after a kill and an
export after the fact all find the same tracker runs:

- a seed run is its member folder (the real path of the folder holding results.json);
- a config run is the config with the seed keys and the keys that tell no configs apart left
  out (the partition `python -m analysis` groups runs by), under its sweep;
- a sweep run is the nearest folder above the run that holds the sweep's manifest.json; a run
  outside any sweep has no sweep run, and its config run is a top-level run.

Torch-free: `python -m analysis export` uses it too.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from neuralforge.config import flat, member_name
from neuralforge.record.errors import ConfigError
from neuralforge.record.files import HISTORY, MANIFEST
from neuralforge.record.keys import ADDED_LATER, NOT_A_CONFIG, NOT_IN_FOLDER_NAMES, SEED_KEYS, SEED_SOURCES
from neuralforge.record.schema import COMPLETE, FAILED, PRUNED, Record
from neuralforge.record.trackers import MODULES, TRACKERS, WANDB_MODES

# the states a tracker run ends in: a record's final status, or stale (judged from outside)
FINAL = (str(COMPLETE), str(FAILED), str(PRUNED))


def short_hash(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def enabled(logger_cfg: Any) -> list[str]:
    """The trackers a `logger` node turns on, in TRACKERS' order."""
    if logger_cfg is None:
        return []
    return [name for name in TRACKERS if (logger_cfg.get(name) or {}).get("enabled")]


def require(names: Iterable[str], logger_cfg: Any = None) -> None:
    """Refuse, in one line naming the extra, a tracker whose package is not installed, and a
    W&B mode that is neither offline nor online."""
    for name in names:
        if importlib.util.find_spec(MODULES[name]) is None:
            raise ConfigError(f"logger={name} needs the {MODULES[name]} package, which is not installed: "
                              f"pip install -e '.[{name}]'")
        mode = ((logger_cfg or {}).get(name) or {}).get("mode") if name == "wandb" else None
        if mode is not None and mode not in WANDB_MODES:
            raise ConfigError(f"logger.wandb.mode={mode!r} is unknown: use offline (no network; wandb sync uploads "
                              f"later) or online")


def sweep_of(folder: Path) -> Path | None:
    """The nearest folder at or above `folder` that holds a sweep's manifest."""
    for parent in [folder, *folder.parents]:
        if (parent / MANIFEST).is_file():
            return parent
    return None


def config_key(config: dict[str, Any]) -> str:
    """What makes runs repeats of one config: every key but the seeds and the keys that tell no
    configs apart (device, threads, n_seeds, trial, where the data lies, the logger)."""
    kept = {**ADDED_LATER, **flat(config)}
    return short_hash({k: v for k, v in kept.items() if k not in SEED_KEYS and k not in NOT_A_CONFIG})


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def config_name(overrides: list[str], key: str) -> str:
    """A config's name: its job's overrides without the seeds and what names no config; the
    config's key where nothing is left (a run of the base config)."""
    hidden = {*SEED_KEYS, *NOT_A_CONFIG, *NOT_IN_FOLDER_NAMES}
    kept = [o for o in overrides if override_key(o) not in hidden and not override_key(o).startswith("hydra.")]
    return ",".join(kept) or f"config {key[:8]}"


def member_label(config: dict[str, Any]) -> str:
    """seed=3, or what a group's members differ in (init=3, init_perturb=2), as their folders say;
    in a search, after the trial."""
    name = member_name(config)
    return name if config.get("trial") is None else f"trial={config['trial']},{name}"


def safe_dirname(name: str) -> str:
    text = name.replace(os.sep, "_")
    return text if len(text) <= 100 else f"{text[:80]}-{short_hash(text)[:8]}"


def read_history(folder: Path) -> list[dict[str, float]]:
    """history.csv's rows as numbers (empty when there is none)."""
    try:
        with open(Path(folder) / HISTORY, newline="") as f:
            return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]
    except FileNotFoundError:
        return []


def params_of(config: dict[str, Any]) -> dict[str, Any]:
    """A run's params: its flat config, without the logger's keys (where it is shown, not what it is)."""
    return {k: v for k, v in flat(config).items() if k != "logger" and not k.startswith("logger.")}


@dataclass
class Sweep:
    key: str
    name: str
    folder: str
    study: str | None = None  # the Optuna study of a search


@dataclass
class ConfigNode:
    key: str  # unique in its sweep (the sweep's key is part of it)
    name: str
    params: dict[str, Any]  # the flat config, without the seeds
    sweep: Sweep | None


@dataclass
class Seed:
    """One member run: one results.json."""
    key: str
    name: str
    folder: str
    group_folder: str  # the run folder: the member's own, or its group's
    config: ConfigNode
    params: dict[str, Any]  # the flat config
    tags: dict[str, str]
    started: float | None = None  # the record's start: rows are stamped from it and their seconds
    clock: dict[int, float] = field(default_factory=dict)  # epoch -> its stamp, as stamped so far


def sweep_node(folder: Path | None) -> Sweep | None:
    if folder is None:
        return None
    study = None
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        study = manifest.get("study_name") if manifest.get("kind") == "optuna" else None
    except (OSError, ValueError):
        pass
    real = os.path.realpath(folder)
    return Sweep(key=short_hash("sweep", real), name=folder.name, folder=real, study=study)


def config_node(config: dict[str, Any], overrides: list[str], sweep: Sweep | None) -> ConfigNode:
    ck = config_key(config)
    params = {k: v for k, v in params_of(config).items() if k not in SEED_KEYS}
    return ConfigNode(key=short_hash("config", sweep.key if sweep else None, ck), name=config_name(overrides, ck),
                      params=params, sweep=sweep)


def seed_tags(config: dict[str, Any], fingerprint: str, sweep: Sweep | None,
              provenance: dict[str, Any] | None) -> dict[str, str]:
    tags = {"nf.fingerprint": fingerprint, "nf.seed": str(config["seed"]),
            **{f"nf.seeds.{s}": str(config["seeds"][s]) for s in SEED_SOURCES},
            "nf.host": socket.gethostname()}
    if config.get("init_perturb"):
        tags["nf.init_perturb"] = str(config["init_perturb"])
    if config.get("trial") is not None:
        tags["nf.trial"] = str(config["trial"])
    if sweep is not None and sweep.study:
        tags["nf.study"] = sweep.study
    if provenance:
        tags.update({"nf.git_commit": str(provenance.get("git_commit")),
                     "nf.git_dirty": str(provenance.get("git_dirty")), "nf.host": str(provenance.get("host"))})
    return tags


def seed_node(folder: Path, group_folder: Path, config: dict[str, Any], fingerprint: str, overrides: list[str],
              provenance: dict[str, Any] | None = None) -> Seed:
    """The seed run of the member whose records are (or will be) in `folder`."""
    folder = Path(folder)
    sweep = sweep_node(sweep_of(folder))
    return Seed(key=short_hash("seed", os.path.realpath(folder)), name=member_label(config),
                folder=os.path.realpath(folder), group_folder=os.path.realpath(group_folder),
                config=config_node(config, overrides, sweep), params=params_of(config),
                tags=seed_tags(config, fingerprint, sweep, provenance))


def seed_from_record(folder: Path, rec: Record) -> Seed:
    # the group's folder as it lies now, not as the record wrote it (a sweep may have moved)
    group_folder = folder if rec.group.size == 1 else Path(folder).parent
    seed = seed_node(folder, group_folder, rec.config, rec.fingerprint, list(rec.overrides), rec.provenance)
    seed.started = rec.timing.started
    return seed


def record_tags(seed: Seed, rec: Record | None, state: str) -> dict[str, str]:
    """The seed run's tags once its record says more: provenance, status, error."""
    tags = dict(seed.tags)
    if rec is not None:
        tags = seed_tags(rec.config, rec.fingerprint, seed.config.sweep, rec.provenance)
    tags["nf.status"] = str(state)
    if rec is not None and rec.error:
        tags["nf.error"] = str(rec.error)[:5000]
    return tags


def stamps(seed: Seed, rows: list[dict[str, float]], now: float) -> list[float]:
    """Each row's wall time: from the record's start and the epochs' seconds, so that an export
    writes the same store twice, and a live logger's thread stamps a row as when it was written,
    not when it gets to it; the clock where no start is known."""
    if seed.started is None:
        return [now] * len(rows)
    out = []
    for row in rows:
        epoch, seconds = int(row["epoch"]), row.get("seconds") or 0.0
        before = seed.clock.get(epoch - 1, seed.started if epoch == 1 else now - seconds)
        seed.clock[epoch] = before + seconds
        out.append(seed.clock[epoch])
    return out


def final_metrics(rec: Record | None) -> dict[str, float]:
    """The record's final numbers: the chosen epoch and the metrics there, and the run's wall time."""
    if rec is None:
        return {}
    m = asdict(rec.metrics)
    out = {f"final.{k}": float(v) for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if rec.timing.wall_seconds is not None:
        out["final.wall_seconds"] = float(rec.timing.wall_seconds)
    return out


def heartbeat(rec: Record | None) -> float:
    """When the record was last written: a final value's time stamp, the same on every export."""
    return rec.timing.heartbeat if rec is not None and rec.timing.heartbeat else time.time()


@dataclass
class ConfigStats:
    """What `python -m analysis summary` computes for one config (analysis.tables)."""
    config: ConfigNode
    values: dict[str, float]  # n, mean, std, CIs, noise floor
    expected_best: list[float]  # expected best of n runs, n = 1..N
    # per epoch: {metric: (n, mean, low, high)}, the mean over the config's complete seeds and its 95% CI
    by_epoch: dict[int, dict[str, tuple[int, float, float, float]]]
    text: str  # the summary row as markdown


@dataclass
class SweepStats:
    sweep: Sweep
    compare_md: str
    compare_csv: str
    verdicts: dict[str, str]  # tag -> headline line


class Writer(ABC):
    """One tracker's store, through the tracker's own client. The live logger and the export
    both write through it: each call logs only what the store lacks."""

    name = ""

    @abstractmethod
    def begin(self, seeds: list[Seed]) -> None:
        """Find or create the sweep, config and seed runs of `seeds`, and learn the last epoch each
        one has logged."""

    @abstractmethod
    def rows(self, seed: Seed, rows: list[dict[str, float]]) -> None:
        """Log the epoch rows the seed run lacks, the epoch as the step."""

    @abstractmethod
    def final(self, seed: Seed, rec: Record | None, state: str) -> None:
        """The run's state (running, a record's final status, or stale), its final metrics and
        provenance tags; `rec` is None before the first record is written."""

    def record(self, seed: Seed, rows: list[dict[str, float]], rec: Record, state: str) -> None:
        """A whole record at once, as an export writes it: rows(), then final()."""
        self.rows(seed, rows)
        self.final(seed, rec, state)

    def config_stats(self, stats: ConfigStats) -> None:  # noqa: B027 (a tracker without derived runs skips it)
        pass

    def sweep_stats(self, stats: SweepStats) -> None:  # noqa: B027
        pass

    def close(self) -> None:  # noqa: B027
        pass


def home(seed: Seed) -> Path:
    """Where a tracker's files go by default: the folder holding the sweep folder, or holding a
    single run's folder."""
    if seed.config.sweep is not None:
        return Path(seed.config.sweep.folder).parent
    return Path(seed.group_folder).parent


def open_writer(name: str, node: Any, where: Path) -> Writer:
    """The writer of tracker `name` (its client imported here: seconds, for MLflow)."""
    if name == "mlflow":
        from neuralforge.trackers.mlflow import MLflowWriter
        return MLflowWriter(node, where)
    if name == "tensorboard":
        from neuralforge.trackers.tensorboard import TensorBoardWriter
        return TensorBoardWriter(node, where)
    from neuralforge.trackers.wandb import WandbWriter
    return WandbWriter(node, where)
