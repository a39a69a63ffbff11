"""On real servers: a SLURM cluster (scripts/slurm_cluster.sh) and PostgreSQL, both on 127.0.0.1.

What the cluster does to a job is checked through submitit's own API, as Hydra's launcher uses
it: a requeue restarts the job with SLURM_RESTART_COUNT raised, a job near its time limit gets
SLURM's signal, checkpoints and comes back, scancel ends it. Then the harness itself: a sweep
through hydra/launcher=submitit_slurm, and two searches on one PostgreSQL study.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import optuna
import pytest
import submitit
from conftest import ROOT, SEARCH, folder_of, history_epochs, record, results, run, start, wait_until

from neuralforge.record.files import HISTORY, MANIFEST, OPTUNA_DB, PREDICTIONS

pytestmark = pytest.mark.slow

# the jobs below unpickle this module's functions without importing it
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def executor(folder: Path, **slurm) -> submitit.AutoExecutor:
    ex = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm",
                               slurm_max_num_timeout=slurm.pop("max_num_timeout", 0))
    ex.update_parameters(timeout_min=slurm.pop("timeout_min", 5), cpus_per_task=1, slurm_partition="debug",
                         **{f"slurm_{k}": v for k, v in slurm.items()})
    return ex


def slurm(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True, timeout=60).stdout


def accounted_states(job_id: str) -> list[str]:
    """The job's states in SLURM's accounting, one per run of it (a requeue adds one)."""
    out = slurm("sacct", "--noheader", "--allocations", "--duplicates", "--parsable2", "-o", "State", "-j", job_id)
    return out.split()


def restarts_when_requeued(marker: str) -> dict[str, str | None]:
    """Waits to be requeued on its first run; returns what its second run saw."""
    seen = {k: os.environ.get(k) for k in ("SLURM_JOB_ID", "SLURM_RESTART_COUNT", "SLURMD_NODENAME")}
    with open(marker, "a") as f:
        f.write(json.dumps(seen) + "\n")
    if seen["SLURM_RESTART_COUNT"] is None:
        time.sleep(300)
    return seen


class UntilTheTimeLimit:
    """Runs past its time limit unless resumed; on SLURM's signal, submitit calls checkpoint()."""

    def __init__(self, resumed: bool = False):
        self.resumed = resumed

    def __call__(self) -> tuple[bool, str | None]:
        if not self.resumed:
            time.sleep(600)
        return self.resumed, os.environ.get("SLURM_RESTART_COUNT")

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(UntilTheTimeLimit(resumed=True))


def test_a_requeued_job_runs_again_with_its_restart_count(slurm_cluster, tmp_path):
    marker = tmp_path / "runs.jsonl"
    job = executor(tmp_path).submit(restarts_when_requeued, str(marker))
    wait_until(marker.exists, timeout=60)
    slurm("scontrol", "requeue", job.job_id)
    second = job.result()
    first = json.loads(marker.read_text().splitlines()[0])
    assert first["SLURM_RESTART_COUNT"] is None and second["SLURM_RESTART_COUNT"] == "1"
    assert first["SLURM_JOB_ID"] == second["SLURM_JOB_ID"] == job.job_id  # the same job, run again
    assert "Restarts=1" in slurm("scontrol", "show", "job", job.job_id)
    assert accounted_states(job.job_id) == ["REQUEUED", "COMPLETED"]


def test_a_job_at_its_time_limit_checkpoints_on_the_signal_and_comes_back(slurm_cluster, tmp_path):
    # submitit asks for --signal=USR2@30; with a limit this short it counts the signal as a
    # time-out, and requeues only while max_num_timeout allows
    job = executor(tmp_path, timeout_min=1, signal_delay_s=30, max_num_timeout=1).submit(UntilTheTimeLimit())
    assert job.result() == (True, "1")
    assert "Caught signal SIGUSR2" in job.stderr()
    assert accounted_states(job.job_id) == ["REQUEUED", "COMPLETED"]  # never TIMEOUT


