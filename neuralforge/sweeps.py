"""What a sweep folder promises and what it holds: the manifest of expected jobs, the state of
each run in it, and the summary printed when a multirun ends."""

from __future__ import annotations

import itertools
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Set
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from neuralforge.config import plain
from neuralforge.record import anatomy
from neuralforge.record.atomic import write_bytes, write_json
from neuralforge.record.errors import ConfigError, RecordError
from neuralforge.record.files import MANIFEST, RESULTS
from neuralforge.record.liveness import run_state, without_record
from neuralforge.record.schema import COMPLETE, FAILED, PRUNED, State, parse

log = logging.getLogger("neuralforge.sweep")

STATES = tuple(State)


# Hydra turns a callback's exception into a warning, so the outcome of the last sweep is
# handed to run.py, which sets the exit code.
incomplete: list[str] = []
# how to resume what a Ctrl-C stops: set where run.py's handler reads it, in the process Hydra
# started (a joblib job runs in a worker)
relaunch: list[str] = []
# a run folder's .hydra/ files as they were before Hydra rewrote them for this command: a command
# refused before it trains puts them back (run.py), so that bad input changes nothing of a run
hydra_before: dict[Path, bytes] = {}


def expected_jobs(config: DictConfig) -> list[dict[str, Any]]:
    """The jobs Hydra's basic sweeper will launch, with the folder each one writes into."""
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides(params + list(config.hydra.overrides.task))
    # Resolve the sweep's own subdir pattern as Hydra will for each job, on an untyped copy
    # (Hydra's own config is read-only).
    cfg = OmegaConf.create(plain(config))
    # what Hydra's basic sweeper does, through the parser's public API: the product of every
    # key's values, the command line's value of a key replacing the preset's
    choices: dict[str, list[str]] = {}
    for o in parsed:
        key = o.get_key_element()
        if not o.is_sweep_override():
            choices[key] = [f"{key}={o.get_value_element_as_str()}"]
        elif o.is_discrete_sweep():
            choices[key] = [f"{key}={value}" for value in o.sweep_string_iterator()]
        else:
            raise ConfigError(f"{o.input_line}: a grid sweep takes lists, range() or choice(), not "
                              f"{o.value_type.name if o.value_type else 'that'}; "
                              f"interval() is for hparams_search (Optuna)")
    jobs = []
    for job_overrides in map(list, itertools.product(*choices.values())):
        cfg.hydra.overrides.task = job_overrides
        jobs.append({"overrides": job_overrides, "folder": str(OmegaConf.select(cfg, "hydra.sweep.subdir"))})
    return jobs


def restore_hydra_files() -> None:
    """Put back the .hydra/ files Hydra rewrote for a command that was then refused."""
    for path, blob in hydra_before.items():
        write_bytes(path, blob)


def write_manifest(sweep_dir: Path, jobs: list[dict[str, Any]], drop: Set[str] = frozenset(),
                   **extra: Any) -> dict[str, Any]:
    """Add `jobs` to the sweep's manifest, and forget the folders in `drop`. A relaunch that
    widens a sweep adds its new jobs; one that reruns a subset forgets nothing."""
    path = sweep_dir / MANIFEST
    old = json.loads(path.read_text()) if path.exists() else {}
    by_folder = {j["folder"]: j for j in old.get("jobs", []) if j["folder"] not in drop}
    by_folder.update({j["folder"]: j for j in jobs})
    manifest = {**old, **extra, "updated": time.time(), "jobs": sorted(by_folder.values(), key=lambda j: j["folder"])}
    write_json(path, manifest)
    return manifest


def job_states(sweep_dir: Path) -> dict[str, list[Path]]:
    """Every run in the sweep folder by state (a group's members one each), plus the
    manifest's jobs that left no record: one each, as what became of them."""
    sweep_dir = Path(sweep_dir)
    found: dict[str, list[Path]] = {s: [] for s in STATES}
    for path in sorted(sweep_dir.rglob(RESULTS)):
        try:
            found[run_state(parse(path.read_bytes(), path))].append(path.parent)
        except RecordError as err:  # counted as failed, and said why
            log.warning("%s", err)
            found[FAILED].append(path.parent)
    manifest = sweep_dir / MANIFEST
    if manifest.exists():
        for job in json.loads(manifest.read_text())["jobs"]:
            folder = sweep_dir / job["folder"]
            if not any(folder.rglob(RESULTS)):
                found[without_record(folder)].append(folder)
    return found


def summary_line(states: dict[str, list[Path]]) -> str:
    """'N runs: k complete, ...': a group's members count one run each."""
    counts = Counter({s: len(v) for s, v in states.items()})
    # pruned exists only in searches that prune: said only when there are some
    return f"{sum(counts.values())} runs: " + ", ".join(f"{counts[s]} {s}" for s in STATES
                                                         if s != PRUNED or counts[s])


def writable_or_exit(folder: Path, key: str) -> None:
    """Stop with one line when the output folder cannot be written: Hydra's own failure there,
    opening its log file, is a long traceback that names no path."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        print(f"error: cannot write into {folder} ({err.strerror or err}): choose a writable {key}=<folder>",
              file=sys.stderr)
        # SystemExit, not an exception: Hydra turns a callback's exceptions into warnings
        raise SystemExit(1) from None


class SweepCallback(Callback):
    """Checks that the output folder can be written; writes the manifest when a basic-sweeper
    multirun starts; prints what became of every job when it ends, and notes in `incomplete` a
    grid sweep that left any job unfinished."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(config.hydra.run.dir)
        writable_or_exit(folder, "hydra.run.dir")
        if config.hydra.output_subdir is not None:
            hydra_before.clear()
            hydra_before.update({p: p.read_bytes() for p in (folder / config.hydra.output_subdir).glob("*")
                                 if p.is_file()})

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        writable_or_exit(sweep_dir, "hydra.sweep.dir")
        relaunch[:] = [f"the same command with hydra.sweep.dir={sweep_dir} " + (
            "resumes each job from its last finished epoch" if _is_grid(config)
            else "goes on: interrupted trials resume from their last finished epoch")]
        if not _is_grid(config):
            return  # the Optuna sweeper writes its own manifest, one trial at a time
        jobs = expected_jobs(config)
        extra: dict[str, Any] = {}
        if "anatomy" in (config.hydra.sweeper.get("params") or {}):
            extra["left_out"] = anatomy.left_out(config.data.augment.shift, config.model.dropout)
            for condition, why in extra["left_out"].items():
                log.info("Anatomy: %s left out (%s)", condition, why)
        write_manifest(sweep_dir, jobs, kind="grid", **extra)
        log.info("Sweep of %d jobs into %s", len(jobs), sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        stopped = sys.exc_info()[1]
        if isinstance(stopped, KeyboardInterrupt):
            return  # stopped by Ctrl-C: run.py says so in one line, with the command that resumes
        if isinstance(stopped, ConfigError) and not _is_grid(config):
            # a search refused before it ran (its trials' own errors fail the trial, not the search):
            # its one line says why, and nothing ran to summarise
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        states = job_states(sweep_dir)
        log.info("Sweep %s: %s", sweep_dir, summary_line(states))
        unfinished = [s for s in STATES if s not in (COMPLETE, PRUNED)]
        for state in unfinished:
            for folder in states[state]:
                log.info("  %s: %s", state, folder)
        if states[COMPLETE]:
            log.info("Next: python -m analysis summary %s", sweep_dir)
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
