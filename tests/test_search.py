"""Searches through real `python run.py -m` processes: pruning, grids, several objectives, trials in flight."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys

import optuna
import pytest
import yaml

from neuralforge import records

from conftest import CONF, FAST
from test_sweeps import ROOT, results, run, start, wait_until

SEARCH = ["-m", "hparams_search=mlp_optuna", "hydra.sweeper.params=null"]


def study_of(sweep_dir) -> optuna.Study:
    return optuna.load_study(study_name="mlp_optuna", storage=f"sqlite:///{sweep_dir}/optuna.db")


def history_epochs(folder) -> list[int]:
    with open(folder / records.HISTORY) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_a_search_prunes_trials_of_a_bad_region_and_records_them_as_pruned(idx_root, tmp_path):
    # the grid's order at sampler seed 3: lr 0.002, 0.003, then 10, which learns far less in its
    # first epoch than the median of the two before it
    args = [*SEARCH, "seeds_per_trial=2", "trainer.epochs=3", "optimizer=adam", "optimizer.lr=choice(0.003,0.002,10)",
            "hydra/sweeper/sampler=grid", "hydra.sweeper.sampler.seed=3", "hydra/sweeper/pruner=median",
            "hydra.sweeper.pruner.n_startup_trials=1", f"hydra.sweep.dir={tmp_path}"]
    out = run(idx_root, *args)
    log = out.stdout + out.stderr
    assert "Trial 2 pruned after epoch 1" in log
    # a pruned job ends normally: no "Job failed" and no traceback, on the console or in its log
    assert "Job failed" not in log and "Traceback" not in log + (tmp_path / "trial_0002" / "run.log").read_text()
    trials = study_of(tmp_path).trials
    assert [(t.params["optimizer.lr"], t.state.name) for t in trials] == [
        (0.002, "COMPLETE"), (0.003, "COMPLETE"), (10, "PRUNED")]
    assert sorted(trials[2].intermediate_values) == [1] and sorted(trials[0].intermediate_values) == [1, 2, 3]
    pruned = [r for f, r in results(tmp_path).items() if f.parent.name == "trial_0002"]
    assert [(r.status, r.metrics.epochs_run) for r in pruned] == [("pruned", 1), ("pruned", 1)]
    assert "6 runs: 4 complete, 0 failed, 2 pruned, 0 stale, 0 running, 0 missing" in log

    problems = subprocess.run([sys.executable, "-m", "analysis", "problems", str(tmp_path)], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout
    listed = [line for line in problems.splitlines() if "trial_0002" in line]
    assert len(listed) == 2 and all("pruned" in line and "failed" not in line for line in listed)

    again = run(idx_root, *args)  # the grid is done: a pruned trial counts, and is never resumed
    assert "Launching" not in again.stdout + again.stderr and [t.state.name for t in study_of(tmp_path).trials][2] == "PRUNED"


def test_a_killed_pruning_search_resumes_its_trial_from_its_epoch(idx_root, tmp_path):
    args = [*SEARCH, "seeds_per_trial=2", "trainer.epochs=30", "optimizer.lr=tag(log,interval(1e-3,1e-2))",
            "hydra/sweeper/pruner=median", "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={tmp_path}"]
    proc = start(idx_root, *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    folder = tmp_path / "trial_0000" / "seed=0"
    wait_until(lambda: (folder / records.HISTORY).exists() and len(history_epochs(folder)) >= 3, timeout=120)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    reached = len(history_epochs(folder))
    assert 3 <= reached < 30 and study_of(tmp_path).trials[0].state.name == "RUNNING"

    out = run(idx_root, *args)
    log = out.stdout + out.stderr
    resumed_at = re.search(r"Resuming from epoch (\d+)", log)
    assert "Trial 0 resumes in trial_0000" in log and resumed_at and int(resumed_at[1]) > reached
    [trial] = study_of(tmp_path).trials
    assert trial.state.name == "COMPLETE" and sorted(trial.intermediate_values) == list(range(1, 31))
    assert history_epochs(folder) == list(range(1, 31))
    with open(folder / records.HISTORY) as f:
        seed0 = [float(row["val_acc"]) for row in csv.DictReader(f)]
    assert trial.user_attrs["val_acc_per_seed_by_epoch"]["30"][0] == seed0[-1]


def test_two_pruning_searches_share_one_study(idx_root, tmp_path):
    args = [*SEARCH, "seeds_per_trial=1", "trainer.epochs=2", "optimizer.lr=tag(log,interval(1e-4,10))",
            "hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=2", "hydra.sweeper.n_trials=8",
            f"hydra.sweep.dir={tmp_path}"]
    procs = [start(idx_root, *args, stdout=subprocess.DEVNULL) for _ in range(2)]
    assert all(p.wait(timeout=240) == 0 for p in procs), [p.stderr.read() for p in procs]
    trials = study_of(tmp_path).trials
    assert 8 <= len(trials) <= 9 and {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    assert {t.user_attrs["nf_pid"] for t in trials} == {p.pid for p in procs}
    for t in trials:  # each job reported to its own trial, found by its id
        rec = record(tmp_path / f"trial_{t.number:04d}")
        assert rec.config["trial"] == t.number and rec.status == t.state.name.lower()
        assert sorted(t.intermediate_values) == history_epochs(tmp_path / f"trial_{t.number:04d}")


def test_a_grid_search_runs_its_grid_and_a_relaunch_trains_nothing(idx_root, tmp_path):
    args = [*SEARCH, "seeds_per_trial=1", "trainer.epochs=1", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=null",
            "trainer.batch_size=choice(64,128)", "optimizer.lr=range(0.001,0.004,0.002)", f"hydra.sweep.dir={tmp_path}"]
    run(idx_root, *args)
    drawn = sorted((t.params["trainer.batch_size"], t.params["optimizer.lr"]) for t in study_of(tmp_path).trials)
    assert drawn == [(64, 0.001), (64, 0.003), (128, 0.001), (128, 0.003)]  # the grid, each point once
    stamps = {f: (f / records.RESULTS).stat().st_mtime_ns for f in results(tmp_path)}
    out = run(idx_root, *args)
    assert "Launching" not in out.stdout + out.stderr and len(study_of(tmp_path).trials) == 4
    assert {f: (f / records.RESULTS).stat().st_mtime_ns for f in results(tmp_path)} == stamps


def test_a_multi_objective_search_writes_its_pareto_front(idx_root, tmp_path):
    run(idx_root, *SEARCH, "seeds_per_trial=2", "trainer.epochs=1", "objective=[val_acc,n_params]",
        "hydra.sweeper.direction=[maximize,minimize]", "hydra/sweeper/pruner=none", "model.hidden=choice([8],[64,32])", "hydra.sweeper.n_trials=3",
        f"hydra.sweep.dir={tmp_path}")
    study = study_of(tmp_path)
    assert len(study.directions) == 2
    front = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())["pareto_front"]
    assert sorted(p["trial"] for p in front) == sorted(t.number for t in study.best_trials) and front
    for point in front:
        t = study.trials[point["trial"]]
        assert point["values"] == {"val_acc": t.values[0], "n_params": t.values[1]}
        assert t.values[1] == record(tmp_path / f"trial_{t.number:04d}/seed=0").n_params
    from analysis.report import report
    report([tmp_path], tmp_path / "report")
    assert (tmp_path / "report" / "optuna_pareto.png").stat().st_size > 0


@pytest.mark.parametrize("overrides, message", [
    (["objective=[val_acc,wall_seconds]"],
     "has 1 entries for objective=['val_acc', 'wall_seconds']: give one direction per objective"),
    (["objective=[val_acc,wall_seconds]", "hydra.sweeper.direction=[maximize,minimize]", "hydra/sweeper/pruner=median"],
     "Optuna's pruners are single-objective; use hydra/sweeper/pruner=none or one objective"),
    (["+hydra.sweeper.params.threads='choice(1,2)'"],
     "hydra.sweeper.params.threads: threads says where, how fast or by whom a run computes"),
])
def test_a_search_refuses_objectives_it_cannot_search_in_one_line(tmp_path, overrides, message):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from neuralforge.record.errors import ConfigError
    with initialize_config_dir(config_dir=CONF):
        cfg = compose("config", overrides=["hparams_search=mlp_optuna", *overrides, f"hydra.sweep.dir={tmp_path}"],
                      return_hydra_config=True)
    sweeper = instantiate(cfg.hydra.sweeper, _recursive_=False,
                          _execution_whitelist_=["hydra_plugins.neuralforge_optuna.sweeper.*"])
    sweeper.config = cfg
    with pytest.raises(ConfigError) as refused:
        sweeper.check([])  # what sweep() does first, before the study is opened
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_search_on_joblib_keeps_two_trials_in_flight(idx_root, tmp_path):
    # the grid's order at sampler seed 0: a 1-epoch trial, then two of 200 epochs, long enough on
    # the fixture to outlast the short trial and the gap before its successor (40 did not, once)
    run(idx_root, *SEARCH, "seeds_per_trial=1", "trainer.epochs=choice(1,200)", "optimizer.lr=choice(0.001,0.002)",
        "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=3", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2", f"hydra.sweep.dir={tmp_path}", fast=[o for o in FAST if not o.startswith("trainer.epochs")])
    timing = {r.config["trial"]: (r.config["trainer"]["epochs"], r.timing) for r in results(tmp_path).values()}
    assert [timing[n][0] for n in range(3)] == [1, 200, 200]
    short, long, successor = (timing[n][1] for n in range(3))
    # the short trial's worker took the next trial at once, while the long one still trained
    assert short["heartbeat"] <= successor["started"] < long["heartbeat"]


def test_the_noise_aware_pruner_spares_a_trial_within_its_seeds_noise_and_prunes_one_beyond_it():
    from neuralforge.pruners import SeedNoisePruner
    from neuralforge.search import PER_SEED_BY_EPOCH

    study = optuna.create_study(direction="maximize", pruner=SeedNoisePruner(k=2.0, percentile=50.0, n_startup_trials=3))
    for value in (0.90, 0.91, 0.92):
        done = study.ask()
        done.report(value, 1)
        study.tell(done, value)

    def behind(per_seed):  # a trial whose members' mean at epoch 1 is 0.87, the median 0.91
        trial = study.ask()
        trial.set_user_attr(PER_SEED_BY_EPOCH, {"1": per_seed})
        trial.report(sum(per_seed) / len(per_seed), 1)
        return trial.should_prune()

    assert not behind([0.81, 0.93, 0.87])  # 2 standard errors (0.069) reach past the median
    assert behind([0.86, 0.88, 0.87])  # its seeds agree: 0.87 is behind beyond their noise
    assert optuna.pruners.MedianPruner(n_startup_trials=3).prune(study, study.trials[-2])  # which the median prunes


def test_the_noise_aware_pruner_by_default_keeps_only_trials_that_may_still_be_the_best():
    from neuralforge.pruners import SeedNoisePruner
    from neuralforge.search import PER_SEED_BY_EPOCH

    study = optuna.create_study(direction="maximize", pruner=SeedNoisePruner())  # the presets' pruner
    for value in (0.90, 0.95):  # its 2 start-up trials
        done = study.ask()
        done.report(value, 1)
        study.tell(done, value)

    def at(per_seed):  # members' mean 0.93: above the median of the two, behind the best
        trial = study.ask()
        trial.set_user_attr(PER_SEED_BY_EPOCH, {"1": per_seed})
        trial.report(sum(per_seed) / len(per_seed), 1)
        return trial.should_prune()

    assert at([0.92, 0.93, 0.94])  # its seeds agree: 0.93 is behind 0.95 beyond their noise
    assert not at([0.88, 0.93, 0.98])  # 2 standard errors (0.058) reach past the best