def test_scancel_ends_a_running_job_and_submitit_sees_it(slurm_cluster, tmp_path):
    job = executor(tmp_path).submit(time.sleep, 300)
    wait_until(lambda: job.watcher.get_state(job.job_id, mode="force") == "RUNNING", timeout=60)
    job.cancel()
    wait_until(lambda: job.done(force_check=True), timeout=60)
    assert job.state.startswith("CANCELLED") and accounted_states(job.job_id)[0].startswith("CANCELLED")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("work", [["seed=0,1"], ["n_seeds=3"]], ids=["a seed sweep", "a group of 3 seeds in one job"])
def test_work_on_slurm_ends_as_on_the_basic_launcher(idx_root, tmp_path, slurm_cluster, work):
    run(idx_root, "-m", *work, f"hydra.sweep.dir={tmp_path / 'basic'}")
    run(idx_root, "-m", *work, "hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=5",
        f"hydra.sweep.dir={tmp_path / 'slurm'}")
    same_runs(tmp_path / "basic", tmp_path / "slurm")
    hosts = {rec.provenance["host"] for rec in results(tmp_path / "slurm").values()}
    assert hosts <= set(slurm_cluster.nodes)  # trained on the cluster's nodes, not here
    assert all(rec.provenance["slurm"]["job_id"] for rec in results(tmp_path / "slurm").values())


def epochs_of(folder: Path) -> list[list[str]]:
    """history.csv's rows without the epoch's wall time."""
    rows = list(csv.reader((folder / HISTORY).read_text().splitlines()))
    keep = [i for i, name in enumerate(rows[0]) if name != "seconds"]
    return [[row[i] for i in keep] for row in rows[1:]]


def test_a_pruned_search_on_slurm_and_postgresql_ends_as_on_the_basic_launcher(idx_root, tmp_path, slurm_cluster,
                                                                                postgres_url):
    # the random sampler is reseeded with each trial's number: a trial's values do not depend
    # on which trials finished first, so two launchers' trials can be compared number by number
    args = [*SEARCH, "seeds_per_trial=1", "trainer.epochs=3", "optimizer.lr=tag(log,interval(1e-4,10))",
            "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0", "hydra/sweeper/pruner=median",
            "hydra.sweeper.pruner.n_startup_trials=2", "hydra.sweeper.n_trials=6"]
    run(idx_root, *args, f"hydra.sweep.dir={tmp_path / 'basic'}", timeout=400)
    run(idx_root, *args, "hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=5", "hydra.sweeper.n_jobs=2",
        f"hydra.sweeper.storage={postgres_url}", "hydra.sweeper.study_name=on_slurm",
        f"hydra.sweep.dir={tmp_path / 'slurm'}", timeout=400)
    basic = optuna.load_study(study_name=None, storage=f"sqlite:///{tmp_path / 'basic' / OPTUNA_DB}").trials
    on_slurm = optuna.load_study(study_name="on_slurm", storage=postgres_url).trials
    assert [t.number for t in on_slurm] == list(range(6)) and {t.state.name for t in on_slurm} <= {"COMPLETE", "PRUNED"}
    assert any(t.state.name == "PRUNED" for t in on_slurm)  # the pruner judged the workers' reports
    for a, b in zip(basic, on_slurm, strict=True):
        assert a.params == b.params
        ea, eb = (epochs_of(tmp_path / sweep / f"trial_{a.number:04d}") for sweep in ("basic", "slurm"))
        n = min(len(ea), len(eb))  # pruned at another epoch, perhaps: the same epochs up to there
        assert n >= 1 and ea[:n] == eb[:n]
        rec = record(tmp_path / "slurm" / f"trial_{b.number:04d}")
        assert rec.status == b.state.name.lower() and rec.provenance["host"] in slurm_cluster.nodes


