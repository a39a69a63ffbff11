"""A race of configs over seeds, decided from the values the runs have left: which configs are
still in after each round, which were eliminated, and when the race ends.

Each config has its own anytime-valid confidence sequence (sequential.py) at level
alpha / K, K the configs in the race (Bonferroni): with probability at least 1 - alpha all of
them cover their means at every round at once. A config is eliminated once its interval lies
wholly below the interval of a config still in the race (above it, for a metric to minimise).
So, whatever the number of rounds:
- with all configs equal, P(any config is ever eliminated) <= alpha;
- the best config is eliminated with probability at most alpha, and so is any config that is
  as good as the best;
- a config better than every other by more than the margin is the one left, or the leader of
  a tie, with probability at least 1 - alpha minus the chance that the budget runs out first.
This is successive elimination with confidence bounds (Even-Dar, Mannor & Mansour 2006,
"Action elimination and stopping conditions for the multi-armed bandit and reinforcement
learning problems", JMLR 7; Maron & Moore 1997's Hoeffding races), with the bounds replaced
by confidence sequences, which are valid at data-dependent stopping times (Howard et al.
2021, "Time-uniform, nonparametric, nonasymptotic confidence sequences", Annals of Statistics).

The race ends when one config is left; when every config left is confidently within `margin`
of the leader (both ends of the difference of their intervals inside ±margin); or when the
next round would pass the budget (`max_seeds` per config, `max_runs` in all).

`decide` is a pure function of each config's values in seed order: the same records give the
same decisions, which is how a killed race resumes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import sequential, stats
from analysis.errors import AnalysisError
from neuralforge.record.files import MANIFEST, RESULTS
from neuralforge.record.schema import COMPLETE, FAILED, PRUNED, higher_is_better, is_accuracy, parse

WINNER, ELIMINATED, TIED, BUDGET, RACING = "winner", "eliminated", "tied", "budget spent", "racing"
ONE_LEFT, ALL_TIED, SPENT = "one config left", "every config left within the margin of the leader", "budget spent"


@dataclass(frozen=True)
class Rules:
    """How a race runs, in the metric's own units (an accuracy's margin as a fraction)."""
    alpha: float = 0.05
    margin: float = 0.0005
    initial: int = 4  # seeds each config gets in the first round
    step: int = 4  # seeds each config still in gets in every later round
    max_seeds: int = 32  # per config
    max_runs: int | None = None  # in all; None: K * max_seeds
    method: str = sequential.T
    higher: bool = True  # the direction: True to maximise the metric
    support: tuple[float, float] = (0.0, 1.0)  # where a value can lie (the bounded method's assumption)

    def problems(self, n_configs: int) -> list[tuple[str, str]]:
        """(key, what to change) for each setting a race cannot run with."""
        out = []
        if not 0 < self.alpha < 1:
            out.append(("alpha", "give a level in (0, 1), e.g. 0.05"))
        if not self.margin >= 0:
            out.append(("margin", "give a margin >= 0"))
        if self.initial < 2:
            out.append(("initial", "give at least 2 seeds: a spread needs two"))
        if self.step < 1:
            out.append(("step", "give at least 1 seed a round"))
        if self.max_seeds < self.initial:
            out.append(("max_seeds", f"give at least initial={self.initial}"))
        if self.max_runs is not None and self.max_runs < n_configs * self.initial:
            out.append(("max_runs", f"give at least {n_configs * self.initial}: {n_configs} configs x "
                                    f"initial={self.initial} seeds in the first round"))
        if self.method not in sequential.METHODS:
            out.append(("method", f"use one of {', '.join(sequential.METHODS)}"))
        if n_configs < 2:
            out.append(("params", f"a race needs at least 2 configs, the grid gives {n_configs}"))
        return out

    def seeds_after(self, round_: int) -> int:
        """Seeds each config in the race holds once round `round_` (from 1) is done."""
        return min(self.initial + (round_ - 1) * self.step, self.max_seeds)


@dataclass
class Standing:
    """One config's place: its values so far and its interval at the level the race decides at."""
    config: str
    seeds: int = 0  # seeds it got (a failed run counts: it was spent)
    n: int = 0  # values among them (complete runs)
    mean: float = math.nan
    low: float = -math.inf
    high: float = math.inf
    status: str = RACING
    round: int | None = None  # the round it was eliminated in


@dataclass
class Round:
    number: int
    seeds: int  # seeds each config in it holds after it
    left: list[str]  # configs still in after the round
    leader: str
    low: float
    high: float
    eliminated: list[str] = field(default_factory=list)
    # each config's interval after this round, for the figure of the race
    intervals: dict[str, tuple[int, float, float, float]] = field(default_factory=dict)


