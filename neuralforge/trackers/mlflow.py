"""MLflow, through MlflowClient: nested runs sweep -> config -> seed (`mlflow.parentRunId`), each
found again by its `nf.key` tag.

A SQLite store takes one writer at a time: two jobs that write at once make one wait on
SQLite's lock, and fail with "database is locked" past its timeout, and two that open a new
store at once race to create its tables. Every write to a SQLite store here holds an exclusive
lock on a file beside it (`<store>.lock`, fcntl), so parallel jobs on one machine take turns;
a job writes a few transactions per epoch, so the waits are short. Other stores (a tracking
server, a database server) take parallel writers themselves; only finding or creating a run is
done under a lock file in the folder the sweep lies in, so that two jobs of one config create one
config run.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag

from neuralforge.record.files import MLFLOW_ARTIFACTS, MLFLOW_DB, MLFLOW_SERVER_LOCK
from neuralforge.record.schema import Record
from neuralforge.trackers.base import (
    FINAL,
    ConfigNode,
    ConfigStats,
    Seed,
    Sweep,
    SweepStats,
    Writer,
    final_metrics,
    heartbeat,
    record_tags,
    short_hash,
    stamps,
)

LEVEL, KEY, PARENT = "nf.level", "nf.key", "mlflow.parentRunId"
STATUS = {"running": RunStatus.to_string(RunStatus.RUNNING), "complete": RunStatus.to_string(RunStatus.FINISHED),
          "failed": RunStatus.to_string(RunStatus.FAILED), "pruned": RunStatus.to_string(RunStatus.KILLED),
          "stale": RunStatus.to_string(RunStatus.KILLED)}
BATCH = 100  # MLflow's limit on params and on tags per log_batch (metrics: 1000)
PAGE = 50000  # the most runs one search_runs page returns


def default_uri(where: Path) -> str:
    return f"sqlite:///{(where / MLFLOW_DB).resolve()}"


class StoreLock:
    """Exclusive, across processes: held for every write to a SQLite store, and for finding or
    creating runs in any other."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.depth = path, 0
        self.fd: IO[str] | None = None

    def __enter__(self) -> StoreLock:
        if self.depth == 0:
            fd = open(self.path, "a")
            fcntl.flock(fd, fcntl.LOCK_EX)
            self.fd = fd
        self.depth += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        self.depth -= 1
        if self.depth == 0 and self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            self.fd.close()
            self.fd = None


class Known:
    """What the store holds of one run: its id, status, tags and latest metrics."""

    def __init__(self, run: Any) -> None:
        self.id, self.status = run.info.run_id, run.info.status
        self.tags, self.metrics = dict(run.data.tags), dict(run.data.metrics)
        self.params: list[Param] = []  # not sent yet
        self.had_params = bool(run.data.params)


