"""analysis/: collecting run folders, every statistic against a direct scipy/numpy computation
or a hand-worked example, the CLI, and the report's files.

Real run folders come from the harness on the IDX fixture (two-epoch runs, a few seconds for
all of them, trained once per session); problem runs are hand-written records.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from conftest import CONF, FAST, ROOT, dead_pid, write_dataset, write_record
from hydra import compose, initialize_config_dir
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from analysis import (
    collect,
    compare,
    expected_max,
    noise_floor,
    optimism,
    problems,
    report,
    stability,
    stats,
    summarize,
    variance,
)
from analysis.__main__ import main
from analysis.errors import AnalysisError, NoCompleteRuns
from analysis.markdown import markdown
from analysis.report import FILES as REPORT_FILES
from analysis.variance import components
from neuralforge.engine import train

# --------------------------------------------------------------------------- run folders

def _train(idx_root: Path, folder: Path, *overrides: str) -> None:
    with initialize_config_dir(config_dir=CONF):
        cfg = compose("config", overrides=[f"data.root={idx_root}", *FAST, *overrides])
    train(cfg, folder, overrides=list(overrides))


@pytest.fixture(scope="session")
def widths(idx_root, tmp_path_factory) -> Path:
    """A sweep over two widths, each a group of 4 seeds, whose manifest also lists a third
    width that never ran."""
    sweep = tmp_path_factory.mktemp("widths")
    jobs = []
    for hidden in ("[32,16]", "[64,32]", "[8]"):
        overrides = [f"model.hidden={hidden}", "n_seeds=4", "seed=0"]
        jobs.append({"overrides": overrides, "folder": ",".join(overrides)})
        if hidden != "[8]":
            _train(idx_root, sweep / jobs[-1]["folder"], *overrides)
    (sweep / "manifest.json").write_text(json.dumps({"kind": "grid", "jobs": jobs}))
    return sweep


@pytest.fixture(scope="session")
def grid(idx_root, tmp_path_factory) -> Path:
    """Init seed x data-order seed, 3 x 3, one run per cell."""
    sweep = tmp_path_factory.mktemp("init_vs_order")
    for i, j in itertools.product(range(3), range(3)):
        overrides = [f"seeds.init={i}", f"seeds.order={j}"]
        _train(idx_root, sweep / ",".join(overrides), *overrides)
    return sweep


# --------------------------------------------------------------------------- collect

def test_collect_reads_a_real_sweep_one_row_per_member(widths):
    df = collect(widths)
    done = df[df["status"] == "complete"]
    assert len(done) == 8
    assert sorted(done["model.hidden"].unique()) == ["[32, 16]", "[64, 32]"]
    # only what varies is a column; seeds always are
    assert "optimizer.lr" not in df.columns and df.attrs["constants"]["optimizer.lr"] == 0.001
    assert {"seed", "seeds.init", "seeds.order", "test_acc", "val_acc", "max_test_acc", "wall_seconds",
            "folder", "status"} <= set(df.columns)
    assert sorted(done["seed"]) == [0, 0, 1, 1, 2, 2, 3, 3]
    rec = json.loads((Path(done["folder"].iat[0]) / "results.json").read_text())
    assert done["test_acc"].iat[0] == rec["metrics"]["test_acc"]
    # the manifest's third job never ran: listed, not counted
    missing = problems(df)
    assert list(missing["status"]) == ["missing"] and "model.hidden=[8]" in missing["overrides"].iat[0]


def test_collect_reads_no_history(widths, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("collect read a CSV")
    monkeypatch.setattr(pd, "read_csv", refuse)
    assert len(collect(widths)) == 9


def test_a_record_from_before_matmul_precision_existed_counts_as_highest(tmp_path):
    write_record(tmp_path / "old")
    for name, precision in (("same", "highest"), ("bf16", "medium")):
        path = write_record(tmp_path / name) / "results.json"
        rec = json.loads(path.read_text())
        rec["config"]["matmul_precision"] = precision
        path.write_text(json.dumps(rec))
    df = collect(tmp_path)
    status = {Path(f).name: s for f, s in zip(df["folder"], df["status"])}
    # the same seed at the same precision is one sample; in bfloat16 it is another config
    assert status == {"old": "complete", "same": "repeat", "bf16": "complete"}
    assert sorted(df["matmul_precision"]) == ["highest", "highest", "medium"]


def test_collect_sorts_out_failed_stale_running_and_missing(tmp_path):
    for s in range(3):
        write_record(tmp_path / f"seed={s}", seed=s, test_acc=0.90 + 0.01 * s)
    write_record(tmp_path / "seed=3", seed=3, status="failed", test_acc=0.1, error="training diverged")
    write_record(tmp_path / "seed=4", seed=4, status="running", heartbeat=time.time() - 3600)
    write_record(tmp_path / "seed=5", seed=5, status="running", host=socket.gethostname(), pid=dead_pid())
    write_record(tmp_path / "seed=6", seed=6, status="running", host=socket.gethostname(), pid=os.getpid())
    (tmp_path / "seed=7").mkdir()
    (tmp_path / "seed=7" / "results.json").write_text("{not json")
    jobs = [{"overrides": [f"seed={s}"], "folder": f"seed={s}"} for s in range(9)]
    (tmp_path / "manifest.json").write_text(json.dumps({"jobs": jobs}))

    df = collect(tmp_path)
    status = dict(zip(df["folder"].map(lambda f: Path(f).name), df["status"]))
    assert status == {"seed=0": "complete", "seed=1": "complete", "seed=2": "complete", "seed=3": "failed",
                      "seed=4": "stale", "seed=5": "stale", "seed=6": "running", "seed=7": "unreadable",
                      "seed=8": "missing"}
    assert set(problems(df)["status"]) == {"failed", "stale", "running", "unreadable", "missing"}
    assert problems(df).set_index("status").loc["failed", "error"] == "training diverged"
    # statistics see the three complete runs only
    row = summarize(df).iloc[0]
    assert row["n"] == 3 and row["mean"] == pytest.approx(0.91)


def test_a_missing_job_counts_once_however_its_sweep_is_named(tmp_path, monkeypatch):
    sweep = tmp_path / "s" / "sweep"
    for k in range(3):
        write_record(sweep / f"seed={k}", seed=k)
    jobs = [{"overrides": [f"seed={k}"], "folder": f"seed={k}"} for k in range(4)]
    (sweep / "manifest.json").write_text(json.dumps({"kind": "grid", "jobs": jobs}))
    monkeypatch.chdir(tmp_path)
    for roots in ([tmp_path / "s", sweep], ["s/sweep", sweep]):  # a parent and its child; relative and absolute
        df = collect(roots)
        assert df["status"].value_counts().to_dict() == {"complete": 3, "missing": 1}, roots


def test_a_record_that_is_not_an_object_is_unreadable(tmp_path):
    write_record(tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "results.json").write_text("null")
    df = collect(tmp_path)
    assert sorted(df["status"]) == ["complete", "unreadable"]


def test_a_job_that_left_no_record_is_judged_as_the_sweep_summary_judges_it(tmp_path):
    from neuralforge import sweeps
    (tmp_path / "refused" / ".hydra").mkdir(parents=True)  # a bad value: started, no lock, no record
    (tmp_path / "refused" / ".refused").write_text("model widths must be positive\n")  # written by run.py
    (tmp_path / "killed" / ".hydra").mkdir(parents=True)  # SIGKILLed in its first epoch
    (tmp_path / "killed" / ".lock").write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname()}))
    jobs = [{"overrides": [f"seed={k}"], "folder": name} for k, name in enumerate(("refused", "killed", "never"))]
    (tmp_path / "manifest.json").write_text(json.dumps({"kind": "grid", "jobs": jobs}))
    df = collect(tmp_path)
    status = {Path(f).name: st for f, st in zip(df["folder"], df["status"])}
    assert status == {"refused": "failed", "killed": "stale", "never": "missing"}
    assert "resumes when launched again" in df.loc[df["status"] == "stale", "error"].item()
    assert {k: [p.name for p in v] for k, v in sweeps.job_states(tmp_path).items() if v} == \
        {"failed": ["refused"], "stale": ["killed"], "missing": ["never"]}


def test_the_same_seeds_of_one_config_count_once(tmp_path):
    for s in range(3):
        write_record(tmp_path / f"a_group/seed={s}", seed=s, test_acc=0.90 + 0.01 * s)
    write_record(tmp_path / "b_alone/seed=1", seed=1, test_acc=0.5)  # seed 1 of the same config again
    write_record(tmp_path / "c_wide/seed=1", seed=1, hidden=(64,), test_acc=0.8)  # another config
    df = collect(tmp_path)
    status = {str(Path(f).relative_to(tmp_path)): st for f, st in zip(df["folder"], df["status"])}
    assert status == {"a_group/seed=0": "complete", "a_group/seed=1": "complete", "a_group/seed=2": "complete",
                      "b_alone/seed=1": "repeat", "c_wide/seed=1": "complete"}
    assert problems(df).set_index("status").loc["repeat", "error"].endswith("a_group/seed=1")
    rows = summarize(df).set_index("model.hidden")
    assert rows.loc["[32, 16]", "n"] == 3 and rows.loc["[32, 16]", "mean"] == pytest.approx(0.91)


def test_one_recipe_on_two_versions_of_the_data_is_two_configs(tmp_path):
    for version in (0, 1):  # the same seed and settings, on other files of one dataset
        _train(write_dataset(tmp_path / f"data{version}", seed=version), tmp_path / f"runs/v{version}", "seed=0")
    df = collect(tmp_path / "runs")
    assert "data.files" in df.attrs["config_keys"] and df["data.files"].nunique() == 2
    assert list(df["status"]) == ["complete", "complete"]  # not one the other's repeat
    assert len(summarize(df)) == 2


def test_collect_of_overlapping_folders_counts_a_run_once(widths):
    assert len(collect([widths, widths / "model.hidden=[32,16],n_seeds=4,seed=0"])) == 9


def test_no_complete_runs_is_one_clear_line_and_exit_1(tmp_path, capsys):
    write_record(tmp_path / "a", status="failed")
    with pytest.raises(NoCompleteRuns, match="no complete runs"):
        summarize(collect(tmp_path))
    assert main(["summary", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and err.startswith("error: no complete runs") and "1 failed" in err
    assert main(["summary", str(tmp_path / "nope")]) == 1
    assert "no such folder" in capsys.readouterr().err


def test_cli_runs_as_a_module_without_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "analysis", "summary", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip() == f"error: no complete runs in {tmp_path}"


# --------------------------------------------------------------------------- summary

def test_describe_matches_scipy_and_a_hand_worked_t_interval():
    x = np.array([0.90, 0.92, 0.94])
    d = stats.describe(x, seed=3)
    assert d["mean"] == pytest.approx(0.92) and d["std"] == pytest.approx(0.02)
    assert d["sem"] == pytest.approx(0.02 / math.sqrt(3))
    # t_{0.975, 2} = 4.302653: 0.92 -+ 4.302653 * 0.011547
    assert (d["t_low"], d["t_high"]) == pytest.approx((0.92 - 0.049683, 0.92 + 0.049683), abs=1e-6)
    assert (d["median"], d["min"], d["max"], d["range"]) == pytest.approx((0.92, 0.90, 0.94, 0.04))
    boot = sps.bootstrap((x,), np.mean, method="percentile", n_resamples=9999, rng=np.random.default_rng(3))
    assert (d["ci_low"], d["ci_high"]) == (boot.confidence_interval.low, boot.confidence_interval.high)
    sd = sps.bootstrap((x,), lambda v, axis: np.std(v, axis=axis, ddof=1), method="percentile",
                       n_resamples=9999, rng=np.random.default_rng(3))
    assert d["std_se"] == pytest.approx(sd.standard_error)
    assert (d["std_low"], d["std_high"]) == pytest.approx((sd.confidence_interval.low, sd.confidence_interval.high))
    assert stats.describe(x, seed=3) == d  # seeded


def test_bootstrap_ci_agrees_with_t_for_many_runs_and_degenerates_sanely():
    x = np.random.default_rng(0).normal(0.97, 0.003, 400)
    d = stats.describe(x)
    assert d["ci_low"] == pytest.approx(d["t_low"], abs=0.0002)
    assert d["ci_high"] == pytest.approx(d["t_high"], abs=0.0002)
    one = stats.describe([0.9])
    assert one["n"] == 1 and math.isnan(one["std"]) and math.isnan(one["ci_low"])
    same = stats.describe([0.9, 0.9, 0.9])
    assert same["std"] == 0 and same["ci_low"] == same["ci_high"] == same["t_low"] == pytest.approx(0.9)


def test_summarize_groups_by_swept_keys_not_seeds(widths):
    df = collect(widths)
    table = summarize(df)
    assert list(table["model.hidden"]) == ["[32, 16]", "[64, 32]"] and list(table["n"]) == [4, 4]
    for _, row in table.iterrows():
        values = df.loc[(df["model.hidden"] == row["model.hidden"]) & (df["status"] == "complete"), "test_acc"]
        assert row["mean"] == pytest.approx(values.mean()) and row["std"] == pytest.approx(values.std())
    val = summarize(df, metric="val_acc")
    assert val["mean"].iat[0] == pytest.approx(df.loc[df["model.hidden"] == "[32, 16]", "val_acc"].mean())
    with pytest.raises(AnalysisError, match="not in the records"):
        summarize(df, metric="nonsense")


# --------------------------------------------------------------------------- compare

def test_p_greater_is_u_over_pairs_hand_worked():
    x, y = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 0.0])
    # 1 beats 0; 2 ties two 2s and beats 0; 3 beats all: (1 + 2 + 3) / 9
    assert stats.p_greater(x, y) == pytest.approx(6 / 9)
    assert stats.p_greater(x, y) == pytest.approx(sps.mannwhitneyu(x, y).statistic / 9)
    batch = np.stack([x, y[::-1]])  # vectorized over resamples
    assert stats.p_greater(batch, np.stack([y, y])) == pytest.approx([6 / 9, stats.p_greater(y[::-1], y)])


def test_compare_matches_scipy_and_hand_worked_effect_sizes():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([3.0, 4.0, 5.0])
    r = stats.compare(a, b, seed=0, pairs=(a, b + np.array([0.1, -0.2, 0.3])))
    assert r["diff"] == -2
    assert r["welch_p"] == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue)
    assert r["mwu_p"] == pytest.approx(sps.mannwhitneyu(a, b).pvalue)
    assert r["paired_p"] == pytest.approx(sps.ttest_rel(a, b + np.array([0.1, -0.2, 0.3])).pvalue)
    # pooled sd 1: d = -2; J(4) = Gamma(2) / (sqrt(2) Gamma(1.5)) = 0.797885
    assert r["cohen_d"] == pytest.approx(-2) and r["hedges_g"] == pytest.approx(-2 * 0.797885, abs=1e-5)
    # 2 (1.96 + 0.84)^2 * 1 / 4 = 3.92 -> 4 per config
    assert r["n_for_power"] == 4 and stats.n_for_power(1.0, 0.5) == math.ceil(2 * 2.8 ** 2 / 0.25)
    assert r["p_a_gt_b"] == pytest.approx(0.5 / 9)  # only 3 vs 3 ties
    diff = sps.bootstrap((a, b), lambda x, y, axis: x.mean(axis) - y.mean(axis), method="percentile",
                         rng=np.random.default_rng(0))
    assert (r["diff_low"], r["diff_high"]) == (diff.confidence_interval.low, diff.confidence_interval.high)


def test_no_verdict_from_counts_that_cannot_show_a_difference():
    low, high = [0.90, 0.91, 0.92, 0.93, 0.94], [0.95, 0.96, 0.97, 0.98, 0.99]  # fully separated
    assert stats.compare(low[:3], high[:3])["verdict"] == "too few runs"  # smallest Mann-Whitney p: 0.1
    assert stats.compare(low[:3], high[:4])["verdict"] == "too few runs"  # 0.057
    assert stats.compare(low[:4], high[:4])["verdict"] == "b better"  # 0.029
    assert stats.compare(high[:3], low)["verdict"] == "a better"  # 3 against 5: 0.036


def test_verdict_follows_bouthillier():
    assert stats.verdict(0.8, 0.6, 0.95) == "a better"
    assert stats.verdict(0.8, 0.45, 0.95) == "inconclusive"  # meaningful, not significant
    assert stats.verdict(0.65, 0.55, 0.75) == "significant, not meaningful"
    assert stats.verdict(0.1, 0.0, 0.3) == "b better"


def test_compare_along_a_key_pairs_seeds_and_holm_adjusts(widths):
    df = collect(widths)
    table = compare(df, by="model.hidden")
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["a"], row["b"], row["n_pairs"]) == ("[32, 16]", "[64, 32]", 4)
    done = df[df["status"] == "complete"].sort_values("seed")
    x = done.loc[done["model.hidden"] == "[32, 16]", "test_acc"].to_numpy()
    y = done.loc[done["model.hidden"] == "[64, 32]", "test_acc"].to_numpy()
    assert row["paired_p"] == pytest.approx(sps.ttest_rel(x, y).pvalue)
    assert row["welch_p"] == pytest.approx(sps.ttest_ind(x, y, equal_var=False).pvalue)
    assert row["welch_p_holm"] == pytest.approx(row["welch_p"])  # one test: nothing to adjust
    with pytest.raises(AnalysisError, match="does not vary"):
        compare(df, by="optimizer.lr")


def test_holm_over_all_pairs(tmp_path):
    rng = np.random.default_rng(1)
    for hidden, shift in ((16,), 0.0), ((32,), 0.01), ((64,), 0.02):
        for s in range(5):
            write_record(tmp_path / f"h{hidden[0]}" / f"seed={s}", seed=s, hidden=hidden,
                         test_acc=0.9 + shift + rng.normal(0, 0.005))
    table = compare(collect(tmp_path))
    assert len(table) == 3
    assert table["welch_p_holm"].to_numpy() == pytest.approx(multipletests(table["welch_p"], method="holm")[1])
    assert multipletests([0.01, 0.04, 0.03], method="holm")[1] == pytest.approx([0.03, 0.06, 0.06])



def test_a_loss_is_better_lower(tmp_path):
    for lr, loss in ((0.1, 0.05), (0.01, 0.20)):
        for k in range(6):
            folder = write_record(tmp_path / f"lr{lr}" / f"seed={k}", seed=k, lr=lr)
            rec = json.loads((folder / "results.json").read_text())
            rec["metrics"]["test_loss"] = loss + 0.001 * k * (1 if lr == 0.1 else 2)
            (folder / "results.json").write_text(json.dumps(rec))
    df = collect(tmp_path)
    row = compare(df, metric="test_loss").iloc[0]
    low_is_a = row["mean_a"] < row["mean_b"]
    assert row["verdict"] == ("a better" if low_is_a else "b better")
    assert row["p_a_gt_b"] == (0.0 if low_is_a else 1.0)  # P(a > b) stays what it says
    best = expected_max(df, "test_loss")
    for _, curve in best.groupby("optimizer.lr"):
        assert curve["expected_best"].is_monotonic_decreasing  # the expected lowest loss of n runs
    assert stats.n_for_power(0.0, 0.01) == 2  # no spread: still two runs to see it


def test_timings_are_better_lower(tmp_path):
    for width, seconds in ((16, 10.0), (32, 100.0)):
        for k in range(6):
            folder = write_record(tmp_path / f"h{width}" / f"seed={k}", seed=k, hidden=(width,))
            rec = json.loads((folder / "results.json").read_text())
            rec["timing"]["wall_seconds"] = seconds + k * width / 16
            (folder / "results.json").write_text(json.dumps(rec))
    row = compare(collect(tmp_path), metric="wall_seconds").iloc[0]
    fast_is_a = row["mean_a"] < row["mean_b"]
    assert row["verdict"] == ("a better" if fast_is_a else "b better")


def test_a_metric_no_run_has_is_one_line_and_writes_nothing(tmp_path, capsys):
    for k in range(3):
        folder = write_record(tmp_path / "runs" / f"seed={k}", seed=k)
        rec = json.loads((folder / "results.json").read_text())
        rec["metrics"]["val_acc"] = None  # what data.val_size=0 records
        (folder / "results.json").write_text(json.dumps(rec))
    runs = str(tmp_path / "runs")
    for argv in (["summary", runs, "--metric", "val_acc"], ["variance", runs, "--metric", "val_acc"],
                 ["variance", runs, "--metric", "nothing"],
                 ["report", runs, "--metric", "val_acc", "-o", str(tmp_path / "report")]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "report").exists()
    assert main(["summary", runs, "--csv", str(tmp_path)]) == 1  # a folder: one line, before any table
    out = capsys.readouterr()
    assert out.err.startswith(f"error: --csv {tmp_path} is a folder") and out.out == ""
    assert main(["summary", runs, "--metric", "nothing"]) == 1
    assert "wall_seconds, seconds_per_epoch" in capsys.readouterr().err  # every metric that works is offered
    assert main(["summary", runs, "--csv", str(tmp_path / "new/folder/x.csv")]) == 0  # made, like report -o
    assert len(pd.read_csv(tmp_path / "new/folder/x.csv")) == 1


def test_configs_that_differ_in_many_keys_are_named_by_their_folder(tmp_path):
    for name, hidden, lr, epochs, shift in (("notebook", (128, 64), 1e-3, 10, 0), ("recipe", (128, 64), 5e-4, 30, 2)):
        for s in range(3):
            path = write_record(tmp_path / name / f"seed={s}", seed=s, hidden=hidden, lr=lr,
                                test_acc=0.97 + 0.01 * (name == "recipe") + 0.001 * s) / "results.json"
            rec = json.loads(path.read_text())
            rec["config"]["trainer"] = {"epochs": epochs, "label_smoothing": 0.1 * (shift > 0)}
            rec["config"]["data"]["augment"] = {"shift": shift}
            path.write_text(json.dumps(rec))
    table = summarize(collect(tmp_path))
    assert list(table["config"]) == ["notebook", "recipe"]
    assert table["mean"].to_numpy() == pytest.approx([0.971, 0.981])
    # with few swept keys the keys themselves stay the label
    few = tmp_path / "few"
    for hidden in ((16,), (32,)):
        write_record(few / f"h{hidden[0]}", hidden=hidden)
    assert "model.hidden" in summarize(collect(few)).columns

# --------------------------------------------------------------------------- expected max

def test_expected_max_hand_worked_and_against_all_subsets():
    # n = 2 of [1, 2, 3]: subsets {1,2} {1,3} {2,3} -> (2 + 3 + 3) / 3
    assert stats.expected_max([3.0, 1.0, 2.0]) == pytest.approx([2.0, 8 / 3, 3.0])
    v = np.random.default_rng(0).normal(size=9)
    brute = [np.mean([max(c) for c in itertools.combinations(v, n)]) for n in range(1, 10)]
    assert stats.expected_max(v) == pytest.approx(brute)
    big = stats.expected_max(np.linspace(0, 1, 3000))  # C(3000, 1500) overflows a float
    assert np.all(np.isfinite(big)) and big[0] == pytest.approx(0.5) and big[-1] == pytest.approx(1.0)


def test_optimism_is_the_best_test_epoch_over_the_chosen_one(widths):
    df = collect(widths)
    table = optimism(df).set_index("model.hidden")
    for hidden, runs in df.groupby("model.hidden"):
        gaps = []
        for folder, chosen in zip(runs["folder"], runs["best_epoch"]):  # from each run's history, not its record
            h = pd.read_csv(Path(folder) / "history.csv")
            gaps.append(h.test_acc.max() - h.test_acc[h.epoch == chosen].item())
        assert table.loc[hidden, "optimism"] == pytest.approx(np.mean(gaps))
        assert table.loc[hidden, "optimism_max"] == pytest.approx(max(gaps))


def test_expected_max_table(widths):
    table = expected_max(collect(widths))
    assert list(table.groupby("model.hidden")["n"].max()) == [4, 4]
    first = table[table["model.hidden"] == "[64, 32]"]
    assert first["expected_best"].is_monotonic_increasing
    df = collect(widths)
    accs = df.loc[df["model.hidden"] == "[64, 32]", "test_acc"].to_numpy()
    np.testing.assert_allclose(first["expected_best"], stats.expected_max(accs))  # of the metric asked for
    assert first["expected_best"].iloc[-1] == pytest.approx(accs.max())


# --------------------------------------------------------------------------- noise floor and stability

def test_noise_floor_hand_worked():
    correct = np.array([[1, 1, 0, 0], [1, 0, 1, 0]], dtype=bool)
    # p = [1, .5, .5, 0]: sum p(1-p) = 0.5, x k/(k-1) = 1.0 -> floor sqrt(1) / 4
    r = stats.noise_floor(correct)
    assert r["floor_std"] == pytest.approx(0.25) and r["std"] == 0 and r["remainder_std"] == 0
    assert r["binomial_std"] == pytest.approx(math.sqrt(0.5 * 0.5 / 4))


def test_noise_floor_explains_independent_coins():
    # Runs that are independent coins per example: the observed std is the floor, within noise.
    rng = np.random.default_rng(0)
    p = rng.uniform(0.5, 1.0, 2000)
    correct = rng.random((300, 2000)) < p
    r = stats.noise_floor(correct)
    assert r["std"] == pytest.approx(r["floor_std"], rel=0.1)
    assert r["floor_std"] == pytest.approx(math.sqrt(np.sum(p * (1 - p))) / 2000, rel=0.05)


def test_stability_hand_worked():
    labels = np.array([0, 1, 2, 3])
    preds = np.array([[0, 1, 2, 0], [0, 1, 1, 3], [0, 2, 2, 3]])
    r = stats.stability(preds, labels)
    # every pair differs on 2 of 4; correctness [1110], [1101], [1011]
    assert r["churn"] == pytest.approx(0.5)
    assert r["some_wrong"] == pytest.approx(0.75) and r["all_wrong"] == 0
    assert r["ensemble_acc"] == 1.0 and r["mean_acc"] == pytest.approx(0.75)
    # po = 2/4, pe = .75^2 + .25^2 = .625: kappa = (.5 - .625) / .375
    assert r["kappa"] == pytest.approx(-1 / 3)


def test_kappa_matches_the_definition():
    rng = np.random.default_rng(0)
    a, b = rng.random(500) < 0.8, rng.random(500) < 0.7
    po = np.mean(a == b)
    pe = a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean())
    assert stats.kappa(a, b) == pytest.approx((po - pe) / (1 - pe))


def test_noise_floor_and_stability_on_real_predictions(widths, idx_root):
    df = collect(widths)
    floor, agree = noise_floor(df), stability(df)
    labels = np.frombuffer((idx_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").read_bytes()[8:], np.uint8)
    done = df[(df["status"] == "complete") & (df["model.hidden"] == "[32, 16]")]
    preds = np.stack([np.load(Path(f) / "predictions.npy") for f in done["folder"]])
    assert (preds == labels).mean(axis=1) == pytest.approx(done["test_acc"].to_numpy(), abs=1e-6)
    row = floor.iloc[0]
    assert row["n_test"] == len(labels) and row["std"] == pytest.approx(done["test_acc"].std(), abs=1e-6)
    assert row["remainder_std"] == pytest.approx(math.sqrt(max(0, row["std"] ** 2 - row["floor_std"] ** 2)))
    assert agree.iloc[0]["churn"] == pytest.approx(np.mean([(preds[i] != preds[j]).mean()
                                                            for i, j in itertools.combinations(range(4), 2)]))


# --------------------------------------------------------------------------- variance

def _ems_two_way(y: np.ndarray) -> dict[str, float]:
    """Textbook two-way random-effects ANOVA on y[a, b, r], straight from the sums of squares."""
    a, b, r = y.shape
    m, mi, mj, mij = y.mean(), y.mean((1, 2)), y.mean((0, 2)), y.mean(2)
    ms_a = b * r * np.sum((mi - m) ** 2) / (a - 1)
    ms_b = a * r * np.sum((mj - m) ** 2) / (b - 1)
    ms_ab = r * np.sum((mij - mi[:, None] - mj[None, :] + m) ** 2) / ((a - 1) * (b - 1))
    if r == 1:
        return {"a": (ms_a - ms_ab) / b, "b": (ms_b - ms_ab) / a, "res": ms_ab}
    ms_e = np.sum((y - mij[..., None]) ** 2) / (a * b * (r - 1))
    return {"a": (ms_a - ms_ab) / (b * r), "b": (ms_b - ms_ab) / (a * r), "ab": (ms_ab - ms_e) / r, "res": ms_e}


def _grid_frame(y: np.ndarray) -> pd.DataFrame:
    a, b, r = y.shape
    rows = [{"seed": 0, "seeds.init": i, "seeds.order": j, "seeds.dropout": (i * b + j) * r + k, "test_acc": y[i, j, k]}
            for i in range(a) for j in range(b) for k in range(r)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("reps", [1, 2])
def test_variance_components_match_the_textbook(reps):
    rng = np.random.default_rng(reps)
    y = (0.9 + rng.normal(0, 0.02, (4, 1, 1)) + rng.normal(0, 0.01, (1, 3, 1))
         + rng.normal(0, 0.005, (4, 3, reps)))
    expect = _ems_two_way(y)
    table, notes = components(_grid_frame(y), ["seed", "seeds.init", "seeds.order", "seeds.dropout"], "test_acc")
    got = dict(zip(table["source"], table["variance"]))
    assert got["init"] == pytest.approx(max(0, expect["a"]))
    assert got["order"] == pytest.approx(max(0, expect["b"]))
    if reps == 1:
        assert got["init × order + residual"] == pytest.approx(expect["res"])
        assert any("cannot be separated" in n for n in notes)
    else:
        assert got["init × order"] == pytest.approx(max(0, expect["ab"]))
        assert got["residual"] == pytest.approx(expect["res"])
        assert any("dropout also vary" in n for n in notes)  # per-run dropout seeds: within cells
    assert table["share"].iloc[:-1].sum() == pytest.approx(1.0)


def test_variance_recovers_known_components():
    rng = np.random.default_rng(0)
    y = 0.9 + rng.normal(0, 0.03, (30, 1, 1)) + rng.normal(0, 0.01, (1, 30, 1)) + rng.normal(0, 0.01, (30, 30, 1))
    table, _ = components(_grid_frame(y), ["seeds.init", "seeds.order"], "test_acc")
    got = dict(zip(table["source"], table["std"]))
    assert got["init"] == pytest.approx(0.03, rel=0.25) and got["order"] == pytest.approx(0.01, rel=0.25)


def test_variance_on_a_real_grid_and_its_absence(grid, widths, capsys):
    table = variance(collect(grid))
    assert list(table["source"]) == ["init", "order", "init × order + residual", "total"]
    assert list(table["df"]) == [2, 2, 4, 8]
    assert table["variance"].iloc[-1] == pytest.approx(table["variance"].iloc[:-1].sum())
    assert main(["variance", str(grid)]) == 0
    assert "cannot be separated" in capsys.readouterr().out
    # a plain seed sweep moves all sources together: nothing to split
    none = variance(collect(widths))
    assert none.empty and all("only seed varies" in n for n in none.attrs["notes"])
    assert main(["variance", str(widths)]) == 1


# --------------------------------------------------------------------------- output

def test_markdown_shows_percentages_and_csv_keeps_precision(widths, tmp_path, capsys):
    df = collect(widths)
    table = summarize(df)
    text = markdown(table)
    assert "mean (%)" in text and f"{100 * table['mean'].iat[0]:.2f}" in text
    assert main(["summary", str(widths), "--csv", str(tmp_path / "s.csv")]) == 0
    out = capsys.readouterr()
    assert "| model.hidden |" in out.out and "noise floor" in out.out and "1 missing" in out.err
    back = pd.read_csv(tmp_path / "s.csv")
    assert back["mean"].to_numpy() == pytest.approx(table["mean"].to_numpy(), rel=1e-15)
    assert main(["compare", str(widths), "--by", "model.hidden"]) == 0
    assert "[32, 16]" in capsys.readouterr().out


def _study(folder: Path) -> None:
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{folder / 'optuna.db'}", study_name="mlp_optuna",
                                direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: 0.9 + t.suggest_float("optimizer.lr", 1e-4, 1e-2, log=True)
                   + 0.001 * t.suggest_int("width", 1, 8), n_trials=12)


def test_report_writes_every_promised_file(widths, grid, tmp_path):
    _study(widths)
    try:
        written = report(widths, tmp_path / "w", by="model.hidden")
    finally:
        (widths / "optuna.db").unlink()
    files = {p.name for p in (tmp_path / "w").iterdir()}
    assert set(written["file"]) == files
    assert files <= set(REPORT_FILES)  # what a later report into the folder knows to replace
    assert {"report.md", "summary.md", "summary.csv", "compare.md", "compare.csv", "stability.md",
            "stability.csv", "noise_floor.csv", "optimism.csv", "expected_max.csv", "runs.csv", "problems.csv",
            "distribution.png", "curves.png", "ecdf.png", "expected_max.png", "churn.png",
            "optuna_history.png", "optuna_importances.png"} <= files
    assert "variance.md" not in files  # no grid in a seed sweep
    report(grid, tmp_path / "g")
    assert (tmp_path / "g" / "variance.md").exists() and (tmp_path / "g" / "variance.csv").exists()
    assert {p.name for p in (tmp_path / "g").iterdir()} <= set(REPORT_FILES)
    for png in [*(tmp_path / "w").glob("*.png"), *(tmp_path / "g").glob("*.png")]:
        assert png.stat().st_size > 5_000, png
        assert matplotlib.image.imread(png).ndim == 3
    index = (tmp_path / "w" / "report.md").read_text()
    assert "8 complete runs" in index and "1 missing" in index and "![curves.png](curves.png)" in index
    summary = (tmp_path / "w" / "summary.md").read_text()
    assert "Noise floor" in summary and "mean (%)" in summary


def test_report_of_validation_metrics_with_a_config_without_validation(tmp_path):
    for k in range(3):
        write_record(tmp_path / "runs" / "b" / f"seed={k}", seed=k, test_acc=0.8 + 0.01 * k)
        folder = write_record(tmp_path / "runs" / "a" / f"seed={k}", seed=k, hidden=(64,))
        rec = json.loads((folder / "results.json").read_text())
        rec["metrics"].update(val_acc=None, val_loss=None, selection="test_acc")  # data.val_size=0
        rec["config"]["data"]["val_size"] = 0
        (folder / "results.json").write_text(json.dumps(rec))
    written = report(tmp_path / "runs", tmp_path / "out", metric="val_acc")
    assert {"report.md", "ecdf.png", "expected_max.png"} <= set(written["file"])


def test_a_report_replaces_the_earlier_one_in_its_folder_and_nothing_else(widths, grid, tmp_path, monkeypatch):
    out = tmp_path / "out"
    report(grid, out)
    assert (out / "variance.md").exists()
    (out / "notes.txt").write_text("mine")
    (out / "older").mkdir()
    report(widths, out)
    # the grid's variance tables would be read as the seed sweep's
    assert not (out / "variance.md").exists() and not (out / "variance.csv").exists()
    assert (out / "notes.txt").read_text() == "mine" and (out / "older").is_dir()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def broken(*args):
        raise RuntimeError("the figure failed")
    monkeypatch.setattr("analysis.plots.ecdf", broken)
    with pytest.raises(RuntimeError):
        report(grid, out)
    # a report that fails half way leaves the earlier one whole, and no scratch behind
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["older"]
    with pytest.raises(RuntimeError):
        report(grid, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    monkeypatch.undo()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "variance.md").write_text("my notes")  # no report.md: not an earlier report's
    report(widths, tmp_path / "mine")
    assert (tmp_path / "mine" / "variance.md").read_text() == "my notes"


def test_cli_refuses_a_negative_seed_and_an_empty_folder(tmp_path, capsys):
    write_record(tmp_path / "runs" / "a")
    with pytest.raises(SystemExit) as usage:
        main(["summary", str(tmp_path / "runs"), "--seed", "-1"])
    assert usage.value.code == 2 and "a seed is a whole number >= 0" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["problems", str(tmp_path / "empty")]) == 1
    assert "no results.json or manifest.json under" in capsys.readouterr().err


def test_report_cli_on_no_complete_runs(tmp_path, capsys):
    write_record(tmp_path / "runs" / "a", status="running", heartbeat=0)
    assert main(["report", str(tmp_path / "runs"), "-o", str(tmp_path / "out")]) == 1
    assert "1 stale" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_compare_shows_the_compact_columns_unless_asked_for_all_and_its_csv_holds_every_column(widths, tmp_path,
                                                                                               capsys):
    assert main(["compare", str(widths), "--csv", str(tmp_path / "c.csv")]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| a"))
    assert "verdict" in header and "p_a_gt_b" in header and "welch_p" not in header and "hedges_g" not in header
    assert {"welch_p", "hedges_g", "n_for_power"} <= set(pd.read_csv(tmp_path / "c.csv").columns)
    assert main(["compare", str(widths), "--all"]) == 0
    assert "hedges_g" in capsys.readouterr().out


@pytest.mark.slow
def test_a_summary_piped_into_head_ends_without_an_error(widths):
    proc = subprocess.Popen([sys.executable, "-m", "analysis", "summary", str(widths)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # what head does after its lines
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and b"Broken pipe" not in err and b"Traceback" not in err


def test_a_summary_flags_a_small_n_and_a_report_opens_with_the_headline(widths, tmp_path):
    table = summarize(collect(widths))
    assert (table["small_n"] == "yes").all()  # 4 seeds a width
    report(widths, tmp_path / "r")
    index = (tmp_path / "r" / "report.md").read_text().splitlines()
    assert index[2].startswith("## Headline") and "model.hidden=" in index[4] and "n = 4 (small n)" in index[4]
    pair = compare(collect(widths)).iloc[0]  # the headline says this pair's verdict, whichever it is
    line = next(line for line in index if line.startswith(f"- {pair['a']} vs {pair['b']}: "))
    assert line.endswith(f"P(a > b) = {pair['p_a_gt_b']:.2f}: {pair['verdict']}")


def test_a_headline_with_nothing_swept_names_its_config_as_the_tables_do(tmp_path):
    for seed in range(3):
        write_record(tmp_path / f"seed={seed}", seed=seed, test_acc=0.9 + seed / 100)
    report(tmp_path, tmp_path / "r")
    line = (tmp_path / "r" / "report.md").read_text().splitlines()[4]
    assert line.startswith("- all runs: 91.00% ± 1.00 (std), n = 3"), line


def test_widths_are_listed_by_their_numbers_not_their_text(tmp_path):
    for hidden in [(1024,), (128, 64), (64,), (256,)]:
        for seed in range(3):
            write_record(tmp_path / f"h{hidden[0]}_{len(hidden)}" / f"seed={seed}", hidden=hidden, seed=seed,
                         test_acc=0.9 + hidden[0] / 1e5 + seed / 1e3)
    df = collect(tmp_path)
    assert list(summarize(df)["model.hidden"]) == ["[64]", "[128, 64]", "[256]", "[1024]"]
    pairs = compare(df, by="model.hidden")
    assert list(zip(pairs["a"], pairs["b"]))[:3] == [("[64]", "[128, 64]"), ("[64]", "[256]"), ("[64]", "[1024]")]


def test_a_searchs_configs_are_listed_in_trial_order(tmp_path):
    for trial, lr in enumerate([3e-3, 1e-3, 2e-3]):
        folder = write_record(tmp_path / f"trial_{trial:04d}", lr=lr)
        rec = json.loads((folder / "results.json").read_text())
        rec["config"]["trial"] = trial
        (folder / "results.json").write_text(json.dumps(rec))
    assert list(summarize(collect(tmp_path))["optimizer.lr"]) == [3e-3, 1e-3, 2e-3]
