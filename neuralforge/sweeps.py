"""What a sweep folder promises and what it holds: the manifest of expected jobs, the state of
each run in it, and the summary printed when a multirun ends."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from omegaconf import DictConfig, OmegaConf

from neuralforge import records
from neuralforge.liveness import run_state, without_record

log = logging.getLogger("neuralforge.sweep")

MANIFEST = "manifest.json"
STATES = ("complete", "failed", "stale", "running", "missing", records.PRUNED)


# Hydra turns a callback's exception into a warning, so the outcome of the last sweep is
# handed to run.py, which sets the exit code.
incomplete: list[str] = []
# how to resume what a Ctrl-C stops: set where run.py's handler reads it, in the process Hydra
# started (a joblib job runs in a worker)
relaunch: list[str] = []


def expected_jobs(config: DictConfig) -> list[dict[str, Any]]:
    """The jobs Hydra's basic sweeper will launch, with the folder each one writes into."""
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides(params + list(config.hydra.overrides.task))
    # Resolve the sweep's own subdir pattern as Hydra will for each job, on an untyped copy
    # (Hydra's own config is read-only).
    cfg = OmegaConf.create(OmegaConf.to_container(config, resolve=False))
    jobs = []
    for job_overrides in BasicSweeper.split_arguments(parsed, None)[0]:
        cfg.hydra.overrides.task = job_overrides
        jobs.append({"overrides": job_overrides, "folder": str(OmegaConf.select(cfg, "hydra.sweep.subdir"))})
    return jobs


def write_manifest(sweep_dir: Path, jobs: list[dict[str, Any]], drop: set[str] = frozenset(),
                   **extra: Any) -> dict[str, Any]:
    """Add `jobs` to the sweep's manifest, and forget the folders in `drop`. A relaunch that
    widens a sweep adds its new jobs; one that reruns a subset forgets nothing."""
    path = sweep_dir / MANIFEST
    old = json.loads(path.read_text()) if path.exists() else {}
    by_folder = {j["folder"]: j for j in old.get("jobs", []) if j["folder"] not in drop}
    by_folder.update({j["folder"]: j for j in jobs})
    manifest = {**old, **extra, "updated": time.time(), "jobs": sorted(by_folder.values(), key=lambda j: j["folder"])}
    records.write_json(path, manifest)
    return manifest


def job_states(sweep_dir: Path) -> dict[str, list[Path]]:
    """Every run in the sweep folder by state (a group's members one each), plus the
    manifest's jobs that left no record: one each, as what became of them."""
    sweep_dir = Path(sweep_dir)
    found: dict[str, list[Path]] = {s: [] for s in STATES}
    for path in sorted(sweep_dir.rglob(records.RESULTS)):
        found[run_state(json.loads(path.read_text()))].append(path.parent)
    manifest = sweep_dir / MANIFEST
    if manifest.exists():
        for job in json.loads(manifest.read_text())["jobs"]:
            folder = sweep_dir / job["folder"]
            if not any(folder.rglob(records.RESULTS)):
                found[without_record(folder)].append(folder)
    return found


def summary_line(states: dict[str, list[Path]]) -> str:
    counts = Counter({s: len(v) for s, v in states.items()})
    # pruned exists only in searches that prune: said only when there are some
    return ", ".join(f"{counts[s]} {s}" for s in STATES if s != records.PRUNED or counts[s])


class SweepCallback(Callback):
    """Writes the manifest when a basic-sweeper multirun starts; prints what became of every
    job when it ends, and notes in `incomplete` a grid sweep that left any job unfinished."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        relaunch[:] = [f"the same command with hydra.sweep.dir={sweep_dir} " + (
            "resumes each job from its last finished epoch" if _is_grid(config)
            else "goes on: interrupted trials resume from their last finished epoch")]
        if not _is_grid(config):
            return  # the Optuna sweeper writes its own manifest, one trial at a time
        jobs = expected_jobs(config)
        write_manifest(sweep_dir, jobs, kind="grid")
        log.info("Sweep of %d jobs into %s", len(jobs), sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        states = job_states(sweep_dir)
        log.info("Sweep %s: %s", sweep_dir, summary_line(states))
        unfinished = [s for s in STATES if s not in ("complete", records.PRUNED)]
        for state in unfinished:
            for folder in states[state]:
                log.info("  %s: %s", state, folder)
        if not _is_grid(config):
            return
        # the exit status answers for this command's jobs: a job an earlier launch got wrong,
        # left out of this one, stays listed above without failing every later relaunch
        mine = [sweep_dir / job["folder"] for job in expected_jobs(config)]
        left = [f for s in unfinished for f in states[s] if any(f == m or m in f.parents for m in mine)]
        if left:
            incomplete.append(f"sweep {sweep_dir}: {len(left)} of this command's runs did not complete "
                              f"({summary_line(states)} in the whole sweep)")


def _is_grid(config: DictConfig) -> bool:
    return config.hydra.sweeper._target_.endswith("BasicSweeper")
