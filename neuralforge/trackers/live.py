"""Live logging, from inside the run: a Listener that engine.train calls after each epoch's
records are written, which hands each tracker the member's new rows and, once a member is
final, its record. The calls are queued and written by a thread of the tracker's own.

None of it ever fails a run: a tracker that fails gives one warning line and is dropped; the
records stay the source of truth, and `python -m analysis export` writes what it missed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from operator import methodcaller
from pathlib import Path
from typing import Any

from neuralforge.config import fingerprint
from neuralforge.engine import Listener
from neuralforge.record.schema import RUNNING, Record, read_results
from neuralforge.runfolder import member_folders
from neuralforge.trackers.base import FINAL, Seed, Writer, enabled, home, open_writer, read_history, require, seed_node
from neuralforge.training import Outcome, Training

log = logging.getLogger("neuralforge.trackers")

# The logger's thread writes at most this share of the wall time: rows that come faster wait, and
# each member's go in one call. An MLflow SQLite store spends about 5 ms of CPU on a call, so K = 32
# members written every epoch would take 2 to 3% of an 8 s epoch; at this cap, they wait about
# 100 times a round's time (20 s at K = 32, half a second for one run).
BUSY_SHARE = 0.01
MAX_WAIT = 60.0  # seconds: the longest a row waits, however slow the store


class Background(Writer):
    """A writer that works off the training thread: calls are queued and run in order by one
    thread of its own, which also opens the writer (importing its client takes seconds), and
    which keeps its busy share of the wall time under BUSY_SHARE by joining the rows queued for
    one seed into one call. A failure there is raised by the next call, or by close(), so that
    Trackers warns and drops the tracker; what was queued when a process is killed is in the
    records, and the relaunch logs it."""

    def __init__(self, name: str, make: Callable[[], Writer]) -> None:
        self.name = name
        self.error: Exception | None = None
        self.inner: Writer | None = None
        self.calls: queue.Queue = queue.Queue()
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._work, args=(make,), name=f"logger-{name}", daemon=True)
        self.thread.start()

    def _work(self, make: Callable[[], Writer]) -> None:
        not_before, done = 0.0, False
        while not done:
            batch = [self.calls.get()]
            self.closing.wait(max(0.0, not_before - time.monotonic()))  # woken early by close()
            while True:
                try:
                    batch.append(self.calls.get_nowait())
                except queue.Empty:
                    break
            done = batch[-1] is None
            tick = time.monotonic()
            for kind, args in joined([c for c in batch if c is not None]):
                if self.error is None:
                    try:
                        if self.inner is None:
                            self.inner = make()
                        getattr(self.inner, kind)(*args)
                    except Exception as err:  # raised in the caller's thread by the next call
                        self.error = err
            busy = time.monotonic() - tick
            not_before = time.monotonic() + min(busy * (1 - BUSY_SHARE) / BUSY_SHARE, MAX_WAIT)

    def _put(self, kind: str, *args: Any) -> None:
        if self.error is not None:
            raise self.error
        self.calls.put((kind, args))

    def begin(self, seeds: list[Seed]) -> None:
        self._put("begin", seeds)

    def rows(self, seed: Seed, rows: list[dict[str, float]]) -> None:
        self._put("rows", seed, list(rows))

    def final(self, seed: Seed, rec: Record | None, state: str) -> None:
        self._put("final", seed, rec, state)

    def close(self) -> None:
        self.calls.put(("close", ()))
        self.calls.put(None)
        self.closing.set()
        self.thread.join()
        if self.error is not None:
            raise self.error


def joined(calls: list[tuple[str, tuple]]) -> list[tuple[str, tuple]]:
    """The calls in order, each seed's consecutive rows calls joined into its first (a final
    call for a seed, or begin and close, ends what may be joined)."""
    out: list[tuple[str, tuple]] = []
    open_rows: dict[str, int] = {}  # seed key -> index in out of the rows call still joining
    for kind, args in calls:
        if kind == "rows":
            seed, rows = args
            if seed.key in open_rows:
                out[open_rows[seed.key]][1][1].extend(rows)
                continue
            open_rows[seed.key] = len(out)
            out.append((kind, (seed, list(rows))))
            continue
        out.append((kind, args))
        if kind == "final":
            open_rows.pop(args[0].key, None)
        else:
            open_rows.clear()
    return out


class Live(Listener):
    """The trackers the `logger` node turns on, for the group trained in `run_dir`. Built before
    training: a tracker whose package is missing is refused there (ConfigError), before anything
    is written. The trackers open after the first epoch this launch trains, and log first what
    the records on disk hold (a resumed run's earlier epochs), then each epoch's rows as they are
    written; a group found complete trains nothing, and is logged by the export at the end
    (analysis.export.ExportAtEnd). Close it, as a context manager, whatever the run's end."""

    def __init__(self, logger_cfg: Any, run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> None:
        self.cfg, self.dir, self.overrides = logger_cfg, Path(run_dir), list(overrides)
        self.names = enabled(logger_cfg)
        require(self.names, logger_cfg)
        self.writers: list[Writer] = []
        self.seeds: list[Seed] = []
        self.done: set[int] = set()  # members whose final record the trackers have

    def __enter__(self) -> Live:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def epoch_done(self, training: Training, outcome: Outcome) -> bool:
        if not self.names:
            return False
        if not self.seeds:
            self._open(training)  # logs the records on disk, this epoch included
        else:
            for k, row in outcome.rows.items():
                self._each(methodcaller("rows", self.seeds[k], [asdict(row)]))
        for k, m in enumerate(training.members):
            if m.status != RUNNING and k not in self.done:  # failed, or stopped by patience
                self._final(k, read_results(Path(self.seeds[k].folder)))
        return False

    def finished(self, records: list[Record]) -> None:
        if not self.seeds:
            return
        for rec in records:  # with their objective now
            self._final(rec.group.member, rec)

    def close(self) -> None:
        self._each(lambda w: w.close())
        self.writers = []

    # ------------------------------------------------------------------ inside
    def _open(self, training: Training) -> None:
        folders = member_folders(self.dir, training.spec)
        fp = fingerprint(training.spec)
        self.seeds = [seed_node(f, self.dir, spec, fp, self.overrides) for f, spec in zip(folders, training.specs)]
        records = [read_results(f) for f in folders]
        for seed, rec in zip(self.seeds, records):  # rows are stamped from the start, here as in an export
            seed.started = rec.timing.started if rec is not None else training.started
        where = home(self.seeds[0])
        for name in self.names:
            node = self.cfg[name]
            self.writers.append(Background(name, partial(open_writer, name, node, where)))
        self._each(lambda w: w.begin(self.seeds))
        for seed, folder, rec in zip(self.seeds, folders, records):
            rows = read_history(folder)
            if rows:
                self._each(methodcaller("rows", seed, rows))
            if rec is None or rec.status == RUNNING:  # training now, also where a killed run left its tracker run
                self._each(methodcaller("final", seed, rec, str(RUNNING)))

    def _final(self, k: int, rec: Record | None) -> None:
        if rec is None or rec.status not in FINAL:
            return
        self.done.add(k)
        self._each(lambda w: w.final(self.seeds[k], rec, str(rec.status)))

    def _each(self, call: Callable[[Writer], None]) -> None:
        for w in list(self.writers):
            try:
                call(w)
            except Exception as err:  # any failure of a tracker must not fail the run
                s = self.seeds[0]
                folder = s.config.sweep.folder if s.config.sweep is not None else s.group_folder
                first = str(err).splitlines()[0] if str(err) else ""
                log.warning("logger %s stopped (%s: %s); the records keep everything: python -m analysis export %s %s",
                            w.name, type(err).__name__, first, w.name, folder)
                self.writers.remove(w)
                try:
                    w.close()
                except Exception:  # its failure is the one just warned of
                    pass
