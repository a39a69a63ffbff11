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
  the pruner says so (neuralforge.search.Reporter); the trial is told PRUNED;
- `objective=` (a list: multi-objective, the Pareto front in optimization_results.yaml);
- with a parallel launcher, `n_jobs` trials in flight at all times: each of `n_jobs` threads
  asks for a trial and launches its one job, and asks again as soon as it ends;
- the per-seed values from a trial's records in its user attributes; a failed or NaN trial
  is told FAIL and the search goes on, up to `max_failure_rate`.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
# hydra-optuna-sweeper's public config module: registers the sampler configs (hydra/sweeper/sampler=tpe, ...)
import hydra_plugins.hydra_optuna_sweeper.config  # noqa: F401
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, Transformer
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method, instantiate
from omegaconf import MISSING, DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from neuralforge import records, sweeps
from neuralforge.config import flat, validate
from neuralforge.keys import NOT_SEARCHABLE, RELAUNCH_MAY_CHANGE
from neuralforge.errors import ConfigError, SearchError
from neuralforge.liveness import STALE_AFTER_S, gone
from neuralforge.pruners import SeedNoisePruner
from neuralforge.search import (OBJECTIVES, SAMPLER_WHITELIST, build_pruner, objectives, open_storage,
                                trial_id)

log = logging.getLogger(__name__)

ORPHAN_AFTER_S = 60.0  # a trial with no owner: its search died between asking and claiming it
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.FAIL)
GRID = "optuna.samplers.GridSampler"


def shown(objective: str, value: float) -> str:
    """An objective's value as every other line shows it: accuracies in percent."""
    return f"{100 * value:.2f}%" if objective.startswith("val_acc") else f"{value:.4g}"


# ------------------------------------------------------------------ configs
@dataclass
class NopPrunerConf:
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class MedianPrunerConf:
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class PercentilePrunerConf(MedianPrunerConf):
    _target_: str = "optuna.pruners.PercentilePruner"
    percentile: float = 25.0


@dataclass
class SuccessiveHalvingPrunerConf:
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0


@dataclass
class HyperbandPrunerConf:
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3
    bootstrap_count: int = 0


@dataclass
class WilcoxonPrunerConf:
    _target_: str = "optuna.pruners.WilcoxonPruner"
    p_threshold: float = 0.1
    n_startup_steps: int = 2


_SEED_NOISE = inspect.signature(SeedNoisePruner).parameters  # its defaults, said once, in the class


@dataclass
class SeedNoisePrunerConf:
    _target_: str = "neuralforge.pruners.SeedNoisePruner"
    k: float = _SEED_NOISE["k"].default
    percentile: float = _SEED_NOISE["percentile"].default
    n_startup_trials: int = _SEED_NOISE["n_startup_trials"].default
    n_warmup_steps: int = _SEED_NOISE["n_warmup_steps"].default


PRUNERS = {"none": NopPrunerConf, "median": MedianPrunerConf, "percentile": PercentilePrunerConf,
           "successive_halving": SuccessiveHalvingPrunerConf, "hyperband": HyperbandPrunerConf,
           "wilcoxon": WilcoxonPrunerConf, "seed_noise": SeedNoisePrunerConf}


@dataclass
class NFOptunaSweeperConf:
    _target_: str = "hydra_plugins.neuralforge_optuna.sweeper.NFOptunaSweeper"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])
    sampler: Any = MISSING
    pruner: Any = MISSING
    direction: Any = "maximize"  # or a list, one per objective
    storage: Any = "sqlite:///${hydra.sweep.dir}/optuna.db"
    study_name: str | None = "neuralforge"
    n_trials: int | None = None  # the study's total; null: 20, or the size of the grid
    n_jobs: int = 1  # trials in flight at once (with a parallel launcher)
    max_failure_rate: float = 1.0  # stop once more than this fraction of the trials launched failed
    params: dict[str, str] | None = None
    custom_search_space: str | None = None  # a function (cfg, optuna.trial.Trial) that suggests more
    stale_after_s: float = STALE_AFTER_S


cs = ConfigStore.instance()
cs.store(group="hydra/sweeper", name="nf_optuna", node=NFOptunaSweeperConf, provider="neuralforge")
for _name, _node in PRUNERS.items():
    cs.store(group="hydra/sweeper/pruner", name=_name, node=_node, provider="neuralforge")


