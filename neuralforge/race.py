"""A race of a grid's configs over seeds as a Hydra sweeper: `hydra/sweeper=nf_race`.

It takes any grid a `-m` sweep takes (`hydra.sweeper.params` and the command line's lists,
parsed by sweeps.expected_jobs) and races its configs: each round launches, through Hydra's
launcher (basic, joblib or submitit), one job per config still in the race, the config's
overrides plus `seed=<next seed> n_seeds=<step>`, a group of seeds trained together. After each
round analysis.racing decides, from the records alone, which configs are eliminated and whether
the race has ended.

Resume is the records': a relaunch with the same command replays the decisions from the runs
on disk, launches the round that was cut short for the configs whose runs did not all end (the
engine resumes each from its last epoch), and goes on. The race's settings and every job are in
the sweep's manifest.json, so every analysis command reads the folder like any sweep's, and
`python -m analysis race DIR` prints the race's table from it.

Its keys live under hydra.sweeper, beside the grid they race: they decide which runs are made,
not what a run computes, so they are in no run's config, fingerprint or folder name.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from analysis import racing, sequential
from analysis.markdown import markdown
from neuralforge import sweeps
from neuralforge.config import plain
from neuralforge.record.errors import ConfigError, SearchError
from neuralforge.record.files import MANIFEST
from neuralforge.record.keys import SEED_KEYS
from neuralforge.record.schema import Metrics

log = logging.getLogger(__name__)

# metrics of a record a race may decide on: a number per run
METRICS = tuple(f.name for f in fields(Metrics) if f.name not in ("best_epoch", "epochs_run", "selection"))


@dataclass
class NFRaceSweeperConf:
    _target_: str = "neuralforge.race.NFRaceSweeper"
    params: dict[str, str] | None = None  # the grid, as for Hydra's basic sweeper
    initial: int = racing.Rules.initial  # seeds each config gets in the first round
    step: int = racing.Rules.step  # seeds each config still in gets in each later round
    alpha: float = racing.Rules.alpha  # P(any config eliminated) when all are equal, at most
    margin: float = 0.05  # points for an accuracy: configs confidently this close are tied
    max_seeds: int = racing.Rules.max_seeds  # per config
    max_runs: int | None = None  # in all; null: configs x max_seeds
    metric: str = "test_acc"  # test accuracy at the epoch chosen on validation
    direction: str | None = None  # maximize or minimize; null: from the metric (a loss is minimised)
    method: str = sequential.T  # t: Gaussian, unknown variance; bounded: any values within `support`
    support: list[float] | None = None  # [low, high] every value lies in; null: the metric's ([0, 1] for an accuracy)


ConfigStore.instance().store(group="hydra/sweeper", name="nf_race", node=NFRaceSweeperConf, provider="neuralforge")


class NFRaceSweeper(Sweeper):
    def __init__(self, params: DictConfig | None = None, **settings: Any) -> None:
        self.params = params
        self.settings: dict[str, Any] = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v
                                         for k, v in settings.items()}
        self.config: DictConfig | None = None
        self.launched = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)

    # -------------------------------------------------------------- the race
    def sweep(self, arguments: list[str]) -> None:
        assert self.config is not None
        self.sweep_dir = Path(self.config.hydra.sweep.dir)
        configs, base = self.configs()
        rules = self.check(len(configs))
        manifest = self.start(configs, base)
        shown = 0
        while True:
            race = racing.decide(racing.values(self.sweep_dir, manifest), rules)
            for r in race.rounds[shown:]:
                log.info(racing.round_line(r, len(configs), self.settings["metric"]))
            shown = len(race.rounds)
            if race.ended is not None:
                break
            manifest = self.run_round(race, rules, configs, base)
        log.info(racing.end_line(race))
        log.info("\n%s", markdown(racing.table(race, self.settings["metric"])))
        log.info("Table again: python -m analysis race %s", self.sweep_dir)

    def configs(self) -> tuple[dict[str, list[str]], int]:
        """The grid's configs, each named by the overrides that tell it apart, and the first seed."""
        assert self.config is not None
        jobs = sweeps.expected_jobs(self.config)
        parser = OverridesParser.create()
        keyed = [{parser.parse_override(o).get_key_element(): o for o in job["overrides"]} for job in jobs]
        swept_seeds = sorted({k for job in keyed for k in job if k in SEED_KEYS and len({j.get(k) for j in keyed}) > 1})
        if swept_seeds:
            raise ConfigError(f"{swept_seeds[0]} is swept: a race draws the seeds itself (seed=<first seed> sets where "
                              f"they start, hydra.sweeper.step how many a round); sweep the keys that make configs")
        varying = [k for k in keyed[0] if len({j.get(k) for j in keyed}) > 1]
        configs = {}
        for job in keyed:
            label = ", ".join(job[k] for k in varying)
            configs[label] = [o for k, o in job.items() if k not in ("seed", "n_seeds")]
        return configs, int(self.config.seed)

    def check(self, n_configs: int) -> racing.Rules:
        """The settings a race cannot run with, refused in one line before anything is written."""
        assert self.config is not None
        s = self.settings
        if s["metric"] not in METRICS:
            raise ConfigError(f"hydra.sweeper.metric={s['metric']} is not a metric of results.json: use one of "
                              f"{', '.join(METRICS)}")
        if s["metric"].startswith("val_") and self.config.data.val_size == 0:
            raise ConfigError(f"hydra.sweeper.metric={s['metric']} with data.val_size=0: runs have no validation set; "
                              f"race on test_acc or set data.val_size > 0")
        if s["direction"] not in (None, "maximize", "minimize"):
            raise ConfigError(f"hydra.sweeper.direction={s['direction']} is unknown: use maximize or minimize")
        if s["support"] is not None and (len(s["support"]) != 2 or not s["support"][0] < s["support"][1]):
            raise ConfigError(f"hydra.sweeper.support={s['support']}: give [low, high] with low < high")
        rules = racing.rules_of(s)
        bad = rules.problems(n_configs)
        if bad:
            key, what = bad[0]
            raise ConfigError(f"hydra.sweeper.{key}={s.get(key, '')}: {what}" if key != "params" else what)
        if rules.method == sequential.BOUNDED and not all(abs(b) < float("inf") for b in rules.support):
            raise ConfigError(f"hydra.sweeper.method=bounded needs the values' range: give "
                              f"hydra.sweeper.support=[low,high] "
                              f"for {s['metric']}")
        return rules

    def start(self, configs: dict[str, list[str]], base: int) -> dict[str, Any]:
        """Write the race into the manifest, or check that a relaunch races what the folder holds."""
        race: dict[str, Any] = {"settings": {k: self.settings[k] for k in racing.SETTINGS}, "seed": base,
                "configs": [{"config": c, "overrides": o} for c, o in configs.items()]}
        path = self.sweep_dir / MANIFEST
        old = json.loads(path.read_text()) if path.exists() else {}
        if old and "race" not in old:
            raise ConfigError(f"{self.sweep_dir} holds a {old.get('kind', 'grid')} sweep: race into another "
                              f"hydra.sweep.dir")
        if "race" in old:
            theirs = old["race"]
            mine = {**race, "settings": {k: v for k, v in race["settings"].items() if k not in racing.MAY_CHANGE}}
            there = {**theirs, "settings": {k: v for k, v in theirs["settings"].items() if k not in racing.MAY_CHANGE}}
            differ = [k for k in mine if mine[k] != there[k]]
            if differ:
                what = differ[0]
                if what == "settings":
                    key = next(k for k in mine["settings"] if mine["settings"][k] != there["settings"].get(k))
                    what = f"hydra.sweeper.{key}: {there['settings'].get(key)!r} there, {mine['settings'][key]!r} here"
                raise ConfigError(f"{self.sweep_dir} holds another race ({what}). Relaunch with its settings (only "
                                  f"hydra.sweeper.max_seeds and max_runs may grow), or race into another "
                                  f"hydra.sweep.dir")
        return sweeps.write_manifest(self.sweep_dir, [], kind="race", race=race)

    def run_round(self, race: racing.Race, rules: racing.Rules, configs: dict[str, list[str]],
                  base: int) -> dict[str, Any]:
        """Launch the next round's jobs whose runs have not all ended; return the manifest."""
        first, count = race.next_seeds(rules)
        jobs: list[dict[str, Any]] = []
        for config in race.left:
            overrides = [*configs[config], f"seed={base + first}", f"n_seeds={count}"]
            jobs.append({"overrides": overrides, "folder": self.folder(overrides), "config": config,
                         "round": race.next_round})
        manifest = sweeps.write_manifest(self.sweep_dir, jobs)
        todo = [j for j in jobs if not self.ended(j, base + first, count)]
        log.info("Round %d: %d configs, seeds %d..%d each: %d jobs to run%s", race.next_round, len(jobs), base + first,
                 base + first + count - 1, len(todo),
                 f" ({len(jobs) - len(todo)} already done)" if len(todo) < len(jobs) else "")
        if todo:
            assert self.launcher is not None
            returns = self.launcher.launch([j["overrides"] for j in todo], initial_job_idx=self.launched)
            self.launched += len(todo)
            for job, ret in zip(todo, returns):
                if ret.status == JobStatus.FAILED:
                    log.warning("%s: its job in %s failed (its log says why); a failed run counts as a seed spent "
                                "without a value", job["config"], job["folder"])
        left = [j for j in todo if not self.ended(j, base + first, count)]
        if left:
            raise SearchError(f"round {race.next_round} of the race left runs unfinished in "
                              f"{self.sweep_dir / left[0]['folder']} "
                              f"(refused or stopped: its log says why); fix that and relaunch the same command "
                              f"to go on")
        return manifest

    def folder(self, overrides: list[str]) -> str:
        """The job folder Hydra gives these overrides: sweeps.expected_jobs' resolution, for one job."""
        assert self.config is not None
        cfg = OmegaConf.create(plain(self.config))
        cfg.hydra.sweeper.params = None
        cfg.hydra.overrides.task = overrides
        return sweeps.expected_jobs(cfg)[0]["folder"]

    def ended(self, job: dict[str, Any], first: int, count: int) -> bool:
        """Whether every run of the job has ended (complete, failed or pruned)."""
        return set(range(first, first + count)) <= racing.ended_runs(self.sweep_dir / job["folder"],
                                                                     self.settings["metric"]).keys()