@dataclass
class Race:
    standings: dict[str, Standing]
    rounds: list[Round]
    ended: str | None = None  # why the race ended; None while it goes on
    next_round: int = 1  # the round to run next (or the one half-run), when not ended

    @property
    def left(self) -> list[str]:
        return [c for c, s in self.standings.items() if s.status != ELIMINATED]

    @property
    def runs(self) -> int:
        return sum(s.seeds for s in self.standings.values())

    def next_seeds(self, rules: Rules) -> tuple[int, int]:
        """(first seed offset, how many) that each config left gets in the next round."""
        before = rules.seeds_after(self.next_round - 1) if self.next_round > 1 else 0
        return before, rules.seeds_after(self.next_round) - before


def decide(values: Mapping[str, Sequence[float]], rules: Rules) -> Race:
    """Replay the race on each config's values in seed order (NaN: a seed whose run failed,
    spent but without a value; a list stops at the first seed whose run has not ended). Rounds
    run while every config left has ended all of the round's seeds."""
    configs = list(values)
    level = rules.alpha / len(configs)
    sign = 1.0 if rules.higher else -1.0
    standings = {c: Standing(c) for c in configs}
    race = Race(standings, [])
    for number in range(1, rules.max_seeds + 1):
        n = rules.seeds_after(number)
        left = race.left
        if any(len(values[c]) < n for c in left):
            race.next_round = number
            return race  # this round is not done: the race goes on with it
        for c in left:
            _stand(standings[c], values[c][:n], level, rules)
        best_low = max(_lower(standings[c], sign) for c in left)
        out = [c for c in left if _upper(standings[c], sign) < best_low]
        for c in out:
            standings[c].status, standings[c].round = ELIMINATED, number
        left = race.left
        leader = _leader(left, standings, sign)
        race.rounds.append(Round(number, n, left, leader, standings[leader].low, standings[leader].high, out,
                                 {c: (s.seeds, s.mean, s.low, s.high) for c, s in standings.items()
                                  if c in left or c in out}))
        ended = _ended(left, leader, standings, rules, race.runs, number)
        if ended:
            race.ended = ended
            for c in left:
                standings[c].status = {ONE_LEFT: WINNER, SPENT: BUDGET}.get(ended, TIED)
            if ended != SPENT:
                standings[leader].status = WINNER
            return race
    raise AssertionError("unreachable: the budget of seeds ends the race")


def _stand(s: Standing, seeds: Sequence[float], level: float, rules: Rules) -> None:
    x = np.asarray(seeds, dtype=float)
    x = x[~np.isnan(x)]
    s.seeds, s.n = len(seeds), len(x)
    s.mean = float(x.mean()) if len(x) else math.nan
    s.low, s.high = sequential.interval(x, level, rules.method, rules.support) if len(x) else (-math.inf, math.inf)


def _lower(s: Standing, sign: float) -> float:
    return s.low if sign > 0 else -s.high


def _upper(s: Standing, sign: float) -> float:
    return s.high if sign > 0 else -s.low


def _leader(left: list[str], standings: dict[str, Standing], sign: float) -> str:
    """The config left with the best mean (the first in the grid's order on a tie); one
    without a value ranks last."""
    return max(left, key=lambda c: -math.inf if math.isnan(standings[c].mean) else sign * standings[c].mean)


def _ended(left: list[str], leader: str, standings: dict[str, Standing], rules: Rules, runs: int,
           number: int) -> str | None:
    if len(left) == 1:
        return ONE_LEFT
    lead = standings[leader]
    if all(max(lead.high - standings[c].low, standings[c].high - lead.low) < rules.margin
           for c in left if c != leader):
        return ALL_TIED
    n = rules.seeds_after(number)
    more = rules.seeds_after(number + 1) - n
    budget = rules.max_runs if rules.max_runs is not None else len(standings) * rules.max_seeds
    if more == 0 or runs + more * len(left) > budget:
        return SPENT
    return None


# ---------------------------------------------------------------- the race's folder
# How a race is written down in its sweep's manifest.json (beside the jobs, which name their
# config and round): {"race": {"settings": {...}, "seed": first seed, "configs": [{"config":
# label, "overrides": [...]}]}}. The settings are as the user gave them (a margin in points).
SETTINGS = ("initial", "step", "alpha", "margin", "max_seeds", "max_runs", "metric", "direction", "method", "support")
# what a relaunch may change: a bigger budget continues the race, which an anytime-valid
# sequence allows (optional continuation); the rest would change the question asked
MAY_CHANGE = ("max_seeds", "max_runs")
ENDED = (COMPLETE, FAILED, PRUNED)


