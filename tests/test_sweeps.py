"""Grid sweeps: the manifest and the sweep summary in this process, and, in the slow tier, real
`python run.py -m` processes: Hydra's folders, launchers, exit codes, kills."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import optuna
import pytest
from conftest import CONF, FAST, ROOT, dead_pid, folder_of, record, results, run, start, wait_until

from neuralforge import hardware, sweeps
from neuralforge.record.files import MANIFEST, RESULTS


def test_cli_bad_input_is_one_line_and_non_zero(idx_root, tmp_path):
    out = run(idx_root, "model.hidden=[0]", f"hydra.run.dir={tmp_path}", check=False)
    assert out.returncode != 0
    assert "error: model widths must be positive" in out.stderr and "Traceback" not in out.stderr


def test_seed_sweep_gives_one_complete_record_per_seed(idx_root, tmp_path):
    out = run(idx_root, "-m", "seed=0,1,2", f"hydra.sweep.dir={tmp_path}")
    recs = results(tmp_path)
    assert len(recs) == 3 and all(r.status == "complete" for r in recs.values())
    assert {folder_of(tmp_path, f"seed={s}"): s for s in range(3)} == {f: r.seed for f, r in recs.items()}
    assert len({r.metrics.val_acc for r in recs.values()}) > 1
    assert "3 runs: 3 complete, 0 failed, 0 stale, 0 running, 0 missing" in out.stdout + out.stderr
    assert f"Next: python -m analysis summary {tmp_path}" in out.stdout + out.stderr


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_others(idx_root, tmp_path):
    out = run(idx_root, "-m", "optimizer=sgd", "optimizer.lr=0.05,1e12", "seed=0,1", f"hydra.sweep.dir={tmp_path}",
              check=False)
    assert out.returncode != 0
    states = sorted((r.config["optimizer"]["lr"], r.seed, r.status) for r in results(tmp_path).values())
    assert states == [(0.05, 0, "complete"), (0.05, 1, "complete"), (1e12, 0, "failed"), (1e12, 1, "failed")]
    assert "2 complete, 2 failed" in out.stdout + out.stderr


@pytest.mark.slow
def test_ctrl_c_on_a_joblib_sweep_names_the_sweep_folder(idx_root, tmp_path):
    # a terminal's Ctrl-C reaches the whole process group: the parent and joblib's workers
    proc = start(idx_root, "trainer.epochs=500", "-m", "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                 f"hydra.sweep.dir={tmp_path}", start_new_session=True)
    wait_until(lambda: list(tmp_path.glob("*/last.pt")), timeout=120)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err and f"Sweep {tmp_path}" not in out
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [f"interrupted: the same command with hydra.sweep.dir={tmp_path} resumes each job from its last "
                     f"finished epoch"], err


@pytest.mark.slow
def test_a_search_config_run_without_multirun_says_so(idx_root, tmp_path):
    out = run(idx_root, "hparams_search=mlp_optuna", "trainer.epochs=1", f"hydra.run.dir={tmp_path}")
    assert "defines a sweep (hydra.sweeper.params) but runs without -m" in out.stdout + out.stderr
    out = run(idx_root, "trainer.epochs=1", f"hydra.run.dir={tmp_path / 'plain'}")
    assert "without -m" not in out.stdout + out.stderr


@pytest.mark.slow
def test_ctrl_c_is_one_line_and_leaves_a_resumable_run(idx_root, tmp_path):
    proc = start(idx_root, "trainer.epochs=500", f"hydra.run.dir={tmp_path}")
    wait_until((tmp_path / RESULTS).exists, timeout=60)  # written after last.pt, each epoch
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"interrupted: the same command with hydra.run.dir={tmp_path} resumes "
                                            f"from the last finished epoch")
    assert record(tmp_path).status == "running"  # resumable: not failed
    assert sweeps.job_states(tmp_path)["stale"] == [tmp_path]  # its process is gone


@pytest.mark.slow
def test_a_relaunch_without_an_earlier_mistake_succeeds_and_still_lists_it(idx_root, tmp_path):
    out = run(idx_root, "-m", "optimizer.lr=0.001,-1", f"hydra.sweep.dir={tmp_path}", check=False)
    assert out.returncode != 0 and "optimizer.lr must be positive" in out.stderr
    out = run(idx_root, "-m", "optimizer.lr=0.001,0.01", f"hydra.sweep.dir={tmp_path}")  # check: exits 0
    assert "2 complete, 1 failed" in out.stdout + out.stderr  # the mistake is not forgotten
    assert sweeps.job_states(tmp_path)["failed"] == [folder_of(tmp_path, "optimizer.lr=-1")]


@pytest.mark.slow
def test_a_job_refused_before_its_first_record_counts_as_failed_not_missing(idx_root, tmp_path):
    out = run(idx_root, "-m", "trainer.batch_size=0,64", f"hydra.sweep.dir={tmp_path}", check=False)
    assert out.returncode != 0
    assert "1 complete, 1 failed, 0 stale, 0 running, 0 missing" in out.stdout + out.stderr
    assert sweeps.job_states(tmp_path)["failed"] == [folder_of(tmp_path, "trainer.batch_size=0")]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_parallel_and_cluster_launchers_run_a_sweep(idx_root, tmp_path, launcher):
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else ["hydra.launcher.timeout_min=5"]
    run(idx_root, "-m", "seed=0,1", f"hydra/launcher={launcher}", *extra, f"hydra.sweep.dir={tmp_path}")
    recs = results(tmp_path)
    assert sorted(r.seed for r in recs.values()) == [0, 1]
    assert all(r.status == "complete" for r in recs.values())


def test_jobs_that_share_the_cores_are_those_running_at_once(monkeypatch):
    from hydra import compose, initialize_config_dir
    monkeypatch.setattr(hardware, "available_cores", lambda: 8)
    assert [hardware.jobs_at_once(n) for n in (1, 2, -1, -2, None)] == [1, 2, 8, 7, 1]
    with initialize_config_dir(config_dir=CONF):
        search = compose("config", overrides=["hparams_search=mlp_optuna", "hydra/launcher=joblib"],
                         return_hydra_config=True).hydra
    # joblib's default is a job per core, but the search hands it one trial at a time: it gets every core
    assert search.launcher.n_jobs == -1 and search.sweeper.n_jobs == 1
    assert hardware.jobs_at_once(search.launcher.n_jobs, search.sweeper.n_jobs) == 1
    assert hardware.jobs_at_once(-1, 4) == 4 and hardware.default_threads(4) == 2


@pytest.mark.slow
def test_a_search_on_joblib_asking_one_trial_at_a_time_gives_it_every_core(idx_root, tmp_path):
    default_threads = [o for o in FAST if not o.startswith("threads=")]
    run(idx_root, "-m", "hparams_search=mlp_optuna", "seeds_per_trial=1", "trainer.epochs=1", "hydra/launcher=joblib",
        "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={tmp_path}", fast=default_threads)
    assert [r.config["threads"] for r in results(tmp_path).values()] == [hardware.default_threads(1)]


@pytest.mark.slow
def test_sweep_relaunched_on_another_launcher_finds_its_folders(idx_root, tmp_path):
    default_threads = [o for o in FAST if not o.startswith("threads=")]
    run(idx_root, "-m", "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={tmp_path}",
        fast=default_threads)
    first = results(tmp_path)
    # joblib's two workers got half the cores each; the basic launcher would give one job all of them
    threads = {r.config["threads"] for r in first.values()}
    assert threads == {hardware.default_threads(2)}
    out = run(idx_root, "-m", "seed=0,1", f"threads={threads.pop()}", f"hydra.sweep.dir={tmp_path}",
              fast=default_threads)
    assert (out.stdout + out.stderr).count("Skipped: run already complete") == 2
    assert results(tmp_path) == first  # the same folders, nothing retrained beside them


@pytest.mark.slow
def test_killed_sweep_relaunched_equals_a_clean_sweep(idx_root, tmp_path):
    args = ["-m", "seed=0,1,2", "trainer.epochs=4"]
    run(idx_root, *args, f"hydra.sweep.dir={tmp_path / 'clean'}")

    killed = tmp_path / "killed"
    proc = start(idx_root, *args, f"hydra.sweep.dir={killed}", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                 start_new_session=True)
    wait_until(lambda: (killed / MANIFEST).exists() and (folder_of(killed, "seed=1") / "last.pt").exists(),
               timeout=120)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    states = sweeps.job_states(killed)
    assert states["complete"] == [folder_of(killed, "seed=0")]
    assert folder_of(killed, "seed=1") in states["stale"] + states["complete"]
    assert folder_of(killed, "seed=2") in states["missing"]

    out = run(idx_root, *args, f"hydra.sweep.dir={killed}")
    log = out.stdout + out.stderr
    assert "Skipped: run already complete" in log
    clean = {f.name: r for f, r in results(tmp_path / "clean").items()}
    again = {f.name: r for f, r in results(killed).items()}
    assert sorted(clean) == sorted(again) and len(again) == 3
    for name in clean:
        assert again[name].status == "complete"
        assert again[name].metrics == clean[name].metrics


@pytest.mark.slow
def test_optuna_search_resumes_its_study(idx_root, tmp_path):
    args = ["-m", "hparams_search=mlp_optuna", "seeds_per_trial=2", "trainer.epochs=1",
            "model.hidden=[32,16]",  # fixed on the command line: taken out of the search space
            f"hydra.sweep.dir={tmp_path}"]
    run(idx_root, *args, "hydra.sweeper.n_trials=4")
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.load_study(study_name="mlp_optuna", storage=storage)
    first = {t.number: t.params for t in study.trials}
    assert len(first) == 4 and all(t.state.name == "COMPLETE" for t in study.trials)
    t0 = study.trials[0]
    assert t0.user_attrs["seeds"] == [0, 1] and len(t0.user_attrs["val_acc_per_seed"]) == 2
    assert t0.value == pytest.approx(sum(t0.user_attrs["val_acc_per_seed"]) / 2)
    stamp = (tmp_path / "trial_0000/seed=0/results.json").stat().st_mtime_ns

    run(idx_root, *args, "hydra.sweeper.n_trials=6")
    study = optuna.load_study(study_name="mlp_optuna", storage=storage)
    assert len(study.trials) == 6 and {t.number: t.params for t in study.trials[:4]} == first
    later = [t.params for t in study.trials[4:]]
    assert all(p not in first.values() for p in later)  # the reseeded sampler does not replay
    assert (tmp_path / "trial_0000/seed=0/results.json").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.glob("trial_*")) == [f"trial_{i:04d}" for i in range(6)]
    rec = record(tmp_path / "trial_0005/seed=1")
    assert rec.config["trial"] == 5 and rec.config["n_seeds"] == 2


@pytest.mark.slow
def test_a_search_stops_once_more_trials_failed_than_max_failure_rate(idx_root, tmp_path):
    diverging = ("optimizer=sgd", "optimizer.lr=1e12")  # fixed: every trial's loss turns NaN
    args = ["-m", "hparams_search=mlp_optuna", "seeds_per_trial=1", "trainer.epochs=1", *diverging,
            "hydra.sweeper.n_trials=4", f"hydra.sweep.dir={tmp_path}"]
    out = run(idx_root, *args, "hydra.sweeper.max_failure_rate=0.5", check=False)
    assert out.returncode != 0
    assert "1 of the 1 trials launched failed, more than hydra.sweeper.max_failure_rate=0.5" in out.stderr
    assert "Traceback" not in out.stderr
    study = optuna.load_study(study_name="mlp_optuna", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state.name for t in study.trials] == ["FAIL"]  # stopped after the first, not after four
    assert len(json.loads((tmp_path / MANIFEST).read_text())["jobs"]) == 1
    out = run(idx_root, *args, "hydra.sweeper.max_failure_rate=2", check=False)
    assert out.returncode != 0 and "max_failure_rate=2.0: give a fraction in [0, 1]" in out.stderr


@pytest.mark.slow
def test_optuna_marks_a_killed_trial_failed_and_replaces_it(idx_root, tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    (tmp_path).mkdir(exist_ok=True)
    study = optuna.create_study(study_name="mlp_optuna", storage=storage, direction="maximize")
    ghost = study.ask()  # a trial whose sweeper process is gone
    ghost.set_user_attr("nf_host", os.uname().nodename)
    ghost.set_user_attr("nf_pid", dead_pid())
    run(idx_root, "-m", "hparams_search=mlp_optuna", "seeds_per_trial=1", "trainer.epochs=1",
        "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={tmp_path}")
    study = optuna.load_study(study_name="mlp_optuna", storage=storage)
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "COMPLETE", "COMPLETE"] and study.trials[0].user_attrs["nf_stale"]


@pytest.mark.slow
def test_two_searches_share_one_study(idx_root, tmp_path):
    args = ["-m", "hparams_search=mlp_optuna", "seeds_per_trial=1", "trainer.epochs=1", "model.hidden=[16]",
            "hydra.sweeper.n_trials=8", f"hydra.sweep.dir={tmp_path}"]
    procs = [start(idx_root, *args, stdout=subprocess.DEVNULL) for _ in range(2)]
    assert all(p.wait(timeout=240) == 0 for p in procs), [p.stderr.read() for p in procs]
    study = optuna.load_study(study_name="mlp_optuna", storage=f"sqlite:///{tmp_path}/optuna.db")
    # n_trials is the study's total; two processes asking at the same moment may each add one
    assert 8 <= len(study.trials) <= 9 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert {t.user_attrs["nf_pid"] for t in study.trials} == {p.pid for p in procs}
    drawn = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(drawn)) == len(drawn)  # no point proposed twice
    for t in study.trials:
        rec = record(tmp_path / f"trial_{t.number:04d}")
        assert rec.status == "complete" and rec.config["trial"] == t.number
        assert rec.metrics.val_acc == t.value


def test_a_relaunch_adds_to_the_manifest_and_forgets_only_what_it_drops(tmp_path):
    def job(seed):
        return {"overrides": [f"seed={seed}"], "folder": f"seed={seed}"}

    def folders():
        return [j["folder"] for j in json.loads((tmp_path / MANIFEST).read_text())["jobs"]]

    sweeps.write_manifest(tmp_path, [job(0), job(1)], kind="grid")
    sweeps.write_manifest(tmp_path, [job(1)])  # a subset rerun
    assert folders() == ["seed=0", "seed=1"]
    sweeps.write_manifest(tmp_path, [job(2)])  # a widened sweep
    assert folders() == ["seed=0", "seed=1", "seed=2"]
    sweeps.write_manifest(tmp_path, [], drop={"seed=0"})  # a replaced trial
    assert folders() == ["seed=1", "seed=2"]
    assert json.loads((tmp_path / MANIFEST).read_text())["kind"] == "grid"


@pytest.mark.slow
def test_a_run_refused_before_training_leaves_no_folder_but_a_folder_with_runs_stays(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NEURALFORGE_DATA"}
    refused = [sys.executable, str(ROOT / "run.py"), f"data.root={tmp_path / 'none'}", "data.download=false"]
    out = subprocess.run(refused, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "error: mnist files not found" in out.stderr
    assert not (tmp_path / "outputs").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    out = subprocess.run([*refused, f"hydra.run.dir={kept}"], cwd=tmp_path, env=env, capture_output=True, timeout=120)
    assert out.returncode == 1 and (kept / "notes.txt").exists()


