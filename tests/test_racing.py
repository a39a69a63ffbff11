"""Races: the anytime-valid intervals on hand-worked values, the race's decisions, its error
rates by simulation (seeded, thousands of races), `analysis race` on records, and the summary's
intervals of an accuracy inside [0, 1]."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from conftest import ROOT, record, results, run, start, wait_until
from scipy import stats as sps

from analysis import racing, sequential, stats
from analysis.__main__ import main as analysis_main
from analysis.racing import ELIMINATED, WINNER, Rules, decide
from neuralforge.record.atomic import write_json
from neuralforge.record.files import MANIFEST, RESULTS
from neuralforge.record.schema import COMPLETE, FAILED

CONFIDENCE = 0.99  # of the binomial CIs the simulations assert with


def rate_ci(hits: int, n: int) -> tuple[float, float]:
    ci = sps.binomtest(hits, n).proportion_ci(CONFIDENCE, method="exact")
    return ci.low, ci.high


# ---------------------------------------------------------------- the intervals
def test_t_sequence_on_hand_worked_values():
    # 1..8: mean 4.5, Q = 42; c = 1, alpha 0.05: b = 9 (1 - (0.0025 / 9)^(1/8)) = 5.76618,
    # half-width sqrt(5.76618 * 42 / (8 * 2.23382)) = 3.68138
    low, high = sequential.t_cs(np.arange(1, 9), 0.05, c=1.0)
    assert (low, high) == pytest.approx((4.5 - 3.68138, 4.5 + 3.68138), abs=1e-5)
    # the ends are where Wang & Ramdas's martingale reaches 1 / alpha
    x = np.arange(1, 9, dtype=float)
    for m in (low, high):
        s, v, n = (x - m).sum(), ((x - m) ** 2).sum(), len(x)
        assert math.sqrt(1 / (n + 1)) * (v / (v - s ** 2 / (n + 1))) ** (n / 2) == pytest.approx(20.0)
    # 1..4: b = 5 (1 - 0.0005^(1/4)) = 4.25 >= 4, too few values for any bound
    assert sequential.t_cs([1, 2, 3, 4], 0.05, c=1.0) == (-math.inf, math.inf)


def test_bounded_sequence_on_hand_worked_values():
    # two values, both bets truncated at 1/2: centre 0.85, v = 4 * 0.4^2 and 4 * 0.1^2,
    # psi(1/2) = (log 2 - 1/2) / 4 = 0.0482868; half-width (log 40 + 0.68 * 0.0482868) / 1
    low, high = sequential.bounded_cs([0.9, 0.8], 0.05)
    assert (low, high) == pytest.approx((0.85 - 3.721714, 0.85 + 3.721714), abs=1e-6)
    assert sequential.interval([0.9, 0.8], 0.05, sequential.BOUNDED) == (0.0, 1.0)  # kept inside the support
    # on a support of [0.5, 1]: the same values rescaled, the same interval scaled back
    low2, high2 = sequential.bounded_cs([0.95, 0.9], 0.05, (0.5, 1.0))
    assert (low2, high2) == pytest.approx((0.5 + 0.5 * low, 0.5 + 0.5 * high))
    with pytest.raises(ValueError, match="outside the declared support"):
        sequential.bounded_cs([0.95, 0.2], 0.05, (0.5, 1.0))


@pytest.mark.parametrize("method, draw", [
    (sequential.T, lambda rng, n: rng.normal(0.98, 0.0015, n)),
    (sequential.BOUNDED, lambda rng, n: rng.binomial(1, 0.3, n).astype(float)),
])
def test_each_sequence_covers_its_mean_at_every_n_at_once(method, draw):
    rng = np.random.default_rng(0)
    mean = 0.98 if method == sequential.T else 0.3
    path = sequential.t_cs_path if method == sequential.T else sequential.bounded_cs_path
    misses = sum(bool(np.any((lo > mean) | (hi < mean))) for lo, hi in (path(draw(rng, 200), 0.1)
                                                                        for _ in range(2000)))
    assert rate_ci(misses, 2000)[1] < 0.1  # at most alpha = 0.1, over all 200 looks at once


# ---------------------------------------------------------------- the decisions
def test_a_worse_config_is_eliminated_and_the_race_ends_with_one_left():
    rng = np.random.default_rng(1)
    values = {"good": list(rng.normal(0.98, 0.0015, 32)), "bad": list(rng.normal(0.96, 0.0015, 32))}
    race = decide(values, Rules(initial=4, step=4))
    assert race.ended == racing.ONE_LEFT
    assert race.standings["good"].status == WINNER
    bad = race.standings["bad"]
    assert bad.status == ELIMINATED and bad.round == race.rounds[-1].number and bad.seeds == race.rounds[-1].seeds
    # the first round's 4 seeds give no bound at alpha / 2 (the whole support); the next gives one
    assert (race.rounds[0].low, race.rounds[0].high) == (0.0, 1.0) and race.rounds[-1].eliminated == ["bad"]
    assert race.runs == 2 * bad.seeds
    assert decide(values, Rules(initial=4, step=4)) == race  # the same values, the same race


def test_a_half_run_round_is_the_next_one_and_a_failed_seed_is_spent_without_a_value():
    rng = np.random.default_rng(2)
    a, b = list(rng.normal(0.98, 0.0015, 12)), list(rng.normal(0.98, 0.0015, 12))
    rules = Rules(initial=8, step=4, max_seeds=16)
    race = decide({"a": a, "b": b[:9]}, rules)  # b's second round has ended one run of four
    assert race.ended is None and race.next_round == 2 and race.next_seeds(rules) == (8, 4)
    b[3] = math.nan  # seed 3 of b failed
    race = decide({"a": a, "b": b}, rules)
    assert race.standings["b"].seeds == 12 and race.standings["b"].n == 11
    assert race.next_round == 3 and race.next_seeds(rules) == (12, 4)


def test_ties_within_the_margin_end_the_race_and_the_budget_ends_an_open_one():
    rng = np.random.default_rng(3)
    values = {c: list(rng.normal(0.98, 0.0015, 64)) for c in "abc"}
    tied = decide(values, Rules(initial=32, step=32, max_seeds=64, margin=0.01))
    assert tied.ended == racing.ALL_TIED and len(tied.rounds) == 1
    assert sorted(s.status for s in tied.standings.values()) == [racing.TIED, racing.TIED, WINNER]
    spent = decide(values, Rules(initial=8, step=4, max_runs=40))  # 24 runs, then 36; 48 would pass 40
    assert spent.ended == racing.SPENT and spent.runs == 36
    assert {s.status for s in spent.standings.values()} == {racing.BUDGET}


def test_a_metric_to_minimise_eliminates_the_higher():
    rng = np.random.default_rng(4)
    values = {"low_loss": list(rng.normal(0.1, 0.01, 32)), "high_loss": list(rng.normal(0.2, 0.01, 32))}
    race = decide(values, Rules(higher=False, support=(0.0, math.inf)))
    assert race.standings["low_loss"].status == WINNER and race.standings["high_loss"].status == ELIMINATED


def test_settings_a_race_cannot_run_with_say_which_key_to_change():
    assert [k for k, _ in Rules(alpha=1.5, initial=1, max_seeds=1, method="z", max_runs=2).problems(3)] == [
        "alpha", "initial", "max_runs", "method"]
    assert Rules().problems(1) == [("params", "a race needs at least 2 configs, the grid gives 1")]


# ---------------------------------------------------------------- error rates, simulated
def races(n_races: int, draw, rules: Rules, seed: int) -> list[racing.Race]:
    rng = np.random.default_rng(seed)
    return [decide({c: draw(rng, c) for c in ("a", "b", "c")}, rules) for _ in range(n_races)]


def eliminated_any(race: racing.Race) -> bool:
    return any(s.status == ELIMINATED for s in race.standings.values())


# every seed a round, up to 40: 39 looks
MANY_LOOKS = Rules(initial=2, step=1, max_seeds=40)


def test_with_all_configs_equal_a_race_eliminates_at_most_alpha_of_the_time_over_39_rounds():
    found = races(2000, lambda rng, c: rng.normal(0.98, 0.0015, 40), MANY_LOOKS, seed=10)
    hits = sum(map(eliminated_any, found))
    assert rate_ci(hits, len(found))[1] < MANY_LOOKS.alpha
    assert max(len(r.rounds) for r in found) == 39


def test_a_test_repeated_after_every_round_eliminates_far_more_often_than_its_level():
    """What the race guards against: Welch's t-test of each config against the leader at 0.05,
    after every round of MANY_LOOKS."""
    rng = np.random.default_rng(11)
    x = rng.normal(0.98, 0.0015, (1000, 3, MANY_LOOKS.max_seeds))  # races, configs, seeds
    n = np.arange(1, x.shape[-1] + 1)
    mean = np.cumsum(x, axis=-1) / n
    var = (np.cumsum(x ** 2, axis=-1) - n * mean ** 2)[..., 1:] / (n[1:] - 1)  # from 2 seeds
    mean, n = mean[..., 1:], n[1:]
    lead = np.take_along_axis(mean, mean.argmax(axis=1)[:, None], axis=1)
    lead_var = np.take_along_axis(var, mean.argmax(axis=1)[:, None], axis=1)
    se2 = (var + lead_var) / n
    t = (lead - mean) / np.sqrt(se2)
    df = se2 ** 2 / ((var / n) ** 2 / (n - 1) + (lead_var / n) ** 2 / (n - 1))
    rejected = np.nan_to_num(2 * sps.t.sf(t, df), nan=1.0) < 0.05  # the leader against itself: t = 0
    hits = int(rejected.any(axis=(1, 2)).sum())
    assert rate_ci(hits, len(x))[0] > 0.3


def test_a_config_better_by_two_sds_wins_within_the_stated_budget():
    """docs/racing.md: 3 configs, the best 2 sds (0.3 points at sd 0.15) ahead of two equal
    ones, initial 8, step 4: decided within 32 seeds each in at least 1 - alpha of races."""
    rules = Rules(initial=8, step=4, max_seeds=32)
    found = races(2000, lambda rng, c: rng.normal(0.98 + (0.003 if c == "a" else 0.0), 0.0015, 32), rules, seed=12)
    wins = sum(r.standings["a"].status == WINNER for r in found)
    assert rate_ci(wins, len(found))[0] > 1 - rules.alpha


def crashy(rng, n: int) -> np.ndarray:
    """The mean of a steady N(0.98, 0.0015) config, as 95% of runs 0.2 points above it and 5%
    crashed 3.8 points below."""
    return np.where(rng.random(n) < 0.05, 0.98 - 0.038, rng.normal(0.982, 0.0015, n))


@pytest.mark.parametrize("method, holds", [(sequential.T, False), (sequential.BOUNDED, True)])
def test_where_runs_sometimes_crash_only_the_bounded_method_keeps_its_error_rate(method, holds):
    """Equal means, one config steady and one that crashes now and then: its crash-free seeds look
    better, and the t sequence, which assumes normal runs, eliminates the steady one."""
    rules = Rules(initial=8, step=4, max_seeds=64, method=method)
    rng = np.random.default_rng(13)
    found = [decide({"steady": rng.normal(0.98, 0.0015, 64), "crashy": crashy(rng, 64)}, rules) for _ in range(600)]
    low, high = rate_ci(sum(r.standings["steady"].status == ELIMINATED for r in found), len(found))
    assert high < rules.alpha if holds else low > rules.alpha


# ---------------------------------------------------------------- the summary's intervals
def test_an_accuracys_intervals_stay_inside_0_and_1():
    near_top = [0.996, 0.9999]  # n = 2: Student's t reaches past 100%
    raw = stats.describe(near_top)
    assert raw["t_high"] > 1
    kept = stats.describe(near_top, bounds=stats.support("test_acc"))
    assert kept["t_high"] == 1.0 and kept["t_low"] == raw["t_low"] and kept["ci_high"] <= 1.0
    assert stats.support("test_loss") == (0.0, math.inf) and stats.clip(-0.2, 0.3, (0.0, math.inf)) == (0.0, 0.3)
    assert stats.clip(1.2, 1.5, (0.0, 1.0)) == (1.0, 1.0)


# ---------------------------------------------------------------- a race's folder
def write_race(folder, values: dict[str, list[float]], settings: dict) -> None:
    """A race's manifest and one record per seed, as the sweeper and the engine write them."""
    jobs = []
    for config, vals in values.items():
        job = f"{config}"
        jobs.append({"overrides": [config], "folder": job, "config": config, "round": 1})
        for seed, v in enumerate(vals):
            status = FAILED if v is None else COMPLETE
            write_json(folder / job / f"seed={seed}" / RESULTS, {
                "status": status, "seed": seed, "config": {"tag": config, "seed": seed},
                "metrics": {"test_acc": v}, "overrides": [config, f"seed={seed}"]})
    write_json(folder / MANIFEST, {"kind": "race", "jobs": jobs, "race": {
        "settings": settings, "seed": 0, "configs": [{"config": c, "overrides": [c]} for c in values]}})


