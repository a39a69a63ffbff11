"""The experiment trackers, each read back through its own reader: MLflow's store through
mlflow.search_runs, TensorBoard's event files through its EventAccumulator, W&B's offline runs
through their files. Each tracker's tests skip, with the reason, where its extra is not installed."""

from __future__ import annotations

import glob
import importlib.util
import json
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, OnEpoch, record

from analysis import collect
from neuralforge import sweeps
from neuralforge.config import fingerprint, resolve
from neuralforge.engine import Listener, train
from neuralforge.record import trackers
from neuralforge.record.errors import ConfigError, DivergedError
from neuralforge.record.files import HISTORY, LAST
from neuralforge.record.schema import COMPLETE
from neuralforge.trackers import base, live


def needs(extra: str):
    return pytest.mark.skipif(importlib.util.find_spec(extra) is None,
                              reason=f"the {extra} extra is not installed: pip install -e '.[{extra}]'")


def export(folder: Path, tracker: str, **node):
    from analysis.export import export as run_export
    return run_export(collect(folder), tracker, node)


def train_logged(cfg, folder: Path, overrides=(), listeners=()) -> float:
    """engine.train with the trackers the config's logger turns on, as run.py passes them."""
    with live.Live(cfg.logger, folder, list(overrides)) as logged:
        return train(cfg, folder, overrides=overrides, listeners=[*listeners, logged])


def make_sweep(make_cfg, folder: Path, jobs: dict[str, list[str]], listeners=()) -> Path:
    """A grid sweep's folder as a multirun leaves it: its manifest, then one folder per job."""
    sweeps.write_manifest(folder, [{"folder": name, "overrides": o} for name, o in jobs.items()], kind="grid")
    for name, overrides in jobs.items():
        train(make_cfg(*overrides), folder / name, overrides=overrides, listeners=listeners)
    return folder


class Prune(Listener):
    """A pruner that stops the run after its first epoch."""

    def epoch_done(self, training, outcome) -> bool:
        return True


JOBS = {"model.hidden=[16],seed=0": ["model.hidden=[16]", "seed=0", "n_seeds=2"],
        "model.hidden=[32],seed=0": ["model.hidden=[32]", "seed=0", "n_seeds=2"]}


def search(uri: str):
    import mlflow
    client = mlflow.MlflowClient(uri)
    return client.search_runs([client.get_experiment_by_name("neuralforge").experiment_id], max_results=50000)


def store(uri: str):
    """Every run of the store, by level, with its epoch series: what a comparison needs."""
    import mlflow
    mlflow.set_tracking_uri(uri)
    df = mlflow.search_runs(experiment_names=["neuralforge"])
    client = mlflow.MlflowClient(uri)
    out = {}
    for run in search(uri):
        series = {k: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, k))
                  for k in ("val_acc", "epoch")} if run.data.tags.get("nf.level") == "seed" else {}
        tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.") or k == "mlflow.runName"}
        out[run.data.tags["nf.key"]] = {"status": run.info.status, "tags": tags, "params": run.data.params,
                                        "metrics": run.data.metrics, "series": series,
                                        "parent": run.data.tags.get("mlflow.parentRunId") is not None}
    return df, out


# ---------------------------------------------------------------------------------- config
def test_logging_is_not_part_of_the_fingerprint_and_a_complete_run_relaunched_with_it_trains_nothing(make_cfg,
                                                                                                    tmp_path):
    plain = resolve(make_cfg(), threads=1, device="cpu")
    logged = resolve(make_cfg("logger=[mlflow,tensorboard]", "logger.wandb.project=x"), threads=1, device="cpu")
    assert logged["logger"]["mlflow"]["enabled"] and logged["logger"]["tensorboard"]["enabled"]
    assert fingerprint(plain) == fingerprint(logged)
    train(make_cfg(), tmp_path / "run")
    stamp = (tmp_path / "run" / LAST).stat().st_mtime_ns
    if importlib.util.find_spec("tensorboard") is not None:
        train_logged(make_cfg("logger=tensorboard", f"logger.tensorboard.dir={tmp_path / 'tb'}"), tmp_path / "run")
    assert (tmp_path / "run" / LAST).stat().st_mtime_ns == stamp  # nothing trained


