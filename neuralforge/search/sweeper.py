"""An Optuna search as a Hydra sweeper, resumable, prunable and safe to share: `hydra/sweeper=nf_optuna`.

Built on Hydra's Sweeper plugin interface and its launchers' `launch()`, and on Optuna's public
study, ask/tell and Trial API. It keeps the stock Optuna sweeper's keys (`sampler`, `direction`,
`storage`, `study_name`, `n_trials`, `n_jobs`, `max_failure_rate`, `params`,
`custom_search_space`), its `params` grammar, and its sampler configs
(`hydra/sweeper/sampler=tpe|random|cmaes|gp|qmc|grid`, from hydra-optuna-sweeper's public
`config` module), and adds:
- trial folders named by trial number (trial_0007); the job is told its trial (`trial=7`);
- `n_trials` as the study's total: a relaunch runs only the trials still missing;
- each trial's values drawn by the sampler reseeded with its seed plus the trial's number: a
  relaunch does not replay the first launch's proposals, and two searches asking at the same
  moment, which get different numbers, do not propose the same point;
- RUNNING trials whose search is gone (on this host: its pid is dead; from another host: it has
  not refreshed the trial's heartbeat for `stale_after_s`) are resumed: their jobs are launched
  again, and train on from their last finished epoch; a trial never launched is failed;
- the study remembers the config it searches (all but the searched keys): a relaunch with
  other fixed settings (epochs, seeds per trial, ...) is refused instead of mixing trials;
- `journal:<path>` storage; the storage's folder is created first;
- pruning (`hydra/sweeper/pruner=...`): the job reports each epoch to its trial and stops when
  the pruner says so (neuralforge.search.trial.Reporter); the trial is told PRUNED;
- `objective=` (a list: multi-objective, the Pareto front in optimization_results.yaml), computed
  by the job and read back from its records;
- with a parallel launcher, `n_jobs` trials in flight at all times: each of `n_jobs` threads
  asks for a trial and launches its one job, and asks again as soon as it ends;
- a failed or NaN trial is told FAIL and the search goes on, up to `max_failure_rate`; a full
  disk stops the search, and its trial resumes on the next launch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import optuna
import sqlalchemy.exc
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from neuralforge import sweeps
from neuralforge.config import flat, plain, validate
from neuralforge.record import objective
from neuralforge.record.atomic import disk_full, write_text
from neuralforge.record.errors import ConfigError, DiskFullError, SearchError
from neuralforge.record.files import OPTIMIZATION_RESULTS, RESULTS
from neuralforge.record.keys import NOT_SEARCHABLE, RELAUNCH_MAY_CHANGE
from neuralforge.record.liveness import gone
from neuralforge.record.schema import COMPLETE, FAILED, PRUNED, read_results
from neuralforge.record.study import Attr, StudyAttr
from neuralforge.search import configs  # noqa: F401  (registers nf_optuna and its pruners)
from neuralforge.search.space import compatible, grid_of, search_space, suggest
from neuralforge.search.trial import SAMPLER_WHITELIST, build_pruner, open_storage, trial_id

log = logging.getLogger(__name__)

ORPHAN_AFTER_S = 60.0  # a trial with no owner: its search died between asking and claiming it
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.FAIL)
GRID = "optuna.samplers.GridSampler"
DEFAULT_TRIALS = 20
Direction = Literal["maximize", "minimize"]
DIRECTIONS: tuple[Direction, ...] = ("maximize", "minimize")


@dataclass(frozen=True)
class Plan:
    """What one launch of a search is, settled from its config before the study is touched."""
    space: dict[str, BaseDistribution]  # the searched keys
    fixed: list[str]  # the other overrides, as every job gets them
    grid: dict[str, list[Any]] | None  # GridSampler's points; None for other samplers
    n_trials: int  # the study's total
    workers: int  # trials in flight at once
    objectives: list[str]
    directions: list[Direction]
    pruner: optuna.pruners.BasePruner
    extend: Callable[[DictConfig, optuna.trial.Trial], None] | None  # custom_search_space


class NFOptunaSweeper(Sweeper):
    def __init__(self, sampler: Any, pruner: Any, direction: Any, storage: Any, study_name: str | None,
                 n_trials: int | None, n_jobs: int, max_failure_rate: float, params: DictConfig | None,
                 custom_search_space: str | None, stale_after_s: float) -> None:
        # kept as given: check() refuses what is wrong, in one line, before anything runs
        self.settings = dict(sampler=sampler, pruner=pruner, direction=direction, n_trials=n_trials, n_jobs=n_jobs,
                             params=params, custom_search_space=custom_search_space)
        self.storage_url, self.study_name = str(storage), study_name
        self.max_failure_rate, self.stale_after_s = max_failure_rate, stale_after_s

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)

    def sweep(self, arguments: list[str]) -> None:
        config, launcher = self.config, self.launcher
        assert config is not None and launcher is not None  # Hydra calls setup() before sweep()
        plan = self.check(config, arguments)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        storage, study = self.open_study(plan)
        self.check_same_search(study, plan, config)
        search = Search(self, plan, storage, study, sweep_dir, config, launcher)
        search.run()

    # -------------------------------------------------------------- before anything runs
    def check(self, config: DictConfig, arguments: list[str]) -> Plan:
        """Everything a trial would fail on, refused before the study is touched."""
        s = self.settings
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise ConfigError(f"hydra.sweeper.max_failure_rate={self.max_failure_rate}: give a fraction in [0, 1]")
        if s["n_jobs"] < 1:
            raise ConfigError(f"hydra.sweeper.n_jobs={s['n_jobs']}: give the number of trials to run at once (>= 1)")
        if s["n_trials"] is not None and s["n_trials"] < 1:
            raise ConfigError(f"hydra.sweeper.n_trials={s['n_trials']}: give the study's number of trials (>= 1), "
                              f"or null for {DEFAULT_TRIALS} (the grid's size with hydra/sweeper/sampler=grid)")
        target = str(s["sampler"].get("_target_", ""))
        if not target.startswith("optuna.samplers."):
            raise ConfigError(f"hydra.sweeper.sampler._target_={target} is not one of Optuna's samplers: nf_optuna "
                              f"builds optuna.samplers.* only (tpe handles several objectives; for NSGA-II give "
                              f"hydra.sweeper.sampler._target_=optuna.samplers.NSGAIISampler)")
        if config.data.val_size == 0:
            raise ConfigError("a search needs a validation set to choose on: data.val_size=0 would select on "
                              "the test set. Set data.val_size > 0.")
        # a bad fixed value would fail every trial, and its failed trials would then hold the
        # study to that value
        validate(config)
        objectives = objective.names(config.objective)
        direction = s["direction"]
        directions = [str(d) for d in (direction if OmegaConf.is_list(direction) else [direction])]
        if len(directions) != len(objectives):
            raise ConfigError(f"hydra.sweeper.direction={directions} has {len(directions)} entries for "
                              f"objective={objectives}: give one direction per objective, e.g. "
                              f"hydra.sweeper.direction=[{','.join(['maximize'] * len(objectives))}]")
        bad = [d for d in directions if d not in DIRECTIONS]
        if bad:
            raise ConfigError(f"hydra.sweeper.direction={bad[0]} is unknown: use maximize or minimize")
        chosen = [cast(Direction, d) for d in directions]
        pruner = build_pruner(OmegaConf.to_container(s["pruner"]) if s["pruner"] is not None else None)
        if len(objectives) > 1 and not isinstance(pruner, optuna.pruners.NopPruner):
            raise ConfigError(f"a pruner ({type(pruner).__name__}) with objective={objectives}: Optuna's "
                              f"pruners are single-objective; use hydra/sweeper/pruner=none or one objective")
        params = [f"{k}={v}" for k, v in (s["params"] or {}).items()]
        space, fixed = search_space(params + list(arguments))
        fixed_keys = {o.split("=", 1)[0].lstrip("+~") for o in fixed}
        space = {k: d for k, d in space.items() if k not in fixed_keys}  # fixed on the command line
        unsearchable = [k for k in space if k in NOT_SEARCHABLE]
        if unsearchable:
            raise ConfigError(f"hydra.sweeper.params.{unsearchable[0]}: {unsearchable[0]} says where, how fast or by "
                              f"whom a run computes, not what: set it on the command line instead of searching it")
        extend = get_method(s["custom_search_space"]) if s["custom_search_space"] else None
        grid = grid_of(space) if target == GRID else None
        if grid is not None and extend is not None:
            raise ConfigError("hydra/sweeper/sampler=grid searches hydra.sweeper.params only: unset "
                              "hydra.sweeper.custom_search_space")
        size = math.prod(len(v) for v in grid.values()) if grid is not None else None
        n_trials = s["n_trials"] or size or DEFAULT_TRIALS
        parallel = not str(config.hydra.launcher.get("_target_", "")).endswith("BasicLauncher")
        if s["n_jobs"] > 1 and not parallel:
            log.info("hydra.sweeper.n_jobs=%d: the basic launcher runs jobs in this process, one trial at a time "
                     "(hydra/launcher=joblib or submitit runs them side by side)", s["n_jobs"])
        return Plan(space=space, fixed=fixed, grid=grid, n_trials=min(n_trials, size) if size else n_trials,
                    workers=s["n_jobs"] if parallel else 1, objectives=objectives, directions=chosen,
                    pruner=pruner, extend=extend)

    def sampler(self, plan: Plan, offset: int = 0) -> optuna.samplers.BaseSampler:
        """The sampler, reseeded with its seed plus `offset` (when it has a seed)."""
        conf = self.settings["sampler"]
        kwargs: dict[str, Any] = {}
        if plan.grid is not None:
            kwargs.update(search_space=plan.grid, _partial_=False)
        if conf.get("seed") is not None:
            kwargs["seed"] = conf.seed + offset
        return instantiate(conf, **kwargs, _execution_whitelist_=SAMPLER_WHITELIST)

    def open_study(self, plan: Plan) -> tuple[optuna.storages.BaseStorage, optuna.Study]:
        """Create or load the study. Two processes that start at once on a new sqlite file both
        try to create its tables, and the loser fails: it retries and finds the winner's."""
        for attempt in range(5):
            try:
                storage = open_storage(self.storage_url)
                study = optuna.create_study(study_name=self.study_name, storage=storage, sampler=self.sampler(plan),
                                            pruner=plan.pruner, directions=plan.directions, load_if_exists=True)
                break
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError,
                    optuna.exceptions.DuplicatedStudyError):
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
            except (ImportError, ValueError, sqlalchemy.exc.ArgumentError) as err:  # no driver; not a URL
                first = str(err).strip().splitlines()[0]
                raise ConfigError(f"hydra.sweeper.storage={self.storage_url} cannot be opened ({first}). Give an "
                                  f"SQLAlchemy URL (sqlite:///path, postgresql+psycopg://...) whose driver is "
                                  f"installed (pip install -e '.[postgres]' for PostgreSQL), or "
                                  f"journal:path.") from None
        theirs = [d.name.lower() for d in study.directions]
        if theirs != plan.directions:
            raise ConfigError(f"study {study.study_name} in {self.storage_url} has directions {theirs}, not "
                              f"{plan.directions}: use its directions and objectives, or another "
                              f"hydra.sweeper.study_name")
        return storage, study

    def check_same_search(self, study: optuna.Study, plan: Plan, config: DictConfig) -> None:
        """Refuse to add trials of another config to a study: only the searched keys may differ."""
        task = OmegaConf.masked_copy(config, [str(k) for k in config if k != "hydra"])
        try:  # resolved: seeds.init=0 spells out what ${seed} gives with seed=0
            cfg = plain(task, resolve=True)
        except Exception:  # an interpolation only a job can resolve: compare as written
            cfg = plain(task)
        # Optuna keeps a parameter's distribution kind, and a choice's values, for the whole study
        for t in study.get_trials(deepcopy=False):
            for name, dist in t.distributions.items():
                if name in plan.space and not compatible(dist, plan.space[name]):
                    raise ConfigError(f"hydra.sweeper.params.{name}: the trials of study {study.study_name} drew it "
                                      f"from {dist}, not {plan.space[name]}: keep its choices (an interval's bounds "
                                      f"may change), or use another hydra.sweeper.study_name")
        mine = {k: v for k, v in flat(cfg).items() if k not in plan.space and k not in RELAUNCH_MAY_CHANGE}
        theirs = study.user_attrs.get(StudyAttr.CONFIG)
        if theirs is None:
            study.set_user_attr(StudyAttr.CONFIG, mine)
            return
        differ = sorted(k for k in {*mine, *theirs} if mine.get(k) != theirs.get(k))
        if differ:
            shown = "; ".join(f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} here" for k in differ[:4])
            raise ConfigError(f"study {study.study_name} in {self.storage_url} searches another config ({shown}). "
                              f"Use the first launch's settings, or another hydra.sweep.dir or "
                              f"hydra.sweeper.study_name.")


