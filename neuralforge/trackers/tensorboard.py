"""TensorBoard, through tensorboard's own event writer and reader: one folder per seed under its
config under its sweep (`<logdir>/<sweep>/<config>/<seed>`), and per config one more run, `mean
over seeds`, whose series are the mean over its complete seeds at each epoch with the 95% CI,
drawn as a band by the Custom Scalars dashboard's margin charts.

What a seed's folder already holds is read back from its event files: a relaunch logs the epochs
after the last one on disk, each epoch one event, written whole or not at all. The derived runs
(the mean over seeds, the comparison) are rewritten whole when what they show changes.
"""

from __future__ import annotations

import glob
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata
from tensorboard.plugins.text.summary_v2 import text_pb
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.util import tensor_util

from neuralforge.record.files import TENSORBOARD
from neuralforge.record.schema import STALE, Record
from neuralforge.trackers.base import (
    FINAL,
    ConfigStats,
    Seed,
    SweepStats,
    Writer,
    final_metrics,
    heartbeat,
    record_tags,
    safe_dirname,
    short_hash,
    stamps,
)

AGGREGATE = "mean over seeds"
BAND_METRICS = ("val_acc", "test_acc", "val_loss", "train_loss")
OPEN_AT_ONCE = 64  # event writers kept open (each holds a thread); an export of a thousand runs reuses them


def scalars(values: dict[str, float]) -> Summary:
    return Summary(value=[Summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()])


def read_events(folder: Path) -> list[Any]:
    events = []
    for path in sorted(glob.glob(os.path.join(glob.escape(str(folder)), "events.out.tfevents.*"))):
        events += list(EventFileLoader(path).Load())
    return events


def _scalar(value: Any) -> float:
    if value.HasField("simple_value"):
        return float(value.simple_value)
    return float(tensor_util.make_ndarray(value.tensor))


def _same(old: float | None, new: float) -> bool:
    """Whether an event file's value (a float32) is `new`."""
    if old is None:
        return False
    a, b = np.float32(old), np.float32(new)
    return bool(a == b or (np.isnan(a) and np.isnan(b)))


