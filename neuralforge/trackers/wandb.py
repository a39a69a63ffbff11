"""Weights & Biases, through wandb.init (offline by default: files that `wandb sync` uploads):
one run per seed, its config the W&B group; per config one more run (job type `config`) whose
series are the mean over its complete seeds at each epoch with the 95% CI, and whose summary
holds what `analysis summary` computes; per sweep one run (job type `sweep`) with the comparison.

A run's id is derived from its folder, and a relaunch resumes it (resume="allow"). Offline, each
launch adds an offline run folder of that id, which `wandb sync` joins into one run. wandb 0.31
keeps an offline run in its transaction log (`run-<id>.wandb`) alone, which it offers no reader
for: so each offline run's files/ also holds `nf-logged.json`, the last epoch and the summary
logged through it, written after each call; a relaunch reads them and logs only later epochs.
"""

from __future__ import annotations

import glob
import json
import math
import os
from pathlib import Path
from typing import Any

import wandb

from neuralforge.record.atomic import write_json
from neuralforge.record.schema import FAILED, RUNNING, Record
from neuralforge.trackers.base import ConfigStats, Seed, SweepStats, Writer, final_metrics, record_tags, short_hash

LOGGED = "nf-logged.json"


class WandbWriter(Writer):
    name = "wandb"

    def __init__(self, node: Any, where: Path) -> None:
        self.mode, self.project = node.get("mode"), node.get("project")
        self.dir = Path(node.get("dir") or where).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.runs: dict[str, Any] = {}  # id -> wandb Run, open
        self.known: dict[str, dict[str, Any]] = {}  # id -> the summary its earlier offline runs left
        self.exit: dict[str, int] = {}

    def _summary(self, run_id: str) -> dict[str, Any]:
        """What the earlier offline runs of `run_id` summed up, the latest last."""
        out: dict[str, Any] = {}
        pattern = os.path.join(glob.escape(str(self.dir / "wandb")), f"*-run-*-{run_id}", "files", LOGGED)
        for path in sorted(glob.glob(pattern)):
            try:
                out.update(json.loads(Path(path).read_text()))
            except (OSError, ValueError):
                continue
        return out

    def _run(self, run_id: str, **init: Any) -> Any:
        if run_id not in self.runs:
            self.runs[run_id] = wandb.init(
                project=self.project, dir=str(self.dir), id=run_id, mode=self.mode, resume="allow",
                reinit="create_new", settings=wandb.Settings(console="off", silent=True, disable_git=True,
                                                             save_code=False), **init)
        return self.runs[run_id]

    def _seed_run(self, seed: Seed) -> Any:
        return self._run(seed.key, name=seed.name, group=seed.config.name, job_type="seed",
                         config={**seed.params, **{f"nf/{k.removeprefix('nf.')}": v for k, v in seed.tags.items()}})

    def begin(self, seeds: list[Seed]) -> None:
        for seed in seeds:
            self.known.setdefault(seed.key, self._summary(seed.key))

    def rows(self, seed: Seed, rows: list[dict[str, float]]) -> None:
        known = self.known[seed.key]
        last = int(known.get("epoch") or 0)
        new = [row for row in rows if row["epoch"] > last]
        if not new:
            return
        run = self._seed_run(seed)
        for row in new:
            run.log(dict(row), step=int(row["epoch"]))
        known["epoch"] = int(new[-1]["epoch"])
        self._note(seed.key, run, known)

    def final(self, seed: Seed, rec: Record | None, state: str) -> None:
        known = self.known[seed.key]
        values = {k.replace(".", "/", 1): v for k, v in final_metrics(rec).items()} if state != RUNNING else {}
        tags = {f"nf/{k.removeprefix('nf.')}": v for k, v in record_tags(seed, rec, state).items()}
        wanted = {**values, **tags}
        if all(_same(known.get(k), v) for k, v in wanted.items()):
            return
        run = self._seed_run(seed)
        run.summary.update(wanted)
        run.tags = (state,)
        known.update(wanted)
        self._note(seed.key, run, known)
        self.exit[seed.key] = 1 if state == FAILED else 0

    def _note(self, run_id: str, run: Any, known: dict[str, Any]) -> None:
        """What this offline run holds so far, for the next launch to read."""
        write_json(Path(run.dir) / LOGGED, known)  # strict JSON: NaN as null

    def config_stats(self, stats: ConfigStats) -> None:
        run_id = stats.config.key
        digest = short_hash(stats.by_epoch, stats.values, stats.expected_best)
        if self._summary(run_id).get("nf/digest") == digest:
            return
        run = self._run(run_id, name=f"{stats.config.name} (mean over seeds)", group=stats.config.name,
                        job_type="config", config=stats.config.params)
        for epoch, metrics in sorted(stats.by_epoch.items()):
            values = {}
            for m, (_, mean, low, high) in metrics.items():
                values.update({f"mean/{m}": mean, f"mean/{m}_ci_low": low, f"mean/{m}_ci_high": high})
            run.log(values, step=epoch)
        run.summary.update({**{f"summary/{k}": v for k, v in stats.values.items()},
                            "summary/expected_best": stats.expected_best[-1] if stats.expected_best else None,
                            "nf/digest": digest})
        self._note(run_id, run, {"nf/digest": digest})
        self._finish(run_id)

    def sweep_stats(self, stats: SweepStats) -> None:
        run_id = stats.sweep.key
        digest = short_hash(stats.compare_csv, stats.verdicts)
        if self._summary(run_id).get("nf/digest") == digest:
            return
        run = self._run(run_id, name=stats.sweep.name, job_type="sweep")
        import io

        import pandas as pd
        table = pd.read_csv(io.StringIO(stats.compare_csv)) if stats.compare_csv else pd.DataFrame()
        run.log({"compare": wandb.Table(dataframe=table.astype(str))})
        run.summary.update({**{k.replace(".", "/"): v for k, v in stats.verdicts.items()}, "nf/digest": digest})
        self._note(run_id, run, {"nf/digest": digest})
        self._finish(run_id)

    def _finish(self, run_id: str) -> None:
        run = self.runs.pop(run_id, None)
        if run is not None:
            run.finish(exit_code=self.exit.pop(run_id, 0))

    def close(self) -> None:
        for run_id in list(self.runs):
            self._finish(run_id)


def _same(old: Any, new: Any) -> bool:
    """Whether a value read back from nf-logged.json (NaN written as null) is `new`."""
    if isinstance(new, float) and math.isnan(new):
        return old is None or (isinstance(old, float) and math.isnan(old))
    return old == new
