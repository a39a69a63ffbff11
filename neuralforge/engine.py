"""One call trains a group of K seeded members of one config in its run folder, or resumes it, or
reports it complete; a single run is the case K = 1.

    folder = RunFolder(...)             # the lock, the records, last.pt (runfolder.py)
    training = Training(..., last)      # data, generators, model, optimizer (training.py)
    while training.running:
        outcome = training.run_epoch()  # train, evaluate validation and test, choose
        folder.save(training, outcome)  # best.pt, last.pt, records, heartbeat

Selection is on validation only (on test only when data.val_size=0, and the record says so).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from neuralforge import hardware
from neuralforge.config import fingerprint, resolve, validate
from neuralforge.record import objective
from neuralforge.record.errors import DiskFullError, NeuralForgeError
from neuralforge.record.schema import COMPLETE, Record
from neuralforge.runfolder import RunFolder
from neuralforge.training import Outcome, Training


class Listener:
    """What hears of a run as it goes: a search's trial, a tracker. Each call comes after the
    records it reports on are written; a listener that fails raises, and the run records why."""

    def epoch_done(self, training: Training, outcome: Outcome) -> bool:
        """After each epoch; True stops the group for good, recorded as pruned (a search's pruner)."""
        return False

    def finished(self, records: list[Record]) -> None:
        """Once the group is complete, with its members' final records (their objective included)."""


def settle(cfg: DictConfig, parallel_jobs: int = 1) -> tuple[dict[str, Any], torch.device]:
    """Check the config and settle device, threads and matmul precision: the resolved config
    (`spec`) and the device a Training of it runs on."""
    validate(cfg)
    device = hardware.resolve_device(cfg.device)
    threads = hardware.configure_cpu(cfg.threads or hardware.default_threads(parallel_jobs))
    hardware.configure_matmul(cfg.matmul_precision)
    hardware.configure_cuda(device)
    return resolve(cfg, threads=threads, device=str(device)), device


def train(cfg: DictConfig, run_dir: str | Path, *, overrides: Sequence[str] = (), parallel_jobs: int = 1,
          listeners: Sequence[Listener] = ()) -> float:
    """Train (or resume, or report) the run in `run_dir`; return its objective, by default
    validation accuracy at the chosen epoch, averaged over the group's members: NaN when a
    listener pruned it (no exception, which Hydra would log as a failed job with its traceback)."""
    spec, device = settle(cfg, parallel_jobs)
    folder = RunFolder(run_dir, spec, fingerprint(spec), device, overrides, objective.names(cfg.objective))
    with folder:
        existing = folder.records()
        if all(rec is not None and rec.status == COMPLETE for rec in existing):
            return folder.skip(existing)  # type: ignore[arg-type]
        last = folder.last()  # and checked, before any data is read
        training = Training(cfg, spec, device, last)
        folder.start(training, existing, resumed=last is not None)
        try:
            while training.running:
                outcome = training.run_epoch()
                folder.save(training, outcome)
                folder.report(training, outcome)
                if any([listener.epoch_done(training, outcome) for listener in listeners]):
                    training.prune()
                    folder.save(training)
        except DiskFullError as err:
            folder.record_failure(training, str(err), unwritable=(DiskFullError,))
            raise
        except NeuralForgeError:
            raise
        except Exception as err:
            folder.record_failure(training, f"{type(err).__name__}: {err}")
            raise
        score, records = folder.finish(training)
    for listener in listeners:
        listener.finished(records)
    return score