class Search:
    """One launch of a search: asks for trials, launches their jobs, tells their results, until
    the study holds plan.n_trials."""

    def __init__(self, sweeper: NFOptunaSweeper, plan: Plan, storage: optuna.storages.BaseStorage,
                 study: optuna.Study, sweep_dir: Path, config: DictConfig, launcher: Launcher) -> None:
        self.sweeper, self.plan, self.storage, self.study, self.sweep_dir = sweeper, plan, storage, study, sweep_dir
        self.config, self.launcher = config, launcher
        self.me = {Attr.HOST: socket.gethostname(), Attr.PID: os.getpid()}
        self.lock = threading.RLock()
        self.in_flight: dict[int, optuna.trial.Trial] = {}
        self.launched = self.failed = 0
        self.stop: BaseException | None = None
        self.resumed = self.take_stale()

    def run(self) -> None:
        log.info("Study %s in %s: %d trials so far, %d asked for, %d in flight at once", self.study.study_name,
                 self.sweeper.storage_url, len(self.study.trials), self.plan.n_trials, self.plan.workers)
        with self.heartbeat():
            if self.plan.workers == 1:  # in this thread: a Ctrl-C reaches the launch directly
                self.work()
            else:
                threads = [threading.Thread(target=self.work, daemon=True, name=f"nf-trials-{i}")
                           for i in range(self.plan.workers)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
        self.write_manifest()
        if self.stop is not None:
            raise self.stop
        self.report()

    def work(self) -> None:
        """Ask for a trial, launch its job, tell its result; again, until the study holds
        n_trials. One such loop per trial in flight."""
        try:
            while True:
                with self.lock:
                    if self.stop is not None:
                        return
                    if self.resumed:
                        trial = self.resumed.pop(0)
                        job = trial.user_attrs[Attr.OVERRIDES]
                        log.info("Trial %d resumes in %s", trial.number, trial.user_attrs[Attr.FOLDER])
                    elif self.counted() < self.plan.n_trials:
                        trial, job = self.ask()
                    else:
                        return
                    self.in_flight[trial.number] = trial
                    self.write_manifest()
                ret = self.launcher.launch([job], initial_job_idx=trial.number)[0]
                with self.lock:
                    del self.in_flight[trial.number]
                    state = self.tell(trial, ret, self.sweep_dir / trial.user_attrs[Attr.FOLDER])
                    self.launched += 1
                    self.failed += state == TrialState.FAIL
                    if self.failed / self.launched > self.sweeper.max_failure_rate and self.stop is None:
                        self.stop = SearchError(
                            f"{self.failed} of the {self.launched} trials launched failed, more than "
                            f"hydra.sweeper.max_failure_rate={self.sweeper.max_failure_rate}: search stopped (the "
                            f"trials' logs in {self.sweep_dir} say why; relaunch to go on)")
        except BaseException as err:
            if disk_full(err) and not isinstance(err, DiskFullError):  # the storage's own writes
                err = DiskFullError(f"no space left on the device while the search in {self.sweep_dir} wrote its "
                                    f"study (ENOSPC): free some and launch the same command again")
            with self.lock:
                self.stop = self.stop or err
            if threading.current_thread() is threading.main_thread():
                raise self.stop from None

    def ask(self) -> tuple[optuna.trial.Trial, list[str]]:
        """A new trial and its job's overrides, its values drawn with the sampler's seed plus
        its number.

        The number is unique in the study: two processes asking at once, which would both see
        the same count of trials, still draw differently. A sampler with no seed draws from
        fresh entropy anyway. (Samplers that draw jointly, such as CMA-ES, do so inside `ask`,
        before the reseeding; the stock samplers' independent draws come after it.)"""
        trial = self.study.ask()
        for key, value in self.me.items():  # at once: a search killed now leaves a trial take_stale can judge
            trial.set_user_attr(key, value)
        if self.plan.grid is None:  # GridSampler draws no values: each trial takes a grid point not yet visited
            self.study.sampler = self.sweeper.sampler(self.plan, trial.number)
        for name, dist in self.plan.space.items():
            suggest(trial, name, dist)
        if self.plan.extend is not None:
            self.plan.extend(self.config, trial)
        folder = f"trial_{trial.number:04d}"
        job = [*(f"{k}={v}" for k, v in trial.params.items()), *self.plan.fixed, f"trial={trial.number}",
               f"hydra.sweep.subdir={folder}"]
        # the folder last: a trial that has it has the others (another search may read them at any moment)
        for key, value in {Attr.OVERRIDES: job, Attr.HEARTBEAT: time.time(), Attr.FOLDER: folder}.items():
            trial.set_user_attr(key, value)
        return trial, job

    def counted(self) -> int:
        """Trials that count toward n_trials: all but those failed because their process died."""
        return sum(1 for t in self.study.get_trials(deepcopy=False, states=COUNTED) if not t.user_attrs.get(Attr.STALE))

    def take_stale(self) -> list[optuna.trial.Trial]:
        """RUNNING trials whose search is gone: those launched are taken over, to be launched
        again (their jobs resume from their last epoch); the others are marked failed."""
        now, taken = time.time(), []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            host, pid = t.user_attrs.get(Attr.HOST), t.user_attrs.get(Attr.PID)
            started = t.datetime_start.timestamp() if t.datetime_start else now
            if host is None:  # asked by a search killed before it could say whose the trial is
                stale = now - started > ORPHAN_AFTER_S
            elif (host, pid) == (self.me[Attr.HOST], self.me[Attr.PID]):
                stale = True  # this process's pid, from a search before this one: in this process, or one that had it
            else:  # its sweeper refreshes the heartbeat while the trial's job runs or waits in a queue
                silent_for = now - t.user_attrs.get(Attr.HEARTBEAT, started)
                stale = gone(host, pid, silent_for, self.sweeper.stale_after_s, here=socket.gethostname())
            if not stale:
                continue
            trial = optuna.trial.Trial(self.study, trial_id(self.study, self.storage, t.number))
            if Attr.FOLDER in t.user_attrs:
                for key, value in {**self.me, Attr.HEARTBEAT: now}.items():
                    trial.set_user_attr(key, value)
                taken.append(trial)
                log.warning("Trial %d was left RUNNING by a process that is gone: this search resumes it", t.number)
            else:
                log.warning("Trial %d was left RUNNING, never launched, by a process that is gone: marking it "
                            "failed", t.number)
                trial.set_user_attr(Attr.STALE, True)
                self.study.tell(trial, state=TrialState.FAIL)
        return taken

    @contextlib.contextmanager
    def heartbeat(self) -> Iterator[None]:
        """Refresh the in-flight trials' heartbeat while their jobs run or wait in a queue: what a
        search on another host judges them alive by."""
        stop = threading.Event()

        def beat() -> None:
            while True:
                with self.lock:
                    trials = list(self.in_flight.values())
                for t in trials:
                    try:
                        t.set_user_attr(Attr.HEARTBEAT, time.time())
                    except Exception as err:  # finished (failed by another search); the storage is down
                        log.debug("heartbeat of trial %d: %s", t.number, err)
                if stop.wait(self.sweeper.stale_after_s / 6):
                    return

        thread = threading.Thread(target=beat, name="nf-trial-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def tell(self, trial: optuna.trial.Trial, ret: Any, folder: Path) -> TrialState:
        """Tell the study the trial's result; the state it was told."""
        if self.storage.get_trial(trial_id(self.study, self.storage, trial.number)).state.is_finished():
            log.warning("Trial %d was marked failed by another search while it ran; the study does not count "
                        "it (its runs stay in %s) and a new trial replaces it", trial.number, folder)
            return TrialState.COMPLETE  # its job did not fail
        try:
            return self.tell_result(trial, ret, folder)
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("Trial %d was marked failed by another search while it ran; the study does not count "
                        "it (its runs stay in %s) and a new trial replaces it", trial.number, folder)
            return TrialState.COMPLETE  # its job did not fail
        except RuntimeError as err:
            # GridSampler stops the study once its grid is done, which Optuna allows only inside
            # study.optimize; the trial's state is stored before that
            if self.plan.grid is None or "Study.stop" not in str(err):
                raise
            return self.study.trials[trial.number].state

    def tell_result(self, trial: optuna.trial.Trial, ret: Any, folder: Path) -> TrialState:
        """The trial's state and values, from what its job wrote: its records' status and objective."""
        runs = sorted((r for r in (read_results(p.parent) for p in folder.rglob(RESULTS)) if r is not None),
                      key=lambda r: r.seed)
        statuses = {r.status for r in runs}
        if PRUNED in statuses and FAILED not in statuses:
            log.info("Trial %d pruned after epoch %d", trial.number, max(r.metrics.epochs_run for r in runs))
            self.study.tell(trial, state=TrialState.PRUNED)  # its job recorded the pruning, and returned NaN
            return TrialState.PRUNED
        try:
            _ = ret.return_value  # re-raises the job's exception
            done = [r for r in runs if r.status == COMPLETE]
            # the job's objective, as it computed and recorded it (records older than that field: the same function)
            recorded = done[0].objective if done and done[0].objective else objective.of(done, self.plan.objectives)
            values = [recorded[name] for name in self.plan.objectives]
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"objective is {values}")
        except DiskFullError:
            raise  # stops the search: the trial stays RUNNING, and resumes on the next launch
        except Exception as err:
            trial.set_user_attr(Attr.ERROR, f"{type(err).__name__}: {err}"[:2000])
            log.warning("Trial %d failed (%s)", trial.number, err)
            self.study.tell(trial, state=TrialState.FAIL)
            return TrialState.FAIL
        self.study.tell(trial, values)
        return TrialState.COMPLETE

    # -------------------------------------------------------------- what the sweep holds
    def write_manifest(self) -> None:
        trials = [t for t in self.study.get_trials(deepcopy=False) if Attr.FOLDER in t.user_attrs]
        jobs = [{"trial": t.number, "overrides": t.user_attrs[Attr.OVERRIDES], "folder": t.user_attrs[Attr.FOLDER]}
                for t in trials if not t.user_attrs.get(Attr.STALE)]
        # a trial failed because its process was gone is no longer a job the sweep expects
        replaced = {t.user_attrs[Attr.FOLDER] for t in trials if t.user_attrs.get(Attr.STALE)}
        sweeps.write_manifest(self.sweep_dir, jobs, drop=replaced, kind="optuna", study_name=self.study.study_name,
                              storage=self.sweeper.storage_url, n_trials=self.plan.n_trials)

    def report(self) -> None:
        study = self.study
        states = [t.state for t in study.trials]
        log.info("Study %s: %d trials: %d complete, %d pruned, %d failed, %d running", study.study_name, len(states),
                 states.count(TrialState.COMPLETE), states.count(TrialState.PRUNED), states.count(TrialState.FAIL),
                 states.count(TrialState.RUNNING))
        if states.count(TrialState.COMPLETE) == 0:
            if states.count(TrialState.FAIL):  # a search in which nothing trained is a failed command
                raise SearchError(f"no trial of study {study.study_name} completed: see the trials' logs in "
                                  f"{self.sweep_dir}")
            return
        result: dict[str, Any] = {"name": "optuna", "study_name": study.study_name, "objective": self.plan.objectives,
                                  "direction": self.plan.directions}
        if len(self.plan.objectives) == 1:
            best = study.best_trial
            log.info("Best trial %d: %s, params %s", best.number,
                     objective.shown({self.plan.objectives[0]: float(best.values[0])}), best.params)
            result.update(best_trial=best.number, best_params=best.params, best_value=best.value)
        else:
            front = sorted(study.best_trials, key=lambda t: t.number)
            log.info("Pareto front: %s", "; ".join(
                f"trial {t.number} ({objective.shown(dict(zip(self.plan.objectives, t.values)))})" for t in front))
            result["pareto_front"] = [{"trial": t.number, "values": dict(zip(self.plan.objectives, t.values)),
                                       "params": t.params} for t in front]
        write_text(self.sweep_dir / OPTIMIZATION_RESULTS, OmegaConf.to_yaml(OmegaConf.create(result)))