class TensorBoardWriter(Writer):
    name = "tensorboard"

    def __init__(self, node: Any, where: Path) -> None:
        self.logdir = Path(node.get("dir") or where / TENSORBOARD).resolve()
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.writers: OrderedDict[str, EventFileWriter] = OrderedDict()
        self.last: dict[str, int] = {}  # seed key -> last epoch on disk
        self.finals: dict[str, dict[str, Any]] = {}  # seed key -> final values and status on disk

    # ------------------------------------------------------------------ folders
    def config_dir(self, config: Any) -> Path:
        top = self.logdir / safe_dirname(config.sweep.name) if config.sweep is not None else self.logdir
        return top / safe_dirname(config.name)

    def seed_dir(self, seed: Seed) -> Path:
        return self.config_dir(seed.config) / safe_dirname(seed.name)

    def _writer(self, folder: Path) -> EventFileWriter:
        key = str(folder)
        if key in self.writers:
            self.writers.move_to_end(key)
            return self.writers[key]
        if len(self.writers) >= OPEN_AT_ONCE:
            self.writers.popitem(last=False)[1].close()
        self.writers[key] = EventFileWriter(key, flush_secs=5)
        return self.writers[key]

    # ------------------------------------------------------------------ seeds
    def begin(self, seeds: list[Seed]) -> None:
        for seed in seeds:
            last, finals = 0, {}
            for event in read_events(self.seed_dir(seed)):
                for v in event.summary.value:
                    if v.tag == "epoch":
                        last = max(last, event.step)
                    elif v.tag.startswith("final/"):
                        finals[v.tag] = _scalar(v)
                    elif v.tag == "status":
                        finals["status"] = tensor_util.make_ndarray(v.tensor).item().decode()
            self.last[seed.key], self.finals[seed.key] = last, finals

    def rows(self, seed: Seed, rows: list[dict[str, float]]) -> None:
        new = [(row, t) for row, t in zip(rows, stamps(seed, rows, time.time())) if row["epoch"] > self.last[seed.key]]
        if not new:
            return
        w = self._writer(self.seed_dir(seed))
        for row, t in new:
            w.add_event(Event(wall_time=t, step=int(row["epoch"]), summary=scalars(row)))
        w.flush()
        self.last[seed.key] = int(new[-1][0]["epoch"])

    def final(self, seed: Seed, rec: Record | None, state: str) -> None:
        if state not in (*FINAL, STALE):
            return
        known = self.finals[seed.key]
        values = {f"final/{k.removeprefix('final.')}": v for k, v in final_metrics(rec).items()}
        changed = {k: v for k, v in values.items() if not _same(known.get(k), v)}
        tags = record_tags(seed, rec, state)
        if not changed and known.get("status") == state:
            return
        w = self._writer(self.seed_dir(seed))
        t = heartbeat(rec)
        step = rec.metrics.epochs_run if rec is not None else 0
        if changed:
            w.add_event(Event(wall_time=t, step=step, summary=scalars(changed)))
        if known.get("status") != state:
            text = "\n".join(f"- {k}: {v}" for k, v in tags.items())
            w.add_event(Event(wall_time=t, step=step, summary=text_pb("status", state)))
            w.add_event(Event(wall_time=t, step=step, summary=text_pb("tags", text)))
        w.flush()
        known.update(changed)
        known["status"] = state

    # ------------------------------------------------------------------ derived runs
    def _rewrite(self, folder: Path, digest: str, events: list[Event]) -> None:
        """Replace what `folder` holds with `events`, unless it already holds this digest's."""
        old = glob.glob(os.path.join(glob.escape(str(folder)), "events.out.tfevents.*"))
        if any(p.endswith(f".{digest}") for p in old):
            return
        self.writers.pop(str(folder), None)
        for p in old:
            os.unlink(p)
        w = EventFileWriter(str(folder), filename_suffix=f".{digest}")
        for e in events:
            w.add_event(e)
        w.close()

    def config_stats(self, stats: ConfigStats) -> None:
        t = time.time()
        events = []
        for epoch, metrics in sorted(stats.by_epoch.items()):
            values = {}
            for m, (n, mean, low, high) in metrics.items():
                values.update({f"mean/{m}": mean, f"mean/{m}/ci_low": low, f"mean/{m}/ci_high": high,
                               f"mean/{m}/n": n})
            events.append(Event(wall_time=t, step=epoch, summary=scalars(values)))
        n = int(stats.values.get("n", 0))
        events.append(Event(wall_time=t, step=n, summary=scalars(
            {f"summary/{k}": v for k, v in stats.values.items() if v is not None and np.isfinite(v)})))
        events += [Event(wall_time=t, step=i + 1, summary=scalars({"summary/expected_best": v}))
                   for i, v in enumerate(stats.expected_best)]
        events.append(Event(wall_time=t, step=n, summary=text_pb("summary", stats.text)))
        digest = short_hash(stats.by_epoch, stats.values, stats.expected_best, stats.text)
        self._rewrite(self.config_dir(stats.config) / AGGREGATE, digest, events)

    def sweep_stats(self, stats: SweepStats) -> None:
        t = time.time()
        layout = layout_pb2.Layout(category=[layout_pb2.Category(title="mean over seeds, 95% CI", chart=[
            layout_pb2.Chart(title=m, margin=layout_pb2.MarginChartContent(series=[
                layout_pb2.MarginChartContent.Series(value=f"mean/{m}", lower=f"mean/{m}/ci_low",
                                                     upper=f"mean/{m}/ci_high")]))
            for m in BAND_METRICS])])
        layout_summary = Summary(value=[Summary.Value(
            tag=custom_scalar_metadata.CONFIG_SUMMARY_TAG, metadata=custom_scalar_metadata.create_summary_metadata(),
            tensor=tensor_util.make_tensor_proto(layout.SerializeToString(), dtype=np.object_))])
        events = [Event(wall_time=t, step=0, summary=layout_summary),
                  Event(wall_time=t, step=0, summary=text_pb("compare", stats.compare_md)),
                  Event(wall_time=t, step=0, summary=text_pb("verdicts", "\n".join(
                      f"- {v}" for v in stats.verdicts.values()) or "no verdicts"))]
        folder = self.logdir / safe_dirname(stats.sweep.name)
        self._rewrite(folder, short_hash(stats.compare_md, stats.verdicts), events)

    def close(self) -> None:
        while self.writers:
            self.writers.popitem()[1].close()