def rules_of(settings: Mapping[str, Any]) -> Rules:
    """The race's rules from its settings as a user gives them: an accuracy's margin in points,
    the direction from the metric when not given, the support the metric's own when not given."""
    metric = settings["metric"]
    direction = settings.get("direction") or ("maximize" if higher_is_better(metric) else "minimize")
    support = settings.get("support")
    return Rules(alpha=settings["alpha"], margin=settings["margin"] / _scale(metric), initial=settings["initial"],
                 step=settings["step"], max_seeds=settings["max_seeds"], max_runs=settings.get("max_runs"),
                 method=settings["method"], higher=direction == "maximize",
                 support=tuple(support) if support is not None else stats.support(metric))


def _scale(metric: str) -> float:
    return 100.0 if is_accuracy(metric) else 1.0


def ended_runs(folder: Path, metric: str) -> dict[int, float]:
    """The runs below a job folder that have ended, by seed: a complete run's value of `metric`,
    NaN for a failed or pruned one (a seed spent without a value)."""
    out = {}
    for path in sorted(Path(folder).rglob(RESULTS)):
        rec = parse(path.read_bytes(), path)
        if rec["status"] not in ENDED:
            continue
        value = (rec.get("metrics") or {}).get(metric) if rec["status"] == COMPLETE else None
        out[rec["seed"]] = math.nan if value is None else float(value)
    return out


def values(sweep_dir: Path, manifest: Mapping[str, Any]) -> dict[str, list[float]]:
    """Each config's values of the race's metric in seed order from its first seed (NaN: a seed
    whose run failed); each list stops before the first seed whose run has not ended (running,
    stopped, or never launched)."""
    race = manifest["race"]
    metric, base = race["settings"]["metric"], race["seed"]
    found: dict[str, dict[int, float]] = {c["config"]: {} for c in race["configs"]}
    for job in manifest["jobs"]:
        if job.get("config") in found:
            found[job["config"]].update(ended_runs(Path(sweep_dir) / job["folder"], metric))
    out = {}
    for config, by_seed in found.items():
        seq: list[float] = []
        while base + len(seq) in by_seed:
            seq.append(by_seed[base + len(seq)])
        out[config] = seq
    return out


def is_race(folder: str | Path) -> bool:
    path = Path(folder) / MANIFEST
    try:
        return "race" in json.loads(path.read_text())
    except (OSError, ValueError):
        return False


def read(sweep_dir: str | Path) -> tuple[Rules, dict[str, Any], Race]:
    """The race in a folder: its rules, its manifest and its standing, from the records."""
    path = Path(sweep_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise AnalysisError(f"{sweep_dir}: no {MANIFEST}: not a sweep folder") from None
    except ValueError as err:
        raise AnalysisError(f"{path} is unreadable ({err}): fix or delete it") from None
    if "race" not in manifest:
        raise AnalysisError(f"{sweep_dir} holds a {manifest.get('kind', 'grid')} sweep, not a race "
                            f"(python run.py -m ... hydra/sweeper=nf_race makes one)")
    rules = rules_of(manifest["race"]["settings"])
    return rules, manifest, decide(values(Path(sweep_dir), manifest), rules)


# ---------------------------------------------------------------- what a race shows
def status_text(s: Standing) -> str:
    return f"{ELIMINATED} in round {s.round}" if s.status == ELIMINATED else s.status


def table(race: Race, metric: str) -> pd.DataFrame:
    """One row per config: the seeds it got, its mean and anytime-valid interval (at the level
    the race decides at, alpha / K), and its status."""
    out = pd.DataFrame([{"config": s.config, "seeds": s.seeds, "mean": s.mean, "low": s.low, "high": s.high,
                         "status": status_text(s)} for s in race.standings.values()])
    out.attrs = {"metric": metric, "percent": ["mean", "low", "high"] if is_accuracy(metric) else []}
    return out


def shown(value: float, metric: str) -> str:
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{100 * value:.2f}%" if is_accuracy(metric) else f"{value:.4g}"


def round_line(r: Round, n_configs: int, metric: str) -> str:
    """'Round 2: 12 seeds each, 2 of 3 configs left; leader ...: 97.83% [97.70%, 97.96%]; out: ...'"""
    mean = r.intervals[r.leader][1]
    line = (f"Round {r.number}: {r.seeds} seeds each, {len(r.left)} of {n_configs} configs left; leader "
            f"{r.leader}: {shown(mean, metric)} [{shown(r.low, metric)}, {shown(r.high, metric)}]")
    return line + (f"; eliminated: {', '.join(r.eliminated)}" if r.eliminated else "")


def end_line(race: Race) -> str:
    if race.ended is None:
        return f"Race goes on: round {race.next_round} is next, {race.runs} runs so far"
    return f"Race ended after {len(race.rounds)} rounds and {race.runs} runs: {race.ended}"
