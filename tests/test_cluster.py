"""On real servers: a SLURM cluster (scripts/slurm_cluster.sh) and PostgreSQL, both on 127.0.0.1.

What the cluster does to a job is checked through submitit's own API, as Hydra's launcher uses
it: a requeue restarts the job with SLURM_RESTART_COUNT raised, a job near its time limit gets
SLURM's signal, checkpoints and comes back, scancel ends it. Then the harness itself: a sweep
through hydra/launcher=submitit_slurm, and two searches on one PostgreSQL study.
"""

from __future__ import annotations

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

from conftest import SEARCH, history_epochs, record, results, run, start, wait_until
from neuralforge.record.files import PREDICTIONS

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


def test_a_seed_sweep_on_slurm_ends_as_on_the_basic_launcher(idx_root, tmp_path, slurm_cluster):
    run(idx_root, "-m", "seed=0,1", f"hydra.sweep.dir={tmp_path / 'basic'}")
    out = run(idx_root, "-m", "seed=0,1", "hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=5",
              f"hydra.sweep.dir={tmp_path / 'slurm'}")
    assert "2 runs: 2 complete, 0 failed" in out.stdout + out.stderr
    basic, on_slurm = results(tmp_path / "basic"), results(tmp_path / "slurm")
    assert sorted(f.name for f in basic) == sorted(f.name for f in on_slurm)
    for folder, rec in on_slurm.items():
        twin = tmp_path / "basic" / folder.name
        assert rec.provenance["host"] in slurm_cluster.nodes  # trained on the cluster's nodes
        assert rec.metrics == basic[twin].metrics
        assert sha256(folder / PREDICTIONS) == sha256(twin / PREDICTIONS)


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
