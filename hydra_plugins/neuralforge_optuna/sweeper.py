"""Hydra's Optuna sweeper, made resumable and safe to share: `hydra/sweeper=nf_optuna`.

What it changes in the stock OptunaSweeper (hydra-optuna-sweeper 1.4.0rc3):
- trial folders are named by trial number (trial_0007), never by a per-launch job counter;
- `n_trials` is the study's total: a relaunch runs only the trials still missing;
- each trial's values are drawn by the sampler reseeded with its seed plus the trial's number:
  a relaunch does not replay the first launch's proposals, and two searches asking at the same
  moment, which get different numbers, do not propose the same point;
- RUNNING trials whose process is gone are marked failed (and replaced): on this host when the
  sweeper's pid is dead, from another host when the sweeper has not refreshed the trial's
  heartbeat for `stale_after_s`;
- the study remembers the config it searches (all but the searched keys): a relaunch with
  other fixed settings (epochs, seeds per trial, ...) is refused instead of mixing trials;
- the storage folder is created first; `journal:<path>` builds Optuna's journal file storage;
- the job is told its trial (the `trial` key), and the per-seed values from its results.json
  are copied into the trial's user attributes before `tell`;
- a failed or NaN trial is told FAIL and the search goes on.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import optuna
import sqlalchemy.exc
from hydra.core.config_store import ConfigStore
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from neuralforge import records, sweeps
from neuralforge.config import flat, validate
from neuralforge.keys import RELAUNCH_MAY_CHANGE
from neuralforge.errors import ConfigError, SearchError
from neuralforge.liveness import STALE_AFTER_S, gone

log = logging.getLogger(__name__)

SAMPLER_WHITELIST = ("hydra_plugins.hydra_optuna_sweeper.*", "optuna.samplers.*")
ORPHAN_AFTER_S = 60.0  # a trial with no owner: its search died between asking and claiming it
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.FAIL)


@dataclass
class NFOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.neuralforge_optuna.sweeper.NFOptunaSweeper"
    direction: Any = "maximize"
    storage: Any = "sqlite:///${hydra.sweep.dir}/optuna.db"
    study_name: str | None = "neuralforge"
    n_jobs: int = 1
    max_failure_rate: float = 1.0  # stop once more than this fraction of the trials launched failed
    stale_after_s: float = STALE_AFTER_S


ConfigStore.instance().store(group="hydra/sweeper", name="nf_optuna", node=NFOptunaSweeperConf,
                             provider="neuralforge")


def open_storage(url: str) -> Any:
    """An Optuna storage from a URL; `journal:<path>` is a journal file (safe for many
    processes on one machine or a shared file system)."""
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:").removeprefix("//"))
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend, JournalStorage
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # a generous lock timeout: two processes on one sqlite file wait for each other
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return url


class NFOptunaSweeper(OptunaSweeper):
    def __init__(self, sampler: Any, direction: Any, storage: Any, study_name: str | None, n_trials: int,
                 n_jobs: int, max_failure_rate: float, custom_search_space: str | None,
                 params: DictConfig | None, stale_after_s: float = STALE_AFTER_S) -> None:
        if not 0.0 <= max_failure_rate <= 1.0:
            raise ConfigError(f"hydra.sweeper.max_failure_rate={max_failure_rate}: give a fraction in [0, 1]")
        self.sweeper = ResumableSweeperImpl(
            instantiate(sampler, _execution_whitelist_=SAMPLER_WHITELIST), direction, storage, study_name,
            n_trials, n_jobs, max_failure_rate, custom_search_space, params,
            sampler_config=sampler, stale_after_s=stale_after_s)


class ResumableSweeperImpl(OptunaSweeperImpl):
    def __init__(self, *args: Any, sampler_config: DictConfig, stale_after_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sampler_config, self.stale_after_s = sampler_config, stale_after_s
        self.me = {"host": socket.gethostname(), "pid": os.getpid()}

    def sweep(self, arguments: list[str]) -> None:
        assert self.config is not None and self.launcher is not None
        if self.config.data.val_size == 0:
            raise ConfigError("a search needs a validation set to choose on: data.val_size=0 would select on "
                              "the test set. Set data.val_size > 0.")
        # a bad fixed value would fail every trial, and its failed trials would then hold the
        # study to that value: refused before the study is touched
        validate(self.config)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self._process_searchspace_config()
        space, fixed, fixed_overrides = create_params_from_overrides(self._parse_sweeper_params_config() + arguments)
        for name in fixed:
            space.pop(name, None)

        study = self.open_study()
        self.check_same_search(study, space)
        self.fail_stale(study, sweep_dir)
        log.info("Study %s in %s: %d trials so far, %d asked for", study.study_name, self.storage,
                 len(study.trials), self.n_trials)

        launched = failed = 0
        while (to_go := self.n_trials - self.counted(study)) > 0:
            asked = [self.ask(study, space, fixed, fixed_overrides) for _ in range(min(to_go, self.n_jobs))]
            trials, overrides = [t for t, _ in asked], [o for _, o in asked]
            jobs = []
            for trial, job in zip(trials, overrides):
                folder = f"trial_{trial.number:04d}"
                job = (*job, f"trial={trial.number}", f"hydra.sweep.subdir={folder}")
                for key, value in {**self.me, "folder": folder, "overrides": list(job)}.items():
                    trial.set_user_attr(f"nf_{key}", value)
                jobs.append(job)
            self.write_manifest(study, sweep_dir)
            with self.heartbeat(trials):
                returns = self.launcher.launch(jobs, initial_job_idx=trials[0].number)
            for trial, ret in zip(trials, returns):
                failed += not self.tell(study, trial, ret, sweep_dir / trial.user_attrs["nf_folder"])
            launched += len(trials)
            if failed / launched > self.max_failure_rate:
                self.write_manifest(study, sweep_dir)
                raise SearchError(f"{failed} of the {launched} trials launched failed, more than "
                                  f"hydra.sweeper.max_failure_rate={self.max_failure_rate}: search stopped (the "
                                  f"trials' logs in {sweep_dir} say why; relaunch to go on)")

        self.write_manifest(study, sweep_dir)
        self.report(study, sweep_dir)

    def open_study(self) -> optuna.Study:
        """Create or load the study. Two processes that start at once on a new sqlite file both
        try to create its tables, and the loser fails: it retries and finds the winner's."""
        for attempt in range(5):
            try:
                return optuna.create_study(study_name=self.study_name, storage=open_storage(str(self.storage)),
                                           sampler=self.sampler, direction=self._get_directions()[0],
                                           load_if_exists=True)
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError, optuna.exceptions.DuplicatedStudyError):
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
            except (ImportError, sqlalchemy.exc.ArgumentError) as err:  # no driver installed; not a URL
                first = str(err).strip().splitlines()[0]
                raise ConfigError(f"hydra.sweeper.storage={self.storage} cannot be opened ({first}). Give an "
                                  f"SQLAlchemy URL (sqlite:///path, postgresql://...) whose driver is installed "
                                  f"(pip install psycopg2-binary for PostgreSQL), or journal:path.") from None
        raise AssertionError("unreachable")

    def check_same_search(self, study: optuna.Study, space: dict[str, Any]) -> None:
        """Refuse to add trials of another config to a study: only the searched keys may differ."""
        task = OmegaConf.masked_copy(self.config, [k for k in self.config if k != "hydra"])
        try:  # resolved: seeds.init=0 spells out what ${seed} gives with seed=0
            cfg = OmegaConf.to_container(task, resolve=True)
        except Exception:  # an interpolation only a job can resolve: compare as written
            cfg = OmegaConf.to_container(task, resolve=False)
        assert isinstance(cfg, dict)
        mine = {k: v for k, v in flat(cfg).items() if k not in space and k not in RELAUNCH_MAY_CHANGE}
        theirs = study.user_attrs.get("nf_config")
        if theirs is None:
            study.set_user_attr("nf_config", mine)
            return
        differ = sorted(k for k in {*mine, *theirs} if mine.get(k) != theirs.get(k))
        if differ:
            shown = "; ".join(f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} here" for k in differ[:4])
            raise ConfigError(f"study {study.study_name} in {self.storage} searches another config ({shown}). "
                              f"Use the first launch's settings, or another hydra.sweep.dir or "
                              f"hydra.sweeper.study_name.")

    @contextlib.contextmanager
    def heartbeat(self, trials: list[optuna.Trial]):
        """Refresh the trials' `nf_heartbeat` while their jobs run or wait in a queue: what a
        search on another host judges them alive by."""
        stop = threading.Event()

        def beat() -> None:
            while True:
                for t in trials:
                    try:
                        t.set_user_attr("nf_heartbeat", time.time())
                    except Exception as err:  # finished (failed by another search); the storage is down
                        log.debug("heartbeat of trial %d: %s", t.number, err)
                if stop.wait(self.stale_after_s / 6):
                    return

        thread = threading.Thread(target=beat, name="nf-trial-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def ask(self, study: optuna.Study, space: dict[str, Any], fixed: dict[str, Any],
            fixed_overrides: list[str]) -> tuple[optuna.trial.Trial, Sequence[str]]:
        """A new trial and its overrides, its values drawn with the sampler's seed plus its number.

        The number is unique in the study: two processes asking at once, which would both see
        the same count of trials, still draw differently. A sampler with no seed draws from
        fresh entropy anyway. (Samplers that draw jointly, such as CMA-ES, do so inside `ask`,
        before the reseeding; the stock samplers' independent draws come after it.)"""
        trial = study.ask()
        for key, value in self.me.items():  # at once: a search killed now leaves a trial fail_stale can judge
            trial.set_user_attr(f"nf_{key}", value)
        seed = self.sampler_config.get("seed")
        if seed is not None and not self.sampler_config.get("_partial_"):
            study.sampler = instantiate(self.sampler_config, seed=seed + trial.number,
                                        _execution_whitelist_=SAMPLER_WHITELIST)
        return trial, self._configure_trials([trial], space, fixed, fixed_overrides)[0]

    def counted(self, study: optuna.Study) -> int:
        """Trials that count toward n_trials: all but those failed because their process died."""
        return sum(1 for t in study.get_trials(deepcopy=False, states=COUNTED) if not t.user_attrs.get("nf_stale"))

    def fail_stale(self, study: optuna.Study, sweep_dir: Path) -> None:
        now = time.time()
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            host, pid = t.user_attrs.get("nf_host"), t.user_attrs.get("nf_pid")
            started = t.datetime_start.timestamp() if t.datetime_start else now
            if host is None:  # asked by a search killed before it could say whose the trial is
                stale = now - started > ORPHAN_AFTER_S
            else:  # its sweeper refreshes the heartbeat while the trial's job runs or waits in a queue
                silent_for = now - t.user_attrs.get("nf_heartbeat", started)
                stale = gone(host, pid, silent_for, self.stale_after_s, here=self.me["host"])
            if stale:
                log.warning("Trial %d was left RUNNING by a process that is gone: marking it failed", t.number)
                trial = optuna.trial.Trial(study, t._trial_id)
                trial.set_user_attr("nf_stale", True)
                study.tell(trial, state=TrialState.FAIL)

    def tell(self, study: optuna.Study, trial: optuna.Trial, ret: Any, folder: Path) -> bool:
        """Tell the study the trial's objective; False when the trial failed."""
        try:
            return self._tell(study, trial, ret, folder)
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("Trial %d was marked failed by another search while it ran; the study does not count "
                        "it (its runs stay in %s) and a new trial replaces it", trial.number, folder)
            return True  # its job did not fail

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: Any, folder: Path) -> bool:
        runs = sorted((records.read_results(p.parent) for p in folder.rglob(records.RESULTS)), key=lambda r: r["seed"])
        complete = [r for r in runs if r["status"] == records.COMPLETE]
        trial.set_user_attr("seeds", [r["seed"] for r in complete])
        for key in ("val_acc", "test_acc"):
            trial.set_user_attr(f"{key}_per_seed", [r["metrics"][key] for r in complete])
        try:
            value = float(ret.return_value)  # re-raises the job's exception
            if not math.isfinite(value):
                raise ValueError(f"objective is {value}")
        except Exception as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:2000])
            study.tell(trial, state=TrialState.FAIL)
            log.warning("Trial %d failed (%s)", trial.number, err)
            return False
        study.tell(trial, value)
        return True

    def write_manifest(self, study: optuna.Study, sweep_dir: Path) -> None:
        trials = [t for t in study.get_trials(deepcopy=False) if "nf_folder" in t.user_attrs]
        jobs = [{"trial": t.number, "overrides": t.user_attrs["nf_overrides"], "folder": t.user_attrs["nf_folder"]}
                for t in trials if not t.user_attrs.get("nf_stale")]
        # a trial replaced because its process was gone is no longer a job the sweep expects
        replaced = {t.user_attrs["nf_folder"] for t in trials if t.user_attrs.get("nf_stale")}
        sweeps.write_manifest(sweep_dir, jobs, drop=replaced, kind="optuna", study_name=study.study_name,
                              storage=str(self.storage), n_trials=self.n_trials)

    def report(self, study: optuna.Study, sweep_dir: Path) -> None:
        states = [t.state for t in study.trials]
        log.info("Study %s: %d complete, %d failed, %d running", study.study_name,
                 states.count(TrialState.COMPLETE), states.count(TrialState.FAIL), states.count(TrialState.RUNNING))
        if states.count(TrialState.COMPLETE) == 0:
            if states.count(TrialState.FAIL):  # a search in which nothing trained is a failed command
                raise SearchError(f"no trial of study {study.study_name} completed: see the trials' logs in {sweep_dir}")
            return
        best = study.best_trial
        log.info("Best trial %d: value %.6f, params %s", best.number, best.value, best.params)
        OmegaConf.save(OmegaConf.create({"name": "optuna", "study_name": study.study_name,
                                         "best_trial": best.number, "best_params": best.params,
                                         "best_value": best.value}),
                       sweep_dir / "optimization_results.yaml")