SETTINGS = {"initial": 8, "step": 4, "alpha": 0.05, "margin": 0.05, "max_seeds": 32, "max_runs": None,
            "metric": "test_acc", "direction": None, "method": "t", "support": None}


def test_analysis_race_prints_the_table_from_the_records(tmp_path, capsys):
    rng = np.random.default_rng(5)
    good = list(rng.normal(0.98, 0.0015, 12))
    bad = list(rng.normal(0.95, 0.0015, 8))
    bad[2] = None
    write_race(tmp_path, {"tag=good": good, "tag=bad": bad}, SETTINGS)
    assert analysis_main(["race", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Round 1: 8 seeds each, 1 of 2 configs left; leader tag=good" in out
    assert "eliminated: tag=bad" in out and "one config left" in out
    row = next(line for line in out.splitlines() if line.startswith("| tag=bad"))
    assert "| 8 |" in row.replace(" ", "").replace("|8|", "| 8 |") and "eliminated in round 1" in row
    rules, _, race = racing.read(tmp_path)
    assert race.standings["tag=bad"].n == 7 and rules.margin == pytest.approx(0.0005)


# ---------------------------------------------------------------- the sweeper, in real processes
@pytest.mark.slow
def test_a_race_through_the_sweeper_resumes_a_killed_round_and_decides_as_a_clean_one(idx_root, tmp_path):
    import os
    import signal
    import subprocess

    race = ["-m", "optimizer.lr=1e-5,1e-3", "hydra/sweeper=nf_race", "hydra.sweeper.initial=4",
            "hydra.sweeper.step=2", "hydra.sweeper.max_seeds=12"]
    clean = run(idx_root, *race, f"hydra.sweep.dir={tmp_path / 'clean'}")
    log = clean.stdout + clean.stderr
    assert "eliminated: optimizer.lr=1e-05" in log and "one config left" in log

    killed = tmp_path / "killed"
    proc = start(idx_root, *race, f"hydra.sweep.dir={killed}", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                 start_new_session=True)
    # killed once the first round's first job has ended and before its second has
    def first_job():
        return [f for f in killed.glob("*lr=1e-05*") if len(list(f.rglob(RESULTS))) == 4]

    wait_until(lambda: first_job() and all(record(p.parent).status == COMPLETE
                                           for p in first_job()[0].rglob(RESULTS)), timeout=120)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = {p: p.stat().st_mtime_ns for p in first_job()[0].rglob(RESULTS)}
    assert len(kept) == 4 and not any(killed.glob("*lr=0.001*seed=4*"))

    again = run(idx_root, *race, f"hydra.sweep.dir={killed}")
    log = again.stdout + again.stderr
    assert "Round 1: 2 configs, seeds 0..3 each: 1 jobs to run (1 already done)" in log
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # the ended job was not launched again
    assert racing.read(killed)[2] == racing.read(tmp_path / "clean")[2]  # the same runs, the same race
    assert {f.relative_to(killed) for f in results(killed)} == {f.relative_to(tmp_path / "clean")
                                                               for f in results(tmp_path / "clean")}
    # every analysis command reads the race's folder like any sweep's
    out = subprocess.run([sys.executable, "-m", "analysis", "summary", str(killed)], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 0 and "optimizer.lr" in out.stdout
    assert run(idx_root, *race, "hydra.sweeper.alpha=0.1", f"hydra.sweep.dir={killed}", check=False).returncode == 1


@pytest.mark.slow
def test_a_race_refuses_a_swept_seed_in_one_line(idx_root, tmp_path):
    out = run(idx_root, "-m", "seed=0,1", "optimizer.lr=1e-5,1e-3", "hydra/sweeper=nf_race",
              f"hydra.sweep.dir={tmp_path}", check=False)
    assert out.returncode == 1 and "seed is swept: a race draws the seeds itself" in out.stderr