def test_a_tracker_whose_package_is_missing_is_refused_in_one_line_naming_the_extra(make_cfg, tmp_path,
                                                                                    monkeypatch):
    monkeypatch.setitem(trackers.MODULES, "wandb", "neuralforge_no_such_package")
    with pytest.raises(ConfigError, match=r"^logger=wandb needs .* pip install -e '\.\[wandb\]'$"):
        train_logged(make_cfg("logger=wandb"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


class Recorder(base.Writer):
    """A writer that notes each call: what the logger's thread hands a tracker, in its order."""
    name = "recorder"

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls, self.fail_on = [], fail_on

    def begin(self, seeds):
        self.calls.append(("begin",))

    def rows(self, seed, rows):
        if self.fail_on == "rows":
            raise OSError("store unwritable")
        self.calls.append(("rows", seed.key, [r["epoch"] for r in rows]))

    def final(self, seed, rec, state):
        self.calls.append(("final", seed.key, state))


def test_the_logger_thread_keeps_each_seeds_order_and_joins_the_rows_that_wait(make_cfg, tmp_path):
    seeds = [base.seed_node(tmp_path / f"seed={k}", tmp_path, {**resolve(make_cfg(), threads=1, device="cpu"),
                                                              "seed": k}, "fp", []) for k in range(2)]
    a, b = seeds
    calls = [("begin", (seeds,)), ("rows", (a, [{"epoch": 1}])), ("rows", (b, [{"epoch": 1}])),
             ("rows", (a, [{"epoch": 2}])), ("final", (a, {}, "complete")), ("rows", (a, [{"epoch": 3}])),
             ("rows", (b, [{"epoch": 2}]))]
    w = Recorder()
    for kind, args in live.joined(calls):
        getattr(w, kind)(*args)
    assert w.calls == [("begin",), ("rows", a.key, [1, 2]), ("rows", b.key, [1, 2]), ("final", a.key, "complete"),
                       ("rows", a.key, [3])]


def test_a_failure_in_the_logger_thread_is_raised_by_the_next_call_and_by_close(make_cfg, tmp_path):
    seed = base.seed_node(tmp_path, tmp_path, resolve(make_cfg(), threads=1, device="cpu"), "fp", [])
    bg = live.Background("recorder", lambda: Recorder(fail_on="rows"))
    bg.begin([seed])
    bg.rows(seed, [{"epoch": 1}])
    deadline = time.time() + 10
    while bg.error is None and time.time() < deadline:
        time.sleep(0.01)
    with pytest.raises(OSError, match="store unwritable"):
        bg.rows(seed, [{"epoch": 2}])
    with pytest.raises(OSError, match="store unwritable"):
        bg.close()


def test_the_role_tables_logger_keys_are_the_schemas(make_cfg):
    from dataclasses import fields

    from neuralforge.config import LoggerConf
    from neuralforge.record import keys
    assert {f.name: tuple(g.name for g in fields(f.type if isinstance(f.type, type) else f.default_factory))
            for f in fields(LoggerConf)} == keys.LOGGER_KEYS


def test_an_unknown_wandb_mode_is_refused_in_one_line(make_cfg, tmp_path):
    if importlib.util.find_spec("wandb") is None:
        pytest.skip("the wandb extra is not installed: pip install -e '.[wandb]'")
    with pytest.raises(ConfigError, match=r"^logger.wandb.mode='cloud' is unknown"):
        train_logged(make_cfg("logger=wandb", "logger.wandb.mode=cloud"), tmp_path / "run")


# ---------------------------------------------------------------------------------- MLflow
@needs("mlflow")
def test_mlflow_nests_a_groups_seeds_under_its_config_and_a_relaunch_adds_nothing(make_cfg, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = make_cfg("n_seeds=2", "logger=mlflow", f"logger.mlflow.tracking_uri={uri}")
    train_logged(cfg, tmp_path / "run")
    df, runs = store(uri)
    configs = df[df["tags.nf.level"] == "config"]
    seeds = df[df["tags.nf.level"] == "seed"]
    assert len(configs) == 1 and len(seeds) == 2
    assert (seeds["tags.mlflow.parentRunId"] == configs["run_id"].item()).all()
    for k, folder in enumerate(["seed=0", "seed=1"]):
        rec = record(tmp_path / "run" / folder)
        run = next(r for r in runs.values() if r["tags"].get("nf.folder") == str((tmp_path / "run" / folder).resolve()))
        assert run["series"]["epoch"] == [(1, 1.0), (2, 2.0)]
        assert [v for _, v in run["series"]["val_acc"]] == pytest.approx([r["val_acc"] for r in
                                                                          base.read_history(tmp_path / "run" / folder)])
        assert run["metrics"]["final.test_acc"] == pytest.approx(rec.metrics.test_acc)
        assert run["metrics"]["final.best_epoch"] == rec.metrics.best_epoch
        assert run["status"] == "FINISHED" and run["tags"]["nf.status"] == "complete"
        assert run["tags"]["nf.fingerprint"] == rec.fingerprint and run["tags"]["nf.seeds.order"] == str(k)
        assert run["tags"]["nf.git_commit"] == str(rec.provenance["git_commit"])
        assert run["params"]["optimizer.lr"] == "0.001" and run["params"]["seed"] == str(k)
    train_logged(cfg, tmp_path / "run")  # complete: reported, and nothing logged again
    assert store(uri)[1] == runs


@needs("mlflow")
def test_mlflow_export_is_idempotent_and_a_sweep_exported_while_running_ends_as_one_export_at_the_end(make_cfg,
                                                                                                       tmp_path):
    uri_twice, uri_once = f"sqlite:///{tmp_path / 'twice.db'}", f"sqlite:///{tmp_path / 'once.db'}"
    sweep = tmp_path / "sweep"

    def export_midway(training):
        if training.epoch == 1:  # the records say running, one epoch in
            done = export(sweep, "mlflow", tracking_uri=uri_twice)
            assert done["runs"] >= 2
    make_sweep(make_cfg, sweep, JOBS, listeners=[OnEpoch(export_midway)])
    midway = store(uri_twice)[1]
    assert any(r["status"] == "RUNNING" for r in midway.values())
    export(sweep, "mlflow", tracking_uri=uri_twice)
    export(sweep, "mlflow", tracking_uri=uri_once)
    _, twice = store(uri_twice)
    _, once = store(uri_once)
    assert len(once) == 1 + 2 + 4  # the sweep, its two configs, their four seeds
    for key, run in once.items():  # a config's statistics keep the values they had midway in their history
        assert twice[key]["metrics"] == run["metrics"] and twice[key]["tags"] == run["tags"]
        assert twice[key]["status"] == run["status"] and twice[key]["series"] == run["series"]
        assert twice[key]["params"] == run["params"]
    export(sweep, "mlflow", tracking_uri=uri_once)
    assert store(uri_once)[1] == once  # a second export adds nothing
    sweep_run = next(r for r in once.values() if r["tags"]["nf.level"] == "sweep")
    assert "too few runs" in sweep_run["tags"]["nf.verdict.1"]  # 2 seeds each: the verdict says so
    config = next(r for r in once.values() if r["tags"]["nf.level"] == "config")
    df = collect(sweep)
    mine = df[df["folder"].str.contains(r"hidden=\[16\]", regex=True)]
    from analysis import tables
    expected = tables.summarize(mine).iloc[0]
    config = next(r for r in once.values()
                  if r["tags"]["nf.level"] == "config" and "[16]" in r["tags"]["mlflow.runName"])
    assert config["metrics"]["summary.mean"] == pytest.approx(expected["mean"])
    assert config["metrics"]["summary.ci_low"] == pytest.approx(expected["ci_low"])
    assert config["metrics"]["summary.n"] == 2 and "summary.noise_floor_std" in config["metrics"]
    assert config["metrics"]["summary.expected_best"] == pytest.approx(mine["test_acc"].max())


@needs("mlflow")
def test_failed_and_pruned_runs_are_exported_with_their_status(make_cfg, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(DivergedError):
        train(make_cfg("optimizer=sgd", "optimizer.lr=1e12"), tmp_path / "failed")
    train(make_cfg("trainer.epochs=3"), tmp_path / "pruned", listeners=[Prune()])
    export(tmp_path, "mlflow", tracking_uri=uri)
    _, runs = store(uri)
    by_status = {r["tags"]["nf.status"]: r["status"] for r in runs.values() if r["tags"]["nf.level"] == "seed"}
    assert by_status == {"failed": "FAILED", "pruned": "KILLED"}


@needs("mlflow")
def test_a_tracker_that_fails_gives_one_warning_and_the_run_completes(make_cfg, tmp_path, caplog):
    (tmp_path / "a_file").write_text("")
    uri = f"sqlite:///{tmp_path / 'a_file' / 'mlflow.db'}"  # cannot be created
    with caplog.at_level(logging.WARNING, logger="neuralforge.trackers"):
        train_logged(make_cfg("logger=mlflow", f"logger.mlflow.tracking_uri={uri}"), tmp_path / "run")
    assert record(tmp_path / "run").status == COMPLETE
    warned = [r for r in caplog.records if r.name == "neuralforge.trackers"]
    assert len(warned) == 1 and "mlflow" in warned[0].getMessage()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@needs("mlflow")
def test_an_export_to_a_real_mlflow_server_reads_back(make_cfg, tmp_path):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--workers", "1",
                               "--artifacts-destination", str(tmp_path / "artifacts")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        uri = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "mlflow server did not start"
                time.sleep(0.5)
        sweep = make_sweep(make_cfg, tmp_path / "sweep", JOBS)
        export(sweep, "mlflow", tracking_uri=uri)
        _, runs = store(uri)
        assert sorted(r["tags"]["nf.level"] for r in runs.values()) == ["config"] * 2 + ["seed"] * 4 + ["sweep"]
        assert all(r["series"]["epoch"] == [(1, 1.0), (2, 2.0)] for r in runs.values() if r["series"])
    finally:
        server.terminate()
        server.wait(30)


# ---------------------------------------------------------------------------------- TensorBoard
@needs("tensorboard")
def test_tensorboard_folders_sweep_config_seed_and_the_mean_over_seeds_with_its_band(make_cfg, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from analysis.stats import t_interval
    sweep = make_sweep(make_cfg, tmp_path / "sweep", JOBS)
    export(sweep, "tensorboard", dir=str(tmp_path / "tb"))
    config = tmp_path / "tb" / "sweep" / "model.hidden=[16]"
    per_seed = []
    for seed in ("seed=0", "seed=1"):
        ea = EventAccumulator(str(config / seed))
        ea.Reload()
        assert [e.step for e in ea.Scalars("val_acc")] == [1, 2]
        per_seed.append([e.value for e in ea.Scalars("val_acc")])
    ea = EventAccumulator(str(config / "mean over seeds"))
    ea.Reload()
    for i in range(2):  # epochs 1 and 2
        values = [s[i] for s in per_seed]
        low, high = t_interval(values)
        assert ea.Scalars("mean/val_acc")[i].value == pytest.approx(sum(values) / 2, abs=1e-6)
        assert ea.Scalars("mean/val_acc/ci_low")[i].value == pytest.approx(low, abs=1e-6)
        assert ea.Scalars("mean/val_acc/ci_high")[i].value == pytest.approx(high, abs=1e-6)
    files = sorted(glob.glob(str(tmp_path / "tb" / "**" / "events.*"), recursive=True))
    export(sweep, "tensorboard", dir=str(tmp_path / "tb"))
    assert sorted(glob.glob(str(tmp_path / "tb" / "**" / "events.*"), recursive=True)) == files  # nothing added


# ---------------------------------------------------------------------------------- W&B
@needs("wandb")
def test_wandb_offline_one_run_per_seed_grouped_by_config_with_its_summary(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    sweep = make_sweep(make_cfg, tmp_path / "sweep", {"model.hidden=[16],seed=0": JOBS["model.hidden=[16],seed=0"]})
    export(sweep, "wandb", dir=str(tmp_path / "wb"))
    runs = sorted(glob.glob(str(tmp_path / "wb" / "wandb" / "offline-run-*")))
    assert len(runs) == 2 + 1  # two seeds, the config's mean over seeds
    for folder in ("seed=0", "seed=1"):
        rec = record(sweep / "model.hidden=[16],seed=0" / folder)
        key = base.seed_from_record(sweep / "model.hidden=[16],seed=0" / folder, rec).key
        (run,) = [r for r in runs if r.endswith(key)]
        log = Path(run, f"run-{key}.wandb").read_bytes()
        assert b"val_acc" in log and b"final/test_acc" in log and b"model.hidden=[16]" in log  # the group
        logged = json.loads(Path(run, "files", "nf-logged.json").read_text())
        assert logged["epoch"] == 2 and logged["nf/status"] == "complete"
        assert logged["final/test_acc"] == pytest.approx(rec.metrics.test_acc)
    export(sweep, "wandb", dir=str(tmp_path / "wb"))
    assert sorted(glob.glob(str(tmp_path / "wb" / "wandb" / "offline-run-*"))) == runs  # nothing added


# ---------------------------------------------------------------------------------- processes
def run_py(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    return subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


FAST_CLI = ["model.hidden=[16]", "data.val_size=100", "threads=1", "device=cpu", "data.download=false"]


@pytest.mark.slow
@needs("mlflow")
@needs("tensorboard")
def test_a_run_killed_and_relaunched_continues_its_tracker_runs_with_no_step_twice(idx_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [f"data.root={idx_root}", *FAST_CLI, "trainer.epochs=40", "n_seeds=2", "logger=[mlflow,tensorboard]",
            f"logger.mlflow.tracking_uri={uri}", f"logger.tensorboard.dir={tmp_path / 'tb'}",
            f"hydra.run.dir={tmp_path / 'run'}"]
    proc = run_py(*args)
    history = tmp_path / "run" / "seed=1" / HISTORY
    deadline = time.time() + 120
    while not (history.exists() and len(history.read_text().splitlines()) > 4):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() is not None else ""
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len(history.read_text().splitlines()) - 1
    assert killed_at < 40
    out, _ = run_py(*args).communicate(timeout=300)
    assert "Resuming" in out and not re.search(r"logger \w+ stopped", out), out  # no tracker warned
    _, runs = store(uri)
    seeds = [r for r in runs.values() if r["tags"]["nf.level"] == "seed"]
    assert len(seeds) == 2
    for run in seeds:
        steps = [s for s, _ in run["series"]["val_acc"]]
        assert steps == list(range(1, 41)), steps  # each epoch once
        assert run["status"] == "FINISHED"
    for seed in ("seed=0", "seed=1"):
        (folder,) = glob.glob(str(tmp_path / "tb" / "*" / seed))
        ea = EventAccumulator(folder)
        ea.Reload()
        assert [e.step for e in ea.Scalars("val_acc")] == list(range(1, 41))


@pytest.mark.slow
@needs("mlflow")
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_parallel_jobs_logging_to_one_sqlite_store_lose_no_row(idx_root, tmp_path, launcher):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parallel = (["hydra.launcher.n_jobs=2"] if launcher == "joblib" else ["hydra.launcher.tasks_per_node=1",
                                                                         "hydra.launcher.timeout_min=10"])
    out, _ = run_py("-m", f"data.root={idx_root}", *FAST_CLI, "trainer.epochs=6", "seed=0,2,4,6", "n_seeds=2",
                    f"hydra/launcher={launcher}", *parallel, "logger=mlflow", f"logger.mlflow.tracking_uri={uri}",
                    f"hydra.sweep.dir={tmp_path / 'sweep'}").communicate(timeout=600)
    assert "8 complete" in out and "logger mlflow" not in out, out  # no tracker warned
    _, runs = store(uri)
    seeds = [r for r in runs.values() if r["tags"]["nf.level"] == "seed"]
    assert len(seeds) == 8 and all(r["series"]["epoch"] == [(e, float(e)) for e in range(1, 7)] for r in seeds)
    assert sorted(r["tags"]["nf.level"] for r in runs.values() if r["tags"]["nf.level"] != "seed") == \
        ["config", "sweep"]  # the four jobs' seeds under one config
    assert all(not math.isnan(r["metrics"]["final.test_acc"]) for r in seeds)