class MLflowWriter(Writer):
    name = "mlflow"

    def __init__(self, node: Any, where: Path) -> None:
        self.uri = node.get("tracking_uri") or default_uri(where)
        self.sqlite = self.uri.startswith("sqlite:///")
        if self.sqlite:
            db = Path(self.uri.removeprefix("sqlite:///"))
            db.parent.mkdir(parents=True, exist_ok=True)
            self.write_lock: Any = StoreLock(db.with_name(db.name + ".lock"))
            self.find_lock = self.write_lock
            artifacts: str | None = (db.parent / MLFLOW_ARTIFACTS).resolve().as_uri()
        else:
            self.write_lock = contextlib.nullcontext()
            self.find_lock = StoreLock(where / MLFLOW_SERVER_LOCK)
            artifacts = None  # the server's
        with self.write_lock:  # a new store's tables are created by the first client: one process at a time
            self.client = MlflowClient(tracking_uri=self.uri)
            exp = self.client.get_experiment_by_name(node.get("experiment"))
            self.experiment = exp.experiment_id if exp is not None else self.client.create_experiment(
                node.get("experiment"), artifact_location=artifacts)
        self.runs: dict[str, Known] = {}  # nf.key -> run
        self.learnt: set[str] = set()  # the searches done: each finds every run it can once

    # ------------------------------------------------------------------ finding runs
    def _search(self, filter_string: str) -> list[Any]:
        out, token = [], None
        while True:
            page = self.client.search_runs([self.experiment], filter_string=filter_string, max_results=PAGE,
                                           page_token=token)
            out += list(page)
            token = page.token
            if not token:
                return out

    def _learn(self, filter_string: str) -> None:
        if filter_string in self.learnt:
            return
        self.learnt.add(filter_string)
        for run in self._search(filter_string):
            key = run.data.tags.get(KEY)
            if key and key not in self.runs:
                self.runs[key] = Known(run)

    def _create(self, key: str, level: str, name: str, parent: str | None, tags: dict[str, str],
                start: float | None) -> None:
        all_tags = {KEY: key, LEVEL: level, **tags, **({PARENT: parent} if parent else {})}
        with self.write_lock:
            run = self.client.create_run(self.experiment, start_time=int(1000 * (start or time.time())),
                                         tags=all_tags, run_name=name)
        self.runs[key] = Known(run)

    def _params(self, key: str, params: dict[str, Any]) -> None:
        """Params the run lacks (new, or created by a process killed before it sent them) go with
        its next metrics, or at close: a SQLite store commits each part of a call on its own."""
        run = self.runs[key]
        if not run.had_params and params:
            run.params, run.had_params = [Param(k, str(v)) for k, v in params.items()], True

    def begin(self, seeds: list[Seed]) -> None:
        with self.find_lock:
            sweeps = {s.config.sweep.key: s.config.sweep for s in seeds if s.config.sweep is not None}
            # a sweep or config run starts with its first seed's record, not when it is written
            first = min((s.started for s in seeds if s.started is not None), default=None)
            configs = {s.config.key: s.config for s in seeds}
            for sweep in sweeps.values():
                self._learn(f"tags.`{KEY}` = '{sweep.key}'")
                if sweep.key not in self.runs:
                    self._create(sweep.key, "sweep", sweep.name, None, sweep_tags(sweep), first)
            for config in configs.values():
                if config.sweep is not None:
                    self._learn(f"tags.`nf.sweep` = '{config.sweep.key}'")  # the sweep's configs and seeds at once
                else:
                    self._learn(f"tags.`{KEY}` = '{config.key}'")
                    self._learn(f"tags.`nf.config` = '{config.key}'")  # its seeds
                if config.key not in self.runs:
                    parent = self.runs[config.sweep.key].id if config.sweep is not None else None
                    self._create(config.key, "config", config.name, parent, config_tags(config), first)
                self._params(config.key, config.params)
            for seed in seeds:
                if seed.key not in self.runs:
                    self._create(seed.key, "seed", seed.name, self.runs[seed.config.key].id,
                                 {**seed.tags, **config_tags(seed.config), "nf.config": seed.config.key,
                                  "nf.folder": seed.folder}, seed.started)
                self._params(seed.key, seed.params)

    # ------------------------------------------------------------------ writing
    def _log(self, run: Known, metrics: Sequence[Metric] = (), tags: dict[str, str] | None = None) -> None:
        changed = [RunTag(k, v) for k, v in (tags or {}).items() if run.tags.get(k) != v]
        if not metrics and not changed and not run.params:
            return
        params, run.params, sent, left = run.params, [], list(metrics), list(metrics)
        with self.write_lock:
            # MLflow's limits per call: 1000 entities, of which 100 params and 100 tags
            while left or changed or params:
                p, t = params[:BATCH], changed[:BATCH]
                batch = left[:1000 - len(p) - len(t)]
                self.client.log_batch(run.id, metrics=batch, params=p, tags=t)
                params, changed, left = params[BATCH:], changed[BATCH:], left[len(batch):]
                run.tags.update({x.key: x.value for x in t})
        for m in sent:
            run.metrics[m.key] = m.value

    def _status(self, run: Known, status: str, end: float | None = None) -> None:
        if run.status == status:
            return
        with self.write_lock:
            if status == STATUS["running"]:
                self.client.update_run(run.id, status=status)
            else:
                self.client.set_terminated(run.id, status, end_time=int(1000 * (end or time.time())))
        run.status = status

    def rows(self, seed: Seed, rows: list[dict[str, float]]) -> None:
        self._log(self.runs[seed.key], self._new_rows(seed, rows))

    def _new_rows(self, seed: Seed, rows: list[dict[str, float]]) -> list[Metric]:
        last = self.runs[seed.key].metrics.get("epoch", 0)
        # one call holds every key of its rows, "epoch" included, and a SQLite store commits a
        # call's metrics at once: the latest "epoch" is the last row the store holds whole, which
        # a relaunch resumes after
        # (a row split over two calls has "epoch" in the second)
        return [Metric(k, float(row[k]), int(1000 * t), int(row["epoch"]))
                for row, t in zip(rows, stamps(seed, rows, time.time())) if row["epoch"] > last
                for k in sorted(row, key=lambda k: k == "epoch")]

    def _final_metrics(self, run: Known, rec: Record | None, state: str) -> list[Metric]:
        if state not in FINAL:
            return []
        now = int(1000 * heartbeat(rec))
        return [Metric(k, v, now, 0) for k, v in final_metrics(rec).items() if not _same(run.metrics.get(k), v)]

    def final(self, seed: Seed, rec: Record | None, state: str) -> None:
        self._record(seed, [], rec, state)

    def record(self, seed: Seed, rows: list[dict[str, float]], rec: Record, state: str) -> None:
        self._record(seed, rows, rec, state)

    def _record(self, seed: Seed, rows: list[dict[str, float]], rec: Record | None, state: str) -> None:
        """Rows, final metrics and tags in one call: a SQLite store commits it whole."""
        run = self.runs[seed.key]
        self._log(run, self._new_rows(seed, rows) + self._final_metrics(run, rec, state), record_tags(seed, rec, state))
        self._status(run, STATUS[state], heartbeat(rec) if rec is not None else None)

    def config_stats(self, stats: ConfigStats) -> None:
        run = self.runs.get(stats.config.key)
        if run is None:
            return
        now = int(1000 * time.time())
        n = int(stats.values.get("n", 0))
        metrics = [Metric(f"summary.{k}", float(v), now, n) for k, v in stats.values.items()
                   if v is not None and not _same(run.metrics.get(f"summary.{k}"), v)]
        if stats.expected_best and not _same(run.metrics.get("summary.expected_best"), stats.expected_best[-1]):
            metrics += [Metric("summary.expected_best", float(v), now, i + 1)
                        for i, v in enumerate(stats.expected_best)]
        self._log(run, metrics, {"nf.summary": stats.text[:8000]})
        self._status(run, STATUS["complete"])

    def sweep_stats(self, stats: SweepStats) -> None:
        run = self.runs.get(stats.sweep.key)
        if run is None:
            return
        digest = short_hash(stats.compare_md, stats.compare_csv)
        if run.tags.get("nf.compare_digest") != digest:
            with self.write_lock:
                self.client.log_text(run.id, stats.compare_md, "compare.md")
                self.client.log_text(run.id, stats.compare_csv, "compare.csv")
        self._log(run, [], {**stats.verdicts, "nf.compare_digest": digest})
        self._status(run, STATUS["complete"])

    def close(self) -> None:
        for run in self.runs.values():
            if run.params:
                self._log(run)


def sweep_tags(sweep: Sweep) -> dict[str, str]:
    return {"nf.folder": sweep.folder, **({"nf.study": sweep.study} if sweep.study else {})}


def config_tags(config: ConfigNode) -> dict[str, str]:
    return {"nf.sweep": config.sweep.key} if config.sweep is not None else {}


def _same(old: float | None, new: float) -> bool:
    if old is None:
        return False
    return old == new or (math.isnan(old) and math.isnan(new))
