"""The training loop. One call trains a group of K seeded members of one config together;
a single run is the case K = 1.

A run folder's life: the lock is taken; a complete run is reported, not retrained; a run
with last.pt resumes from it after its fingerprint is checked; otherwise it starts fresh.
Each epoch trains, evaluates validation and test, appends to the history, writes best.pt when
validation accuracy improves, last.pt, and the records. Selection is on validation only
(on test only when data.val_size=0, and the record says so).
"""

from __future__ import annotations

import logging
import math
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from tqdm import tqdm

from neuralforge import checkpoint, data, functional, hardware, models, records
from neuralforge.config import VARY_ALL, differences, fingerprint, member_name, member_spec, resolve, validate
from neuralforge.errors import (CheckpointError, ConfigError, DataError, DiskFullError, DivergedError,
                                NeuralForgeError)
from neuralforge.models import flip_lowest_bit
from neuralforge.records import BEST, COMPLETE, FAILED, LAST, PRUNED, RUNNING
from neuralforge.seeding import group_generators

log = logging.getLogger("neuralforge")

# Targets that model, optimizer and scheduler configs may name: instantiate() refuses anything
# else, except the patterns a config adds in allow_targets. torch.nn's modules build layers
# and nothing else: a model of one's own may be an nn.Sequential in YAML, or return one.
EXECUTION_WHITELIST = ["neuralforge.models.*", "neuralforge.schedules.*", "torch.optim.*", "torch.nn.*"]


@dataclass
class Member:
    """What the loop tracks per member; saved in last.pt as plain data."""
    status: str = RUNNING
    best_score: float = -math.inf
    best_epoch: int | None = None
    since_best: int = 0
    error: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def member_folders(run_dir: Path, spec: dict[str, Any]) -> list[Path]:
    if spec["n_seeds"] == 1:
        return [run_dir]
    return [run_dir / member_name(member_spec(spec, k)) for k in range(spec["n_seeds"])]


def train(cfg: DictConfig, run_dir: str | Path, *, overrides: Sequence[str] = (), parallel_jobs: int = 1,
          on_epoch_end: Callable[["Run"], bool | None] | None = None) -> float:
    """Train (or resume, or report) the run in `run_dir`; return the objective: validation
    accuracy at the best epoch, averaged over the group's members.

    `on_epoch_end(run)` is called after each epoch's records are written; when it returns
    True (a search's pruner said so) the group stops, recorded as pruned, and NaN is returned:
    no objective, and no exception, which Hydra would log as a failed job with its traceback."""
    run = Run.prepare(cfg, run_dir, overrides=overrides, parallel_jobs=parallel_jobs, on_epoch_end=on_epoch_end)
    with checkpoint.RunLock(run.dir) as lock:
        run.heartbeat = lock.beat
        for path in records.clear_leftovers([run.dir, *run.folders]):
            log.info("Removed %s, left by a process that stopped", path)
        return run.go()


def build(node: DictConfig, allow: Sequence[str] = (), **kwargs: Any) -> Any:
    """instantiate() under the execution whitelist extended by `allow` (the config's allow_targets)."""
    try:
        return instantiate(node, _convert_="all", _execution_whitelist_=[*EXECUTION_WHITELIST, *allow], **kwargs)
    except InstantiationException as err:
        target = node.get("_target_")
        why = " ".join(line.strip().rstrip(".") + "." for line in str(err).splitlines() if line.strip())
        # Hydra names the target it refused: the config's own, or one that it returns or nests
        refused = re.search(r"Target '([\w.]+)'.* not in the Hydra execution whitelist", why)
        if refused is None:
            raise ConfigError(f"cannot build {target}: {why}") from None
        name = refused.group(1)
        raise ConfigError(f"{name}{'' if name == target else f' (from {target})'} is not among the targets a "
                          f"config may name: add its package to allow_targets, e.g. "
                          f"allow_targets='[{name.split('.')[0]}.*]'") from None