def test_two_searches_share_one_postgresql_study(idx_root, tmp_path, postgres_url):
    name = "two_searches"
    args = [*SEARCH, "seeds_per_trial=1", "trainer.epochs=2", "optimizer.lr=tag(log,interval(1e-4,10))",
            "hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=2", "hydra.sweeper.n_trials=8",
            f"hydra.sweeper.storage={postgres_url}", f"hydra.sweeper.study_name={name}", f"hydra.sweep.dir={tmp_path}"]
    procs = [start(idx_root, *args, stdout=subprocess.DEVNULL) for _ in range(2)]
    assert all(p.wait(timeout=300) == 0 for p in procs), [p.stderr.read() for p in procs]
    trials = optuna.load_study(study_name=name, storage=postgres_url).trials
    # n_trials is the study's total; two processes asking at the same moment may each add one
    assert 8 <= len(trials) <= 9 and {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert {t.user_attrs["nf_pid"] for t in trials} == {p.pid for p in procs}
    # each trial is one job folder, and each job folder one trial: none lost, none run twice
    assert sorted(f.name for f in results(tmp_path)) == [f"trial_{t.number:04d}" for t in trials]
    for t in trials:
        folder = tmp_path / f"trial_{t.number:04d}"
        rec = record(folder)
        assert rec.config["trial"] == t.number and rec.status == t.state.name.lower()
        assert sorted(t.intermediate_values) == history_epochs(folder)
    # each pruning was the median rule (its best report below the median of the complete trials'
    # at that epoch) over the trials complete by then, whichever worker ran them
    for t in (t for t in trials if t.state.name == "PRUNED"):
        step = max(t.intermediate_values)
        before = [c.intermediate_values[step] for c in trials
                  if c.state.name == "COMPLETE" and c.datetime_complete < t.datetime_complete]
        assert len(before) >= 2 and max(t.intermediate_values.values()) < statistics.median(before)


# ---------------------------------------------------------------- preemption, time limits, scancel
# Runs of about half a minute on the fixture (0.06 s an epoch here, more on slower CPUs): long
# enough to be requeued, signalled or cancelled in the middle, and longer than the cluster's
# KillWait (5 s), in which a job SLURM has told to stop may still finish.
LONG = ("model.hidden=[512,256]", "trainer.epochs=500")


def jobs_running() -> list[tuple[str, str]]:
    """(job id, node) of each running job."""
    out = slurm("squeue", "--noheader", "--states=RUNNING", "--format=%i %N")
    return [tuple(line.split()) for line in out.splitlines() if line.strip()]  # type: ignore[misc]


def same_runs(a: Path, b: Path) -> None:
    """Two sweeps that ended with the same records and the same predictions, bit for bit."""
    ra, rb = results(a), results(b)
    assert sorted(f.relative_to(a) for f in ra) == sorted(f.relative_to(b) for f in rb) and ra
    for folder, rec in ra.items():
        twin = b / folder.relative_to(a)
        assert rec.status == "complete" and rec.metrics == rb[twin].metrics, folder
        assert sha256(folder / PREDICTIONS) == sha256(twin / PREDICTIONS)


def test_a_job_requeued_onto_another_node_resumes_at_once_and_ends_bit_identical(idx_root, tmp_path,
                                                                                  slurm_cluster):
    run(idx_root, "-m", "seed=0", *LONG, f"hydra.sweep.dir={tmp_path / 'straight'}")
    sweep = tmp_path / "requeued"
    proc = start(idx_root, "-m", "seed=0", *LONG, "hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=10",
                 f"hydra.sweep.dir={sweep}", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_until(lambda: (sweep / MANIFEST).exists(), timeout=60)
    folder = folder_of(sweep, "seed=0")
    assert wait_until(lambda: (folder / "history.csv").exists() and len(history_epochs(folder)) >= 20, timeout=120)
    (job, node), = jobs_running()
    slurm("scontrol", "update", f"nodename={node}", "state=drain", "reason=preemption-test")  # elsewhere, please
    try:
        requeued_at = time.time()
        slurm("scontrol", "requeue", job)
        log = folder / "run.log"
        assert wait_until(lambda: "Resuming from epoch" in log.read_text(), timeout=180)
        resumed_at = time.time()
        assert wait_until(lambda: "epoch " in log.read_text().rpartition("Resuming from epoch")[2].partition("\n")[2],
                          timeout=60)
        first_epoch_at = time.time()
        assert proc.wait(timeout=300) == 0
    finally:
        slurm("scontrol", "update", f"nodename={node}", "state=resume")
    text = log.read_text()
    assert "in use by" not in text and "Taking over" in text and f"SLURM job {job} was requeued" in text
    assert record(folder).provenance["host"] != node and record(folder).provenance["slurm"]["restart"] == 1
    started = slurm("scontrol", "show", "job", "--oneliner", job)  # the restart's own start, from SLURM
    print(f"\nrequeue -> resumed {resumed_at - requeued_at:.1f} s, "
          f"-> first new epoch {first_epoch_at - requeued_at:.1f} s ({started.split('StartTime=')[1].split()[0]})")
    same_runs(tmp_path / "straight", sweep)


def test_a_job_at_its_time_limit_requeues_itself_and_the_sweep_completes(idx_root, tmp_path, slurm_cluster):
    # A one-minute limit; SLURM signals the job 30 s before it (submitit's --signal), 30 s in:
    # twice the run's length on the fixture here, and signalled each time it comes back.
    sweep = tmp_path / "limited"
    out = run(idx_root, "-m", "seed=0", "model.hidden=[512,256]", "trainer.epochs=1000",
              "hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=30",
              "hydra.launcher.max_num_timeout=10", f"hydra.sweep.dir={sweep}", timeout=900)
    assert "1 runs: 1 complete" in out.stdout + out.stderr
    folder = folder_of(sweep, "seed=0")
    log = (folder / "run.log").read_text()
    assert "Resuming from epoch" in log and record(folder).metrics.epochs_run == 1000
    job = record(folder).provenance["slurm"]["job_id"]
    states = accounted_states(job)
    assert states[0] == "REQUEUED" and states[-1] == "COMPLETED", states
    assert record(folder).provenance["slurm"]["restart"] >= 1


def test_a_cancelled_array_relaunched_skips_what_completed_and_resumes_the_rest(idx_root, tmp_path, slurm_cluster):
    # one at a time: cancelled once a run has completed and the next is in the middle, with more
    # epochs left than it can train in KillWait (submitit ignores the SIGTERM before the SIGKILL)
    shorter = ("model.hidden=[512,256]", "trainer.epochs=300")
    args = ["-m", "seed=0,1,2", "hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=10",
            "hydra.launcher.array_parallelism=1", *shorter]
    run(idx_root, *args[:2], *shorter, f"hydra.sweep.dir={tmp_path / 'straight'}")
    sweep = tmp_path / "cancelled"
    proc = start(idx_root, *args, f"hydra.sweep.dir={sweep}", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def partly_done() -> bool:
        recs = results(sweep)
        return (any(r.status == "complete" for r in recs.values())
                and any(r.status != "complete" and len(history_epochs(f)) >= 10 for f, r in recs.items()))

    assert wait_until(partly_done, timeout=300)
    slurm("scancel", "--user", "root")
    proc.wait(timeout=120)
    stopped = {f: len(history_epochs(f)) for f, r in results(sweep).items() if r.status != "complete"}
    done = {f: (f / "results.json").stat().st_mtime_ns for f, r in results(sweep).items() if r.status == "complete"}
    assert stopped and done  # the relaunch has runs to skip and runs to resume
    run(idx_root, *args, f"hydra.sweep.dir={sweep}", timeout=400)
    assert {f: (f / "results.json").stat().st_mtime_ns for f in done} == done  # not retrained
    for folder in stopped:
        log = (folder / "run.log").read_text()
        assert "Resuming from epoch" in log and "in use by" not in log, folder
    same_runs(tmp_path / "straight", sweep)


# ---------------------------------------------------------------- the GPU check, rehearsed on the CPU
def test_the_gpu_check_runs_on_the_cpu_and_finds_the_resume_bit_identical(idx_root, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NEURALFORGE_DATA"}
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--small",
                           "--data", str(idx_root), "--out", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in done.stdout.splitlines()
             if line.startswith("| ")]
    table = dict(cells[1:])  # below the header
    assert table["SIGKILL at epoch 2 of 6, relaunched"] == "bit-identical to the uninterrupted run"
    assert "s/epoch" in table["notebook MLP, 1 run"] and "group of 8 seeds, 2 epochs" in table
    assert table["cudnn.deterministic held"] == "not applicable (no CUDA)"
    assert "Resuming from epoch" in (tmp_path / "resumed" / "run.log").read_text()  # it was killed, and resumed
