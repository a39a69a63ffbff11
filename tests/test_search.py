"""Optuna searches: the sweeper's plan, study and trials in this process (with a launcher that
launches no process), and, in the slow tier, real `python run.py -m` searches: pruning, grids,
several objectives, kills and concurrent searches."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from conftest import (
    ROOT,
    SEARCH,
    FakeLauncher,
    dead_pid,
    history_epochs,
    record,
    results,
    run,
    search_config,
    start,
    sweeper_for,
    wait_until,
    write_record,
)

from neuralforge.record.errors import ConfigError
from neuralforge.record.files import HISTORY, MANIFEST, RESULTS
from neuralforge.record.study import Attr
from neuralforge.search.sweeper import Search


def study_of(sweep_dir) -> optuna.Study:
    return optuna.load_study(study_name="mlp_optuna", storage=f"sqlite:///{sweep_dir}/optuna.db")


@pytest.mark.slow
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
    assert "Launching" not in again.stdout + again.stderr
    assert [t.state.name for t in study_of(tmp_path).trials][2] == "PRUNED"


@pytest.mark.slow
def test_a_killed_pruning_search_resumes_its_trial_from_its_epoch(idx_root, tmp_path):
    args = [*SEARCH, "seeds_per_trial=2", "trainer.epochs=30", "optimizer.lr=tag(log,interval(1e-3,1e-2))",
            "hydra/sweeper/pruner=median", "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={tmp_path}"]
    proc = start(idx_root, *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    folder = tmp_path / "trial_0000" / "seed=0"
    wait_until(lambda: (folder / HISTORY).exists() and len(history_epochs(folder)) >= 3, timeout=120)
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
    with open(folder / HISTORY) as f:
        seed0 = [float(row["val_acc"]) for row in csv.DictReader(f)]
    assert trial.user_attrs["val_acc_per_seed_by_epoch"]["30"][0] == seed0[-1]


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_grid_search_runs_its_grid_and_a_relaunch_trains_nothing(idx_root, tmp_path):
    args = [*SEARCH, "seeds_per_trial=1", "trainer.epochs=1", "hydra/sweeper/sampler=grid",
            "hydra.sweeper.n_trials=null", "trainer.batch_size=choice(64,128)", "optimizer.lr=range(0.001,0.004,0.002)",
            f"hydra.sweep.dir={tmp_path}"]
    run(idx_root, *args)
    drawn = sorted((t.params["trainer.batch_size"], t.params["optimizer.lr"]) for t in study_of(tmp_path).trials)
    assert drawn == [(64, 0.001), (64, 0.003), (128, 0.001), (128, 0.003)]  # the grid, each point once
    stamps = {f: (f / RESULTS).stat().st_mtime_ns for f in results(tmp_path)}
    out = run(idx_root, *args)
    assert "Launching" not in out.stdout + out.stderr and len(study_of(tmp_path).trials) == 4
    assert {f: (f / RESULTS).stat().st_mtime_ns for f in results(tmp_path)} == stamps


@pytest.mark.slow
def test_a_multi_objective_search_writes_its_pareto_front(idx_root, tmp_path):
    run(idx_root, *SEARCH, "seeds_per_trial=2", "trainer.epochs=1", "objective=[val_acc,n_params]",
        "hydra.sweeper.direction=[maximize,minimize]", "hydra/sweeper/pruner=none", "model.hidden=choice([8],[64,32])",
        "hydra.sweeper.n_trials=3",
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
    sweeper = sweeper_for(search_config(tmp_path, *overrides))
    with pytest.raises(ConfigError) as refused:
        sweeper.check(sweeper.config, [])  # what sweep() does first, before the study is opened
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_search_keeps_n_jobs_trials_in_flight_and_a_worker_asks_again_as_soon_as_its_trial_ends(tmp_path):
    # trial 0 ends quickly, trials 1 and 2 take long: trial 2 is asked for when trial 0 ends, not
    # when trial 1 does
    launcher = FakeLauncher(tmp_path, duration=lambda n: 0.1 if n == 0 else 1.0)
    sweeper = sweeper_for(search_config(tmp_path, "hydra/launcher=joblib", "hydra.sweeper.n_jobs=2",
                                        "hydra.sweeper.n_trials=3"), launcher)
    sweeper.sweep([])
    trials = optuna.load_study(study_name="mlp_optuna", storage=f"sqlite:///{tmp_path}/optuna.db").trials
    asked = {t.number: t.datetime_start.timestamp() for t in trials}
    told = {t.number: t.datetime_complete.timestamp() for t in trials}
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert asked[1] < launcher.ended[0]  # two in flight from the start
    assert launcher.ended[0] <= asked[2] < launcher.ended[0] + 0.5 < launcher.ended[1]  # at once, not after trial 1
    assert told[0] <= asked[2] and launcher.launched[2] - asked[2] < 0.5


def test_the_noise_aware_pruner_spares_a_trial_within_its_seeds_noise_and_prunes_one_beyond_it():
    from neuralforge.search.pruners import SeedNoisePruner

    pruner = SeedNoisePruner(k=2.0, percentile=50.0, n_startup_trials=3)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for value in (0.90, 0.91, 0.92):
        done = study.ask()
        done.report(value, 1)
        study.tell(done, value)

    def behind(per_seed):  # a trial whose members' mean at epoch 1 is 0.87, the median 0.91
        trial = study.ask()
        trial.set_user_attr(Attr.PER_SEED_BY_EPOCH, {"1": per_seed})
        trial.report(sum(per_seed) / len(per_seed), 1)
        return trial.should_prune()

    assert not behind([0.81, 0.93, 0.87])  # 2 standard errors (0.069) reach past the median
    assert behind([0.86, 0.88, 0.87])  # its seeds agree: 0.87 is behind beyond their noise
    assert optuna.pruners.MedianPruner(n_startup_trials=3).prune(study, study.trials[-2])  # which the median prunes


def test_the_noise_aware_pruner_by_default_keeps_only_trials_that_may_still_be_the_best():
    from neuralforge.search.pruners import SeedNoisePruner

    study = optuna.create_study(direction="maximize", pruner=SeedNoisePruner())  # the presets' pruner
    for value in (0.90, 0.95):  # its 2 start-up trials
        done = study.ask()
        done.report(value, 1)
        study.tell(done, value)

    def at(per_seed):  # members' mean 0.93: above the median of the two, behind the best
        trial = study.ask()
        trial.set_user_attr(Attr.PER_SEED_BY_EPOCH, {"1": per_seed})
        trial.report(sum(per_seed) / len(per_seed), 1)
        return trial.should_prune()

    assert at([0.92, 0.93, 0.94])  # its seeds agree: 0.93 is behind 0.95 beyond their noise
    assert not at([0.88, 0.93, 0.98])  # 2 standard errors (0.058) reach past the best


# ---------------------------------------------------------------- the sweeper in this process
def search(tmp_path, *overrides, launcher=None) -> Search:
    """One launch of a search, ready to ask for trials, as sweep() builds it."""
    sweeper = sweeper_for(search_config(tmp_path, *overrides), launcher)
    plan = sweeper.check(sweeper.config, [])
    storage, study = sweeper.open_study(plan)
    return Search(sweeper, plan, storage, study, tmp_path, sweeper.config, sweeper.launcher)


SPACE = ["hydra.sweeper.params={optimizer.lr:'tag(log,interval(1e-4,1e-1))',"
         "trainer.batch_size:'choice(32,64,128,256)'}",
         "hydra/sweeper/sampler=tpe", "hydra.sweeper.sampler.seed=0"]


def test_searches_asking_at_once_draw_different_points_and_a_seed_replays_them(tmp_path):
    # two searches started together: both open the study, seeing the same trials, before either asks
    a, b = search(tmp_path / "shared", *SPACE), search(tmp_path / "shared", *SPACE)
    drawn = []
    for _ in range(3):
        drawn += [tuple(a.ask()[1][:2]), tuple(b.ask()[1][:2])]
    assert len(set(drawn)) == 6
    alone = search(tmp_path / "alone", *SPACE)
    assert [tuple(alone.ask()[1][:2]) for _ in range(6)] == drawn  # trial k draws with seed + k


def test_a_trial_of_another_host_is_failed_only_once_its_heartbeat_stops(tmp_path, monkeypatch):
    first = search(tmp_path)
    queued, gone, _orphan = first.study.ask(), first.study.ask(), first.study.ask()
    for trial, beat in ((queued, time.time()), (gone, time.time() - 3600)):
        trial.set_user_attr(Attr.HOST, "node-a")  # a SLURM job: queued for long, or its search died
        trial.set_user_attr(Attr.HEARTBEAT, beat)
    later = search(tmp_path)  # a relaunch judges the trials it finds
    assert [t.state.name for t in later.study.trials] == ["RUNNING", "FAIL", "RUNNING"]
    # no owner at all: the search died between asking and claiming it; after a grace period
    monkeypatch.setattr("neuralforge.search.sweeper.ORPHAN_AFTER_S", 0.0)
    later.take_stale()
    assert [t.state.name for t in later.study.trials] == ["RUNNING", "FAIL", "FAIL"]
    queued.set_user_attr(Attr.HEARTBEAT, 0.0)
    before = time.time()
    later.in_flight = {queued.number: queued}
    with later.heartbeat():
        pass
    assert later.study.trials[0].user_attrs[Attr.HEARTBEAT] >= before  # refreshed at once, not only later


def test_a_trial_of_this_host_whose_search_is_dead_is_resumed_if_launched_and_failed_if_not(tmp_path):
    first = search(tmp_path)
    launched, never = first.ask()[0], first.study.ask()
    for trial in (launched, never):
        trial.set_user_attr(Attr.HOST, first.me[Attr.HOST])
        trial.set_user_attr(Attr.PID, dead_pid())
    later = search(tmp_path)
    assert [t.number for t in later.resumed] == [launched.number]
    assert [t.state.name for t in later.study.trials] == ["RUNNING", "FAIL"]
    assert later.study.trials[1].user_attrs[Attr.STALE] and later.counted() == 1  # the failed one is replaced


def test_a_trial_failed_by_another_search_is_not_told_twice_nor_expected(tmp_path):
    from hydra.core.utils import JobReturn, JobStatus
    s = search(tmp_path)
    trial, _ = s.ask()
    s.write_manifest()  # the launch lists it
    assert len(json.loads((tmp_path / MANIFEST).read_text())["jobs"]) == 1
    trial.set_user_attr(Attr.STALE, True)  # what another host's take_stale did
    s.study.tell(trial, state=optuna.trial.TrialState.FAIL)
    write_record(tmp_path / "trial_0000", objective={"val_acc": 0.9})
    ret = JobReturn(status=JobStatus.COMPLETED)
    ret.return_value = 0.9
    s.tell(trial, ret, tmp_path / "trial_0000")
    assert s.study.trials[0].state.name == "FAIL"
    s.write_manifest()  # a replaced trial is no job the sweep still expects
    assert json.loads((tmp_path / MANIFEST).read_text())["jobs"] == []
    with pytest.raises(Exception, match="no trial of study mlp_optuna completed"):
        s.report()


def test_the_objective_is_read_from_the_jobs_records(tmp_path):
    launcher = FakeLauncher(tmp_path, value=lambda n: 0.5 + n / 10)
    sweeper_for(search_config(tmp_path, "hydra.sweeper.n_trials=2"), launcher).sweep([])
    study = optuna.load_study(study_name="mlp_optuna", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.value for t in study.trials] == [record(tmp_path / f"trial_{n:04d}").objective["val_acc"]
                                                for n in range(2)] == [0.5, 0.6]


def test_a_search_compares_resolved_settings_and_refuses_a_relaunch_with_others(tmp_path):
    for overrides in (["seed=0"], ["seed=0", "seeds.init=0", "threads=1"]):  # ${seed} spelt out: the same
        s = search(tmp_path, "trainer.epochs=1", *overrides)
        s.sweeper.check_same_search(search(tmp_path).study, search(tmp_path).plan, s.config)
    for other, message in ((["seeds.init=1"], "seeds.init: 0 there, 1 here"),
                           (["trainer.epochs=3"], "searches another config (trainer.epochs: 1 there, 3 here)")):
        s = search(tmp_path, "trainer.epochs=1", *other) if other[0] != "trainer.epochs=3" else search(tmp_path, *other)
        with pytest.raises(ConfigError, match=re.escape(message)):
            s.sweeper.check_same_search(s.study, s.plan, s.config)


@pytest.mark.parametrize("override, message", [
    ("data.val_size=0", "a search needs a validation set"),
    ("hydra.sweeper.storage=optuna.db", "cannot be opened"),  # a path, not a URL
    ("n_seeds=3", "seeds_per_trial=2 but n_seeds=3"),  # before any trial: no study holds it to the mistake
    ("optimizer.lr=-1", "optimizer.lr must be positive"),
    ("hydra.sweeper.n_trials=0", "hydra.sweeper.n_trials=0: give the study's number of trials (>= 1)"),
    ("hydra.sweeper.n_trials=-1", "hydra.sweeper.n_trials=-1"),
    ("hydra.sweeper.max_failure_rate=2", "max_failure_rate=2.0: give a fraction in [0, 1]"),
    ("hydra.sweeper.pruner.k=-1", "hydra.sweeper.pruner (neuralforge.search.pruners.SeedNoisePruner) refused"),
    ("hydra.sweeper.pruner._target_=os.system", "hydra.sweeper.pruner (os.system) refused"),
])
def test_a_search_refuses_bad_input_in_one_line_before_its_study_holds_a_trial(tmp_path, override, message):
    sweeper = sweeper_for(search_config(tmp_path, "hydra/sweeper/pruner=seed_noise", override))
    with pytest.raises(ConfigError) as refused:
        sweeper.open_study(sweeper.check(sweeper.config, []))
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert not list(tmp_path.glob("trial_*"))


@pytest.mark.parametrize("preset", ["mlp_optuna", "mlp_recipe", "mlp_recipe_long"])
@pytest.mark.parametrize("sampler", ["tpe", "random", "grid", "cmaes", "gp", "qmc"])
def test_every_sampler_composes_with_every_preset(tmp_path, preset, sampler):
    cfg = search_config(tmp_path, f"hparams_search={preset}", f"hydra/sweeper/sampler={sampler}")
    assert cfg.hydra.sweeper.sampler._target_.startswith("optuna.samplers.")


def test_a_full_disk_stops_the_search_in_one_line_and_its_trial_resumes_on_the_next_launch(tmp_path):
    from hydra.core.utils import JobReturn, JobStatus

    from neuralforge.record.errors import DiskFullError

    class FullDisk(FakeLauncher):
        def launch(self, job_overrides, initial_job_idx):
            ret = JobReturn(overrides=list(job_overrides[0]), status=JobStatus.FAILED)
            ret.return_value = DiskFullError(f"no space left on the device while writing {tmp_path}/trial_0000/last.pt "
                                             f"(ENOSPC): free some and launch the same command again")
            return [ret]

    with pytest.raises(DiskFullError, match="ENOSPC") as stop:
        sweeper_for(search_config(tmp_path, "hydra.sweeper.n_trials=2"), FullDisk(tmp_path)).sweep([])
    assert "\n" not in str(stop.value) and str(tmp_path) in str(stop.value)
    study = optuna.load_study(study_name="mlp_optuna", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state.name for t in study.trials] == ["RUNNING"]  # not FAIL: nothing of it is lost
    launcher = FakeLauncher(tmp_path)
    sweeper_for(search_config(tmp_path, "hydra.sweeper.n_trials=2"), launcher).sweep([])
    assert sorted(launcher.launched) == [0, 1]  # trial 0 resumed, and only one new trial: 2 in all
    study = optuna.load_study(study_name="mlp_optuna", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]


def test_the_search_uses_no_private_name_of_hydra_or_optuna():
    sources = [ROOT / "hydra_plugins/neuralforge_optuna/sweeper.py", ROOT / "neuralforge/sweeps.py",
               *sorted((ROOT / "neuralforge/search").glob("*.py"))]
    for path in sources:
        # a private module (`hydra._internal`, `hydra_optuna_sweeper._impl`) or attribute
        # (`trial._trial_id`); Hydra's config keys (`_target_`, `_partial_`) end in an underscore
        assert not re.findall(r"(?:import|from)\s+(?!__future__)[\w.]*\b_\w+|\._[a-z]\w*[a-z0-9]\b",
                              path.read_text()), path


@pytest.mark.slow
def test_a_refused_search_prints_its_one_line_and_no_summary(idx_root, tmp_path):
    out = run(idx_root, "-m", "hparams_search=mlp_optuna", "hydra.sweeper.n_trials=0", f"hydra.sweep.dir={tmp_path}",
              check=False)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "hydra.sweeper.n_trials=0" in out.stderr
    assert "Next:" not in out.stdout + out.stderr and "runs:" not in out.stdout + out.stderr