def gather(X: torch.Tensor, Y: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows idx (K, b) of X and Y as (K, b, ...); index_select is faster than X[idx] here."""
    flat = idx.reshape(-1)
    return X.index_select(0, flat).view(*idx.shape, *X.shape[1:]), Y.index_select(0, flat).view(idx.shape)


def member_loss(logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy per sample, (K, B), of logits (K, B, C) against labels (K, B)."""
    # classes on dim 1, not last: the CPU's log_softmax over a last dim of 10 ran 5 to 10x
    # slower at K = 32. Values are equal without label smoothing, within 2e-6 with it.
    return F.cross_entropy(logits.transpose(1, 2), y, reduction="none", label_smoothing=label_smoothing)


class Run:
    """One run folder: a group of K members of one config, from setup to its records."""

    @classmethod
    def prepare(cls, cfg: DictConfig, run_dir: str | Path, *, overrides: Sequence[str] = (), parallel_jobs: int = 1,
                on_epoch_end: Callable[["Run"], bool | None] | None = None) -> "Run":
        """Check the config and settle device and threads; nothing is read or written yet."""
        validate(cfg)
        device = hardware.resolve_device(cfg.device)
        threads = hardware.configure_cpu(cfg.threads or hardware.default_threads(parallel_jobs))
        hardware.configure_matmul(cfg.matmul_precision)
        spec = resolve(cfg, threads=threads, device=str(device))
        return cls(cfg, spec, fingerprint(spec), Path(run_dir), device, list(overrides), on_epoch_end)

    def __init__(self, cfg, spec, fp, run_dir, device, overrides, on_epoch_end):
        self.cfg, self.spec, self.fp, self.dir, self.device = cfg, spec, fp, run_dir, device
        self.overrides, self.on_epoch_end = overrides, on_epoch_end
        self.K = spec["n_seeds"]
        self.folders = member_folders(run_dir, spec)
        self.specs = [member_spec(spec, k) for k in range(self.K)]
        self.selection = "val_acc" if spec["data"]["val_size"] > 0 else "test_acc"
        self.t0 = time.time()
        self.final: set[int] = set()  # members whose finished records are written
        self.elapsed_before = 0.0
        self.started = time.time()
        self.heartbeat: Callable[[], None] = lambda: None  # refreshes the run lock, once an epoch

    # ----------------------------------------------------------------- entry
    def go(self) -> float:
        existing = self.check_folder()
        if all(rec is not None and rec["status"] == COMPLETE for rec in existing):
            return self.complete_score(existing)
        ckpt = self.load_last()  # and checked, before any data is read
        self.setup()
        if ckpt is not None:
            self.resume(ckpt, existing)
        else:
            log.info("Training %s for %d epochs in %s", self.seeds_text(), self.spec["trainer"]["epochs"], self.dir)
        try:
            self.loop()
        except DiskFullError as err:
            self.record_failure(str(err), unwritable=(DiskFullError,))
            raise
        except NeuralForgeError:
            raise
        except Exception as err:
            self.record_failure(f"{type(err).__name__}: {err}")
            raise
        return self.finish()

    def record_failure(self, error: str, unwritable: tuple[type[Exception], ...] = ()) -> None:
        """Every member still running failed with `error`; written where it can be."""
        for m in self.members:
            if m.status == RUNNING:
                m.status, m.error = FAILED, error
        try:
            self.write_records()
        except unwritable:  # a full disk may refuse the records too: they stay as last written
            log.warning("the failure could not be recorded: %s", error)

    def check_folder(self) -> list[dict[str, Any] | None]:
        """Refuse a folder that holds a record of another config; return each member's record."""
        # every record in the folder, also those this command would not write (a single run's,
        # where a group now starts; another group's members): last.pt may be gone (keep_last=false)
        found = {path.parent: records.read_results(path.parent)
                 for path in [self.dir / records.RESULTS, *sorted(self.dir.glob(f"*=*/{records.RESULTS}"))]}
        for folder, rec in found.items():
            if rec is not None and rec.get("fingerprint") != self.fp:
                raise ConfigError(
                    f"{folder} holds a run of another config ({differences(rec.get('config'), self.spec)}). "
                    f"Refusing to mix them: give this command the first one's settings, or choose another "
                    f"hydra.run.dir / hydra.sweep.dir.")
        return [found.get(f) for f in self.folders]  # each member's folder is among those read

    def complete_score(self, existing: list[dict[str, Any]]) -> float:
        """The objective of a group whose members are all complete, reported, not retrained."""
        # data.root and data.path are not fingerprinted (the same files may move): files there
        # must be the run's own. None there (deleted after training), nothing is compared or downloaded.
        d = self.spec["data"]
        try:
            checksums = data.check_files(d)
        except (DataError, OSError):  # missing or unreadable
            checksums = None
        for folder, rec in zip(self.folders, existing):
            if checksums and (rec.get("provenance") or {}).get("dataset_sha256", checksums) != checksums:
                raise ConfigError(f"{folder} holds a complete run on other data files than {data.location(d)} "
                                  f"(their sha256 differ). Point it at that run's files, or choose "
                                  f"another hydra.run.dir / hydra.sweep.dir.")
        score = float(np.mean([rec["metrics"][self.selection] for rec in existing]))
        log.info("Skipped: run already complete in %s (%s %.2f%%)", self.dir, self.selection, 100 * score)
        return score

    def load_last(self) -> dict[str, Any] | None:
        last = self.dir / LAST
        ckpt = checkpoint.load(last) if last.exists() else None
        if ckpt is not None and ckpt.get("fingerprint") != self.fp:
            raise CheckpointError(f"{last} belongs to another config ({differences(ckpt.get('config'), self.spec)}). "
                                  f"Refusing to resume: give this command the first one's settings, or use "
                                  f"another output folder.")
        return ckpt

    def resume(self, ckpt: dict[str, Any], existing: list[dict[str, Any] | None]) -> None:
        last = self.dir / LAST
        # data.root and data.path are not fingerprinted (the same files may move): the files themselves must match
        if ckpt.get("data", self.data.checksums) != self.data.checksums:
            raise CheckpointError(f"{last} was trained on other data files than {data.location(self.spec['data'])} "
                                  f"(their sha256 differ). Point it at the first run's files.")
        self.restore(ckpt)
        # members whose final records are on disk keep them as written (by that process,
        # with its provenance); only a record the checkpoint has overtaken is written again
        self.final = {k for k, (m, rec) in enumerate(zip(self.members, existing))
                      if m.status != RUNNING and rec is not None and rec["status"] == m.status}
        log.info("Resuming from epoch %d of %d: %s in %s", self.epoch + 1, self.spec["trainer"]["epochs"],
                 self.seeds_text(), self.dir)

    def seeds_text(self) -> str:
        first = self.spec["seed"]
        if self.K == 1:
            return f"seed {first}"
        if self.spec["vary"] == VARY_ALL:
            return f"seeds {first}..{first + self.K - 1} together"
        # members that differ in one source only: named by it, as their folders are
        return f"{self.K} runs together, {member_name(self.specs[0])} to {member_name(self.specs[-1])}"

    # ----------------------------------------------------------------- build
    def setup(self) -> None:
        cfg, spec, K = self.cfg, self.spec, self.K
        d = spec["data"]
        self.data = data.load(d, self.device)
        self.gens = group_generators([s["seeds"] for s in self.specs], self.device)
        n = len(self.data.train_y)
        splits = [data.split(n, d["val_size"], g) for g in self.gens["split"]]
        self.train_idx = torch.stack([s[0] for s in splits]).to(self.device)
        self.val_idx = torch.stack([s[1] for s in splits]).to(self.device)

        self.model = self.build_model()
        if spec["trainer"]["init_from"]:
            checkpoint.load_weights(self.model, Path(spec["trainer"]["init_from"]))
        for k, member in enumerate(self.specs):  # on the initial weights, wherever they came from
            if member["init_perturb"]:
                flip_lowest_bit(self.model, k, member["init_perturb"])
        self.n_params = sum(p[0].numel() for p in self.model.parameters())

        t = spec["trainer"]
        self.steps = math.ceil(self.train_idx.shape[1] / t["batch_size"])
        self.params = list(self.model.parameters())
        try:
            self.optimizer = build(cfg.optimizer, cfg.allow_targets)(self.params)
            self.scheduler = build(cfg.scheduler, cfg.allow_targets)(self.optimizer,
                                                                     total_steps=t["epochs"] * self.steps)
        except ValueError as err:  # torch's own checks, e.g. betas or pct_start out of range
            raise ConfigError(f"optimizer or scheduler setting refused by torch: {err}") from None
        self.members = [Member() for _ in range(K)]
        self.best_predictions = torch.zeros(K, len(self.data.test_y), dtype=torch.uint8)
        self.epoch = 0
        self.provenance = records.provenance(str(self.device), hardware.device_name(self.device),
                                             spec["threads"], self.data.checksums)
        records.keep_source_diff(self.dir, self.provenance)

    def build_model(self) -> nn.Module:
        """A built-in stacked model as it is; any other nn.Module as K members through torch.func,
        run once on two training images before anything trains."""
        node, allow = self.cfg.model, self.cfg.allow_targets
        in_shape, num_classes = tuple(self.data.train_x.shape[1:]), self.data.num_classes
        with torch.random.fork_rng(devices=[]):  # building the partial may build nested modules
            factory = build(node, allow, _partial_=True).func  # the target, past the whitelist
        if isinstance(factory, type) and issubclass(factory, models.Stacked):
            model = build(node, allow, in_shape=in_shape, num_classes=num_classes, members=self.K)
            model.reset_parameters(self.gens["init"])
            return model.to(self.device)
        extra = functional.shape_args(factory, list(node), in_shape, num_classes)
        model = functional.build(lambda: build(node, allow, **extra), [s["seeds"]["init"] for s in self.specs],
                                 in_shape).to(self.device)
        functional.check(model, self.data.train_x[:2], num_classes, node._target_)
        return model

    def state(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fp, "config": self.spec, "epoch": self.epoch,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": {src: [g.get_state() for g in self.gens[src]] for src in ("order", "augment", "dropout")},
            "data": self.data.checksums,
            "members": [{**asdict(m), "status": str(m.status)} for m in self.members],  # plain str: weights_only loads
            "best_predictions": self.best_predictions,
            "elapsed": self.elapsed_before + time.time() - self.t0, "started": self.started,
        }

    def restore(self, ckpt: dict[str, Any]) -> None:
        last = self.dir / LAST
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(ckpt["scheduler"])
            for src, states in ckpt["rng"].items():
                for g, s in zip(self.gens[src], states, strict=True):
                    g.set_state(s)
            self.members = [Member(**m) for m in ckpt["members"]]
            self.best_predictions = ckpt["best_predictions"]
            self.epoch, self.elapsed_before, self.started = ckpt["epoch"], ckpt["elapsed"], ckpt["started"]
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{last} does not match this run ({type(err).__name__}: {err}). "
                                  f"Delete it to start again, or use another output folder.") from None

    # ----------------------------------------------------------------- loop
    def loop(self) -> None:
        t = self.spec["trainer"]
        epochs = t["epochs"]
        while self.epoch < epochs and any(m.status == RUNNING for m in self.members):
            tick = time.time()
            train_loss, train_acc = self.train_epoch()
            val = self.evaluate(self.data.train_x, self.data.train_y, self.val_idx) if self.val_idx.shape[1] else None
            test_loss, test_acc, test_pred = self.evaluate(self.data.test_x, self.data.test_y)
            self.epoch += 1
            seconds = time.time() - tick
            lr = self.optimizer.param_groups[0]["lr"]
            for k, m in enumerate(self.members):
                if m.status != RUNNING:
                    continue
                row = {"epoch": self.epoch, "train_loss": float(train_loss[k]), "train_acc": float(train_acc[k]),
                       "val_loss": float(val[0][k]) if val else math.nan,
                       "val_acc": float(val[1][k]) if val else math.nan,
                       "test_loss": float(test_loss[k]), "test_acc": float(test_acc[k]),
                       "lr": float(lr), "seconds": seconds}
                m.history.append(row)
                self.judge(k, m, row, test_pred[k])
            self.save_checkpoint()
            self.write_records()
            self.heartbeat()
            self.report(seconds)
            if self.on_epoch_end is not None and self.on_epoch_end(self):
                self.prune()

    def train_epoch(self) -> tuple[torch.Tensor, torch.Tensor]:
        t, d = self.spec["trainer"], self.spec["data"]
        B, K, shift, flip = t["batch_size"], self.K, d["augment"]["shift"], d["augment"]["flip"]
        X, Y = self.data.train_x, self.data.train_y
        perms = torch.stack([torch.randperm(self.train_idx.shape[1], generator=g) for g in self.gens["order"]])
        order = torch.gather(self.train_idx, 1, perms.to(self.device))
        losses, preds = [], []  # per step; summed once at the end of the epoch, not every step
        self.model.train()
        bar = tqdm(range(self.steps), desc=f"epoch {self.epoch + 1}", leave=False, disable=not sys.stderr.isatty())
        for s in bar:
            x, y = gather(X, Y, order[:, s * B:(s + 1) * B])
            if shift:
                x = data.random_shift(x, shift, self.gens["augment"], self.data.background)
            if flip:
                x = data.random_flip(x, self.gens["augment"])
            logits = self.model(x, self.gens["dropout"])
            loss = member_loss(logits, y, t["label_smoothing"])
            # not optimizer.zero_grad(), which took 45 us a step in this loop against 6 us
            for p in self.params:
                p.grad = None
            # the gradient of the sum over members of each member's mean loss, seeded directly:
            # members share no parameters, so each one's gradient is exactly its own, and no
            # sum or division joins the graph (3% of a single run's epoch)
            loss.backward(torch.full_like(loss, 1 / y.shape[1]))
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            losses.append(loss.detach())
            preds.append(logits.detach().argmax(-1))
        labels = Y.index_select(0, order.flatten()).view(K, -1)
        # counts divided in float64, on the CPU (MPS has no float64): 43/200 is 0.215, not 0.2150000035762787
        correct = (torch.cat(preds, 1) == labels).sum(1).cpu()
        return torch.cat(losses, 1).mean(1).cpu(), correct.double() / labels.shape[1]

    @torch.no_grad()
    def evaluate(self, X, Y, idx=None):
        """Loss, accuracy and predicted labels per member, on idx (K, n) or on all of X shared."""
        self.model.eval()
        eb = self.spec["trainer"]["eval_batch_size"]
        n = idx.shape[1] if idx is not None else len(Y)
        loss_sum = torch.zeros(self.K, device=self.device)
        preds = []
        for i in range(0, n, eb):
            if idx is None:
                x, y = X[i:i + eb], Y[i:i + eb].expand(self.K, -1)
            else:
                x, y = gather(X, Y, idx[:, i:i + eb])
            logits = self.model(x)
            loss_sum += member_loss(logits, y).sum(1)
            preds.append(logits.argmax(-1))
        pred = torch.cat(preds, 1)
        y_all = Y[idx] if idx is not None else Y.expand(self.K, -1)
        acc = (pred == y_all).sum(1).cpu().double() / n
        return (loss_sum / n).cpu(), acc, pred.to(torch.uint8).cpu()

    def judge(self, k: int, m: Member, row: dict[str, float], test_pred: torch.Tensor) -> None:
        t = self.spec["trainer"]
        if not math.isfinite(row["train_loss"]):
            m.status = FAILED
            m.error = (f"training diverged: train loss is {row['train_loss']} in epoch {row['epoch']} "
                       f"(lower optimizer.lr?)")
            return
        if row[self.selection] > m.best_score:
            m.best_score, m.best_epoch, m.since_best = row[self.selection], row["epoch"], 0
            self.best_predictions[k] = test_pred
            checkpoint.save({"model": checkpoint.member_state(self.model, k), "config": self.specs[k],
                             "fingerprint": self.fp, "epoch": row["epoch"], self.selection: row[self.selection]},
                            self.folders[k] / BEST)
        else:
            m.since_best += 1
        if row["epoch"] >= t["epochs"] or (t["patience"] and m.since_best >= t["patience"]):
            m.status = COMPLETE

    def prune(self) -> None:
        """Stop the members still training, for good: last.pt says so too, so that a relaunch
        reports the pruning instead of training on."""
        for m in self.members:
            if m.status == RUNNING:
                m.status = PRUNED
        self.save_checkpoint()
        self.write_records()
        log.info("Pruned after epoch %d: the search's pruner stopped this trial", self.epoch)

    def save_checkpoint(self) -> None:
        checkpoint.save(self.state(), self.dir / LAST)

    # ----------------------------------------------------------------- records
    def write_records(self) -> None:
        now = time.time()
        wall = self.elapsed_before + now - self.t0
        for k, (m, folder) in enumerate(zip(self.members, self.folders)):
            if k in self.final:
                continue  # its records were written when it finished
            if m.status != RUNNING:
                self.final.add(k)
            if m.status == COMPLETE:
                records.write_predictions(folder, self.best_predictions[k].numpy())
            records.write_history(folder, m.history)
            records.write_json(folder / records.RESULTS, {
                "schema_version": records.SCHEMA_VERSION,
                "status": m.status,
                "error": m.error,
                "metrics": records.metrics(m.history, m.best_epoch, self.selection),
                "seed": self.specs[k]["seed"],
                "seeds": self.specs[k]["seeds"],
                "config": self.specs[k],
                "fingerprint": self.fp,
                "overrides": self.overrides,
                "group": {"size": self.K, "member": k, "folder": str(self.dir.resolve())},
                "n_params": self.n_params,
                "dropout_masks": self.model.dropout_masks,
                "timing": {"started": self.started, "heartbeat": now, "wall_seconds": wall,
                           "seconds_per_epoch": float(np.mean([r["seconds"] for r in m.history]))
                           if m.history else None},
                "provenance": self.provenance,
            })

    def report(self, seconds: float) -> None:
        h = [m.history[-1] for m in self.members if m.history and m.history[-1]["epoch"] == self.epoch]
        if not h:
            return
        epochs = self.spec["trainer"]["epochs"]
        if self.K == 1:
            r = h[0]
            log.info("epoch %d/%d | train loss %.4f acc %.2f%% | val loss %.4f acc %.2f%% | test acc %.2f%% | "
                     "lr %.2e | %.1f s", r["epoch"], epochs, r["train_loss"], 100 * r["train_acc"], r["val_loss"],
                     100 * r["val_acc"], 100 * r["test_acc"], r["lr"], seconds)
        else:
            val = np.array([r["val_acc"] for r in h]) * 100
            test = np.array([r["test_acc"] for r in h]) * 100
            log.info("epoch %d/%d | %d members | val acc mean %.2f%% [%.2f, %.2f] | test acc mean %.2f%% | %.1f s",
                     self.epoch, epochs, len(h), val.mean(), val.min(), val.max(), test.mean(), seconds)

    def announce_result(self) -> None:
        """One line: what was chosen, at what accuracy, how long it took and where it is."""
        done = [m for m in self.members if m.status == COMPLETE and m.best_epoch is not None]
        if not done:
            return
        rows = [next(r for r in m.history if r["epoch"] == m.best_epoch) for m in done]
        wall = self.elapsed_before + time.time() - self.t0
        chosen = "validation" if self.selection == "val_acc" else "test (data.val_size=0)"
        if self.K == 1:
            r = rows[0]
            val = "" if self.selection != "val_acc" else f"val acc {100 * r['val_acc']:.2f}%, "
            log.info("Done: epoch %d of %d chosen on %s: %stest acc %.2f%% | %.1f s | results in %s",
                     r["epoch"], len(done[0].history), chosen, val, 100 * r["test_acc"], wall, self.dir)
            return
        test = 100 * np.array([r["test_acc"] for r in rows])
        log.info("Done: %d of %d seeds complete, epochs chosen on %s: test acc mean %.2f%% [min %.2f, max %.2f] | "
                 "%.1f s | results in %s", len(done), self.K, chosen, test.mean(), test.min(), test.max(),
                 wall, self.dir / f"{self.folders[0].name.split('=')[0]}=*")

    def finish(self) -> float:
        # a no-op after the loop's own last write; it completes the records of a run killed
        # between its final last.pt and them, whose relaunch restores with nothing left to train
        self.write_records()
        # a failed member keeps last.pt: started again, the run reports the failure instead of
        # training the whole group from scratch to diverge once more
        if not self.spec["trainer"]["keep_last"] and all(m.status == COMPLETE for m in self.members):
            (self.dir / LAST).unlink(missing_ok=True)
        self.announce_result()
        failed = [(f, m.error) for f, m in zip(self.folders, self.members) if m.status == FAILED]
        if failed and self.K == 1:
            raise DivergedError(failed[0][1])
        if failed:
            raise DivergedError(f"{len(failed)} of {self.K} failed: " + "; ".join(f"{f.name}: {e}" for f, e in failed))
        if any(m.status == PRUNED for m in self.members):
            return math.nan  # the sweeper reads the records' status, and tells the trial PRUNED
        return float(np.mean([m.best_score for m in self.members]))