# ------------------------------------------------------------------ search space
def search_space(arguments: list[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """The sweep overrides as Optuna distributions, and the other overrides as they are."""
    space: dict[str, BaseDistribution] = {}
    fixed: list[str] = []
    for override in OverridesParser.create().parse_overrides(arguments):
        if override.is_sweep_override():
            space[override.get_key_element()] = distribution(override)
        else:
            fixed.append(override.input_line or f"{override.get_key_element()}={override.get_value_element_as_str()}")
    return space, fixed


def distribution(override: Override) -> BaseDistribution:
    """choice(...) and range(...) of values, and interval(...) (tag(log, ...) for a log scale)."""
    key = override.get_key_element()
    if override.is_interval_sweep():
        value = override.value()
        assert isinstance(value, IntervalSweep)
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    values = list(override.sweep_iterator(transformer=Transformer.encode))
    if not values:
        raise ConfigError(f"hydra.sweeper.params.{key}: {override.input_line} holds no value")
    if override.is_range_sweep() and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        steps = {Decimal(str(b)) - Decimal(str(a)) for a, b in zip(values, values[1:])}
        if len(steps) <= 1 and all(s > 0 for s in steps):
            step = steps.pop() if steps else 1
            if all(isinstance(v, int) for v in values):
                return IntDistribution(values[0], values[-1], step=int(step))
            return FloatDistribution(float(values[0]), float(values[-1]), step=float(step))
    return CategoricalDistribution(values)


def grid_of(space: dict[str, BaseDistribution]) -> dict[str, list[Any]]:
    """The points GridSampler searches: each parameter's values."""
    grid = {}
    for name, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            grid[name] = list(dist.choices)
        elif isinstance(dist, IntDistribution) and not dist.log:
            grid[name] = list(range(dist.low, dist.high + 1, dist.step))
        elif isinstance(dist, FloatDistribution) and dist.step is not None:
            n = round((dist.high - dist.low) / dist.step)
            grid[name] = [float(Decimal(str(dist.low)) + k * Decimal(str(dist.step))) for k in range(n + 1)]
        else:
            raise ConfigError(f"hydra/sweeper/sampler=grid searches values: hydra.sweeper.params.{name} is an "
                              f"interval; give it as choice(...) or range(...)")
    return grid


def compatible(a: BaseDistribution, b: BaseDistribution) -> bool:
    if isinstance(a, CategoricalDistribution) or isinstance(b, CategoricalDistribution):
        return a == b
    return type(a) is type(b) and a.log == b.log  # type: ignore[attr-defined]


def suggest(trial: optuna.trial.Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    assert isinstance(dist, FloatDistribution)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


# ------------------------------------------------------------------ the sweeper
class NFOptunaSweeper(Sweeper):
    def __init__(self, sampler: Any, pruner: Any, direction: Any, storage: Any, study_name: str | None,
                 n_trials: int | None, n_jobs: int, max_failure_rate: float, params: DictConfig | None,
                 custom_search_space: str | None, stale_after_s: float = STALE_AFTER_S) -> None:
        if not 0.0 <= max_failure_rate <= 1.0:
            raise ConfigError(f"hydra.sweeper.max_failure_rate={max_failure_rate}: give a fraction in [0, 1]")
        if n_jobs < 1:
            raise ConfigError(f"hydra.sweeper.n_jobs={n_jobs}: give the number of trials to run at once (>= 1)")
        target = str(sampler.get("_target_", ""))
        if not target.startswith("optuna.samplers."):
            raise ConfigError(f"hydra.sweeper.sampler._target_={target} is not one of Optuna's samplers: nf_optuna "
                              f"builds optuna.samplers.* only (tpe handles several objectives; for NSGA-II give "
                              f"hydra.sweeper.sampler._target_=optuna.samplers.NSGAIISampler)")
        self.sampler_config = sampler
        self.pruner = build_pruner(pruner)
        self.directions = [getattr(d, "name", d) for d in (direction if OmegaConf.is_list(direction)
                                                             or isinstance(direction, list) else [direction])]
        self.storage_url, self.study_name = str(storage), study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.params, self.stale_after_s = params, stale_after_s
        self.extend = get_method(custom_search_space) if custom_search_space else None
        self.me = {"host": socket.gethostname(), "pid": os.getpid()}
        self.lock = threading.RLock()
        self.in_flight: dict[int, optuna.trial.Trial] = {}
        self.config: DictConfig | None = None
        # settled by check() from the config; what a search without a config (a test's) has
        self.objectives, self.grid, self.workers = ["val_acc"], None, 1

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)

    # -------------------------------------------------------------- the search
    def sweep(self, arguments: list[str]) -> None:
        assert self.config is not None
        self.sweep_dir = Path(self.config.hydra.sweep.dir)
        space, fixed = self.check(arguments)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        study = self.open_study()
        self.check_same_search(study, space)
        resumed = self.take_stale(study)
        log.info("Study %s in %s: %d trials so far, %d asked for, %d in flight at once", study.study_name,
                 self.storage_url, len(study.trials), self.n_trials, self.workers)
        self.launched = self.failed = 0
        self.stop: BaseException | None = None
        with self.heartbeat():
            if self.workers == 1:  # in this thread: a Ctrl-C reaches the launch directly
                self.work(study, space, fixed, resumed)
            else:
                threads = [threading.Thread(target=self.work, args=(study, space, fixed, resumed), daemon=True,
                                            name=f"nf-trials-{i}") for i in range(self.workers)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
        self.write_manifest(study)
        if self.stop is not None:
            raise self.stop
        self.report(study)

    def check(self, arguments: list[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
        """Everything a trial would fail on, refused before the study is touched."""
        assert self.config is not None
        if self.config.data.val_size == 0:
            raise ConfigError("a search needs a validation set to choose on: data.val_size=0 would select on "
                              "the test set. Set data.val_size > 0.")
        # a bad fixed value would fail every trial, and its failed trials would then hold the
        # study to that value
        validate(self.config)
        self.objectives = objectives(self.config)
        if len(self.directions) != len(self.objectives):
            raise ConfigError(f"hydra.sweeper.direction={self.directions} has {len(self.directions)} entries for "
                              f"objective={self.objectives}: give one direction per objective, e.g. "
                              f"hydra.sweeper.direction=[{','.join(['maximize'] * len(self.objectives))}]")
        bad = [d for d in self.directions if d not in ("maximize", "minimize")]
        if bad:
            raise ConfigError(f"hydra.sweeper.direction={bad[0]} is unknown: use maximize or minimize")
        if len(self.objectives) > 1 and not isinstance(self.pruner, optuna.pruners.NopPruner):
            raise ConfigError(f"a pruner ({type(self.pruner).__name__}) with objective={self.objectives}: Optuna's "
                              f"pruners are single-objective; use hydra/sweeper/pruner=none or one objective")
        params = [f"{k}={v}" for k, v in (self.params or {}).items()]
        space, fixed = search_space(params + list(arguments))
        fixed_keys = {o.split("=", 1)[0].lstrip("+~") for o in fixed}
        space = {k: d for k, d in space.items() if k not in fixed_keys}  # fixed on the command line
        unsearchable = [k for k in space if k in NOT_SEARCHABLE]
        if unsearchable:
            raise ConfigError(f"hydra.sweeper.params.{unsearchable[0]}: {unsearchable[0]} says where, how fast or by "
                              f"whom a run computes, not what: set it on the command line instead of searching it")
        self.grid = grid_of(space) if self.sampler_config.get("_target_") == GRID else None
        if self.grid is not None and self.extend is not None:
            raise ConfigError("hydra/sweeper/sampler=grid searches hydra.sweeper.params only: unset "
                              "hydra.sweeper.custom_search_space")
        size = math.prod(len(v) for v in self.grid.values()) if self.grid is not None else None
        self.n_trials = min(self.n_trials or size, size) if size else (self.n_trials or 20)
        parallel = not str(self.config.hydra.launcher.get("_target_", "")).endswith("BasicLauncher")
        self.workers = self.n_jobs if parallel else 1
        if self.n_jobs > 1 and not parallel:
            log.info("hydra.sweeper.n_jobs=%d: the basic launcher runs jobs in this process, one trial at a time "
                     "(hydra/launcher=joblib or submitit runs them side by side)", self.n_jobs)
        return space, fixed

    def sampler(self, offset: int = 0) -> optuna.samplers.BaseSampler:
        """The sampler, reseeded with its seed plus `offset` (when it has a seed)."""
        conf, kwargs = self.sampler_config, {}
        if self.grid is not None:
            kwargs.update(search_space=self.grid, _partial_=False)
        if conf.get("seed") is not None:
            kwargs["seed"] = conf.seed + offset
        return instantiate(conf, **kwargs, _execution_whitelist_=SAMPLER_WHITELIST)

    def open_study(self) -> optuna.Study:
        """Create or load the study. Two processes that start at once on a new sqlite file both
        try to create its tables, and the loser fails: it retries and finds the winner's."""
        for attempt in range(5):
            try:
                self.storage = open_storage(self.storage_url)
                study = optuna.create_study(study_name=self.study_name, storage=self.storage,
                                            sampler=self.sampler(), pruner=self.pruner,
                                            directions=self.directions, load_if_exists=True)
                break
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError, optuna.exceptions.DuplicatedStudyError):
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
            except (ImportError, ValueError, sqlalchemy.exc.ArgumentError) as err:  # no driver; not a URL
                first = str(err).strip().splitlines()[0]
                raise ConfigError(f"hydra.sweeper.storage={self.storage_url} cannot be opened ({first}). Give an "
                                  f"SQLAlchemy URL (sqlite:///path, postgresql://...) whose driver is installed "
                                  f"(pip install psycopg2-binary for PostgreSQL), or journal:path.") from None
        theirs = [d.name.lower() for d in study.directions]
        if theirs != self.directions:
            raise ConfigError(f"study {study.study_name} in {self.storage_url} has directions {theirs}, not "
                              f"{self.directions}: use its directions and objectives, or another "
                              f"hydra.sweeper.study_name")
        return study

    def check_same_search(self, study: optuna.Study, space: dict[str, Any]) -> None:
        """Refuse to add trials of another config to a study: only the searched keys may differ."""
        assert self.config is not None
        task = OmegaConf.masked_copy(self.config, [k for k in self.config if k != "hydra"])
        try:  # resolved: seeds.init=0 spells out what ${seed} gives with seed=0
            cfg = OmegaConf.to_container(task, resolve=True)
        except Exception:  # an interpolation only a job can resolve: compare as written
            cfg = OmegaConf.to_container(task, resolve=False)
        assert isinstance(cfg, dict)
        # Optuna keeps a parameter's distribution kind, and a choice's values, for the whole study
        for t in study.get_trials(deepcopy=False):
            for name, dist in t.distributions.items():
                if name in space and not compatible(dist, space[name]):
                    raise ConfigError(f"hydra.sweeper.params.{name}: the trials of study {study.study_name} drew it "
                                      f"from {dist}, not {space[name]}: keep its choices (an interval's bounds may "
                                      f"change), or use another hydra.sweeper.study_name")
        mine = {k: v for k, v in flat(cfg).items() if k not in space and k not in RELAUNCH_MAY_CHANGE}
        theirs = study.user_attrs.get("nf_config")
        if theirs is None:
            study.set_user_attr("nf_config", mine)
            return
        differ = sorted(k for k in {*mine, *theirs} if mine.get(k) != theirs.get(k))
        if differ:
            shown = "; ".join(f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} here" for k in differ[:4])
            raise ConfigError(f"study {study.study_name} in {self.storage_url} searches another config ({shown}). "
                              f"Use the first launch's settings, or another hydra.sweep.dir or "
                              f"hydra.sweeper.study_name.")

    def work(self, study: optuna.Study, space: dict[str, BaseDistribution], fixed: list[str],
             resumed: list[optuna.trial.Trial]) -> None:
        """Ask for a trial, launch its job, tell its result; again, until the study holds
        n_trials. One such loop per trial in flight."""
        try:
            while True:
                with self.lock:
                    if self.stop is not None:
                        return
                    if resumed:
                        trial = resumed.pop(0)
                        job = trial.user_attrs["nf_overrides"]
                        log.info("Trial %d resumes in %s", trial.number, trial.user_attrs["nf_folder"])
                    elif self.counted(study) < self.n_trials:
                        trial, job = self.ask(study, space, fixed)
                    else:
                        return
                    self.in_flight[trial.number] = trial
                    self.write_manifest(study)
                ret = self.launcher.launch([job], initial_job_idx=trial.number)[0]
                with self.lock:
                    del self.in_flight[trial.number]
                    state = self.tell(study, trial, ret, self.sweep_dir / trial.user_attrs["nf_folder"])
                    self.launched += 1
                    self.failed += state == TrialState.FAIL
                    if self.failed / self.launched > self.max_failure_rate and self.stop is None:
                        self.stop = SearchError(
                            f"{self.failed} of the {self.launched} trials launched failed, more than "
                            f"hydra.sweeper.max_failure_rate={self.max_failure_rate}: search stopped (the trials' "
                            f"logs in {self.sweep_dir} say why; relaunch to go on)")
        except BaseException as err:
            with self.lock:
                self.stop = self.stop or err
            if threading.current_thread() is threading.main_thread():
                raise

    def ask(self, study: optuna.Study, space: dict[str, BaseDistribution],
            fixed: list[str]) -> tuple[optuna.trial.Trial, list[str]]:
        """A new trial and its job's overrides, its values drawn with the sampler's seed plus
        its number.

        The number is unique in the study: two processes asking at once, which would both see
        the same count of trials, still draw differently. A sampler with no seed draws from
        fresh entropy anyway. (Samplers that draw jointly, such as CMA-ES, do so inside `ask`,
        before the reseeding; the stock samplers' independent draws come after it.)"""
        trial = study.ask()
        for key, value in self.me.items():  # at once: a search killed now leaves a trial take_stale can judge
            trial.set_user_attr(f"nf_{key}", value)
        if self.grid is None:  # GridSampler draws no values: each trial takes a grid point not yet visited
            study.sampler = self.sampler(trial.number)
        for name, dist in space.items():
            suggest(trial, name, dist)
        if self.extend is not None:
            self.extend(self.config, trial)
        folder = f"trial_{trial.number:04d}"
        job = [*(f"{k}={v}" for k, v in trial.params.items()), *fixed, f"trial={trial.number}",
               f"hydra.sweep.subdir={folder}"]
        # nf_folder last: a trial that has it has the others (another search may read them at any moment)
        for key, value in {"overrides": job, "heartbeat": time.time(), "folder": folder}.items():
            trial.set_user_attr(f"nf_{key}", value)
        return trial, job

    def counted(self, study: optuna.Study) -> int:
        """Trials that count toward n_trials: all but those failed because their process died."""
        return sum(1 for t in study.get_trials(deepcopy=False, states=COUNTED) if not t.user_attrs.get("nf_stale"))

    def take_stale(self, study: optuna.Study) -> list[optuna.trial.Trial]:
        """RUNNING trials whose search is gone: those launched are taken over, to be launched
        again (their jobs resume from their last epoch); the others are marked failed."""
        now, taken = time.time(), []
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            host, pid = t.user_attrs.get("nf_host"), t.user_attrs.get("nf_pid")
            started = t.datetime_start.timestamp() if t.datetime_start else now
            if host is None:  # asked by a search killed before it could say whose the trial is
                stale = now - started > ORPHAN_AFTER_S
            else:  # its sweeper refreshes the heartbeat while the trial's job runs or waits in a queue
                silent_for = now - t.user_attrs.get("nf_heartbeat", started)
                stale = gone(host, pid, silent_for, self.stale_after_s, here=self.me["host"])
            if not stale:
                continue
            trial = optuna.trial.Trial(study, trial_id(study, self.storage, t.number))
            if "nf_folder" in t.user_attrs:
                for key, value in {**self.me, "heartbeat": now}.items():
                    trial.set_user_attr(f"nf_{key}", value)
                taken.append(trial)
                log.warning("Trial %d was left RUNNING by a process that is gone: this search resumes it", t.number)
            else:
                log.warning("Trial %d was left RUNNING, never launched, by a process that is gone: marking it "
                            "failed", t.number)
                trial.set_user_attr("nf_stale", True)
                study.tell(trial, state=TrialState.FAIL)
        return taken

    @contextlib.contextmanager
    def heartbeat(self):
        """Refresh the in-flight trials' `nf_heartbeat` while their jobs run or wait in a queue:
        what a search on another host judges them alive by."""
        stop = threading.Event()

        def beat() -> None:
            while True:
                with self.lock:
                    trials = list(self.in_flight.values())
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

    def tell(self, study: optuna.Study, trial: optuna.trial.Trial, ret: Any, folder: Path) -> TrialState:
        """Tell the study the trial's result; the state it was told."""
        try:
            return self.tell_result(study, trial, ret, folder)
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("Trial %d was marked failed by another search while it ran; the study does not count "
                        "it (its runs stay in %s) and a new trial replaces it", trial.number, folder)
            return TrialState.COMPLETE  # its job did not fail
        except RuntimeError as err:
            # GridSampler stops the study once its grid is done, which Optuna allows only inside
            # study.optimize; the trial's state is stored before that
            if self.grid is None or "Study.stop" not in str(err):
                raise
            return study.trials[trial.number].state

    def tell_result(self, study: optuna.Study, trial: optuna.trial.Trial, ret: Any, folder: Path) -> TrialState:
        runs = sorted((records.read_results(p.parent) for p in folder.rglob(records.RESULTS)), key=lambda r: r["seed"])
        done = [r for r in runs if r["status"] in (records.COMPLETE, records.PRUNED)]
        trial.set_user_attr("seeds", [r["seed"] for r in done])
        for key in ("val_acc", "test_acc"):
            trial.set_user_attr(f"{key}_per_seed", [r["metrics"][key] for r in done])
        statuses = {r["status"] for r in runs}
        if records.PRUNED in statuses and records.FAILED not in statuses:
            log.info("Trial %d pruned after epoch %d", trial.number, max(r["metrics"]["epochs_run"] for r in runs))
            study.tell(trial, state=TrialState.PRUNED)  # its job recorded the pruning, and returned NaN
            return TrialState.PRUNED
        try:
            ret.return_value  # re-raises the job's exception
            values = [OBJECTIVES[name](done) for name in self.objectives]
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"objective is {values}")
        except Exception as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:2000])
            log.warning("Trial %d failed (%s)", trial.number, err)
            study.tell(trial, state=TrialState.FAIL)
            return TrialState.FAIL
        study.tell(trial, values)
        return TrialState.COMPLETE

    # -------------------------------------------------------------- what the sweep holds
    def write_manifest(self, study: optuna.Study) -> None:
        trials = [t for t in study.get_trials(deepcopy=False) if "nf_folder" in t.user_attrs]
        jobs = [{"trial": t.number, "overrides": t.user_attrs["nf_overrides"], "folder": t.user_attrs["nf_folder"]}
                for t in trials if not t.user_attrs.get("nf_stale")]
        # a trial failed because its process was gone is no longer a job the sweep expects
        replaced = {t.user_attrs["nf_folder"] for t in trials if t.user_attrs.get("nf_stale")}
        sweeps.write_manifest(self.sweep_dir, jobs, drop=replaced, kind="optuna", study_name=study.study_name,
                              storage=self.storage_url, n_trials=self.n_trials)

    def report(self, study: optuna.Study) -> None:
        states = [t.state for t in study.trials]
        log.info("Study %s: %d trials: %d complete, %d pruned, %d failed, %d running", study.study_name, len(states),
                 states.count(TrialState.COMPLETE), states.count(TrialState.PRUNED), states.count(TrialState.FAIL),
                 states.count(TrialState.RUNNING))
        if states.count(TrialState.COMPLETE) == 0:
            if states.count(TrialState.FAIL):  # a search in which nothing trained is a failed command
                raise SearchError(f"no trial of study {study.study_name} completed: see the trials' logs in "
                                  f"{self.sweep_dir}")
            return
        result: dict[str, Any] = {"name": "optuna", "study_name": study.study_name, "objective": self.objectives,
                                  "direction": self.directions}
        if len(self.objectives) == 1:
            best = study.best_trial
            log.info("Best trial %d: %s %s, params %s", best.number, self.objectives[0],
                     shown(self.objectives[0], best.value), best.params)
            result.update(best_trial=best.number, best_params=best.params, best_value=best.value)
        else:
            front = sorted(study.best_trials, key=lambda t: t.number)
            log.info("Pareto front: %s", "; ".join(
                f"trial {t.number} (" + ", ".join(f"{o} {shown(o, v)}" for o, v in zip(self.objectives, t.values)) + ")"
                for t in front))
            result["pareto_front"] = [{"trial": t.number, "values": dict(zip(self.objectives, t.values)),
                                       "params": t.params} for t in front]
        records.atomic_write(self.sweep_dir / "optimization_results.yaml",
                             lambda f: f.write(OmegaConf.to_yaml(OmegaConf.create(result)).encode()))
