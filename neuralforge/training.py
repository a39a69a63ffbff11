"""A group's training state, built whole from its config (and, to resume, its last.pt), and one
epoch of training. It writes nothing: each epoch returns what happened, and the run folder
(runfolder.py) decides what to write.

K seeded members of one config train together; a single run is K = 1.
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm import tqdm

from neuralforge import checkpoint, data, functional, models
from neuralforge.checkpoint import LastState
from neuralforge.config import member_spec
from neuralforge.models import flip_lowest_bit
from neuralforge.record.errors import CheckpointError, ConfigError
from neuralforge.record.schema import COMPLETE, FAILED, PRUNED, RUNNING, Epoch
from neuralforge.seeding import group_generators

# Targets that model, optimizer and scheduler configs may name: instantiate() refuses anything
# else, except the patterns a config adds in allow_targets. torch.nn's modules build layers
# and nothing else: a model of one's own may be an nn.Sequential in YAML, or return one.
EXECUTION_WHITELIST = ["neuralforge.models.*", "neuralforge.schedules.*", "torch.optim.*", "torch.nn.*"]
# the generators whose state moves as training draws: init and split draw once, at the start
DRAWING_SOURCES = ("order", "augment", "dropout")


@dataclass
class Member:
    """What the loop tracks per member; saved in last.pt as plain data."""
    status: str = RUNNING
    best_score: float = -math.inf
    best_epoch: int | None = None
    since_best: int = 0
    error: str | None = None
    history: list[Epoch] = field(default_factory=list)

    def plain(self) -> dict[str, Any]:
        """As last.pt holds it: primitives only, which a weights-only load reads."""
        return {**asdict(self), "status": str(self.status), "history": [asdict(r) for r in self.history]}

    @classmethod
    def from_plain(cls, d: dict[str, Any]) -> Member:
        return cls(**{**d, "history": [Epoch(**r) for r in d["history"]]})


@dataclass(frozen=True)
class Outcome:
    """What one epoch did: each member's row (those that trained), and the members whose chosen
    epoch it is now (their best.pt and predictions are due)."""
    epoch: int
    seconds: float
    rows: dict[int, Epoch]
    new_best: tuple[int, ...]


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


class Training:
    """A group of K members of one config, ready to train: data on the device, one generator per
    seed source and member, the validation splits, the model, optimizer and scheduler, and each
    member's progress, restored from `resume` (a last.pt already checked against the config)."""

    def __init__(self, cfg: DictConfig, spec: dict[str, Any], device: torch.device,
                 resume: LastState | None = None) -> None:
        self.t0 = time.time()
        self.cfg, self.spec, self.device = cfg, spec, device
        self.K = spec["n_seeds"]
        self.specs = [member_spec(spec, k) for k in range(self.K)]
        self.selection = "val_acc" if spec["data"]["val_size"] > 0 else "test_acc"
        d, t = spec["data"], spec["trainer"]
        self.data = data.load(d, device)
        if resume is not None and resume.data != self.data.checksums:
            # data.root and data.path are not fingerprinted (the same files may move): the files must match
            raise CheckpointError(f"{resume.path} was trained on other data files than {data.location(d)} "
                                  f"(their sha256 differ). Point it at the first run's files.")
        self.gens = group_generators([s["seeds"] for s in self.specs], device)
        n = len(self.data.train_y)
        splits = [data.split(n, d["val_size"], g) for g in self.gens["split"]]
        self.train_idx = torch.stack([s[0] for s in splits]).to(device)
        self.val_idx = torch.stack([s[1] for s in splits]).to(device)
        self.model = self._model()
        self.n_params = sum(p[0].numel() for p in self.model.parameters())
        self._perturb()
        self.steps = math.ceil(self.train_idx.shape[1] / t["batch_size"])
        self.params = list(self.model.parameters())
        try:
            self.optimizer = build(cfg.optimizer, cfg.allow_targets)(self.params)
            self.scheduler = build(cfg.scheduler, cfg.allow_targets)(self.optimizer,
                                                                     total_steps=t["epochs"] * self.steps)
        except ValueError as err:  # torch's own checks, e.g. betas or pct_start out of range
            raise ConfigError(f"optimizer or scheduler setting refused by torch: {err}") from None
        self.members = [Member() for _ in range(self.K)]
        self.best_predictions = torch.zeros(self.K, len(self.data.test_y), dtype=torch.uint8)
        self.epoch = 0
        self.started, self.elapsed_before = self.t0, 0.0
        if resume is not None:
            self._restore(resume)

    # ----------------------------------------------------------------- build
    def _model(self) -> models.Stacked | functional.Members:
        """A built-in stacked model as it is; any other nn.Module as K members through torch.func,
        run once on two training images before anything trains; then trainer.init_from's weights."""
        node, allow = self.cfg.model, self.cfg.allow_targets
        in_shape, num_classes = tuple(self.data.train_x.shape[1:]), self.data.num_classes
        with torch.random.fork_rng(devices=[]):  # building the partial may build nested modules
            factory = build(node, allow, _partial_=True).func  # the target, past the whitelist
        model: models.Stacked | functional.Members
        if isinstance(factory, type) and issubclass(factory, models.Stacked):
            stacked: models.Stacked = build(node, allow, in_shape=in_shape, num_classes=num_classes, members=self.K)
            stacked.reset_parameters(self.gens["init"])
            model = stacked.to(self.device)
        else:
            extra = functional.shape_args(factory, list(node), in_shape, num_classes)
            model = functional.build(lambda: build(node, allow, **extra), [s["seeds"]["init"] for s in self.specs],
                                     in_shape).to(self.device)
            functional.check(model, self.data.train_x[:2], num_classes, node._target_)
        init_from = self.spec["trainer"]["init_from"]
        if init_from:
            model.start_from(checkpoint.weights(Path(init_from)), f"trainer.init_from={init_from}")
        return model

    def _perturb(self) -> None:
        """init_perturb: one flipped bit per member, on the initial weights wherever they came from."""
        last = self.specs[-1]["init_perturb"]
        if last > self.n_params:
            raise ConfigError(f"init_perturb={self.specs[0]['init_perturb']} with n_seeds={self.K} reaches element "
                              f"{last}, but a member has {self.n_params} weights: give init_perturb + n_seeds - 1 "
                              f"<= {self.n_params}")
        for k, member in enumerate(self.specs):
            if member["init_perturb"]:
                flip_lowest_bit(self.model, k, member["init_perturb"])

    def _restore(self, last: LastState) -> None:
        try:
            self.model.load_state_dict(last.model)
            self.optimizer.load_state_dict(last.optimizer)
            if self.scheduler is not None:
                self.scheduler.load_state_dict(last.scheduler)
            for src, states in last.rng.items():
                for g, s in zip(self.gens[src], states, strict=True):
                    g.set_state(s)
            self.members = [Member.from_plain(m) for m in last.members]
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{last.path} does not match this run ({type(err).__name__}: {err}). "
                                  f"Delete it to start again, or use another output folder.") from None
        self.best_predictions = last.best_predictions
        self.epoch, self.elapsed_before, self.started = last.epoch, last.elapsed, last.started

    # ----------------------------------------------------------------- state
    @property
    def running(self) -> bool:
        return self.epoch < self.spec["trainer"]["epochs"] and any(m.status == RUNNING for m in self.members)

    def wall(self) -> float:
        """Seconds of training, over every launch that resumed it."""
        return self.elapsed_before + time.time() - self.t0

    def state(self, fingerprint: str) -> LastState:
        return LastState(
            fingerprint=fingerprint, config=self.spec, epoch=self.epoch, model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict() if self.scheduler is not None else None,
            rng={src: [g.get_state() for g in self.gens[src]] for src in DRAWING_SOURCES},
            data=self.data.checksums, members=[m.plain() for m in self.members],
            best_predictions=self.best_predictions, elapsed=self.wall(), started=self.started)

    def prune(self) -> None:
        """Stop the members still training, for good: a search's pruner said so."""
        for m in self.members:
            if m.status == RUNNING:
                m.status = PRUNED

    def fail(self, error: str) -> None:
        """Every member still training failed with `error`."""
        for m in self.members:
            if m.status == RUNNING:
                m.status, m.error = FAILED, error

    # ----------------------------------------------------------------- an epoch
    def run_epoch(self) -> Outcome:
        tick = time.time()
        train_loss, train_acc = self.train_epoch()
        val = self.evaluate(self.data.train_x, self.data.train_y, self.val_idx) if self.val_idx.shape[1] else None
        test_loss, test_acc, test_pred = self.evaluate(self.data.test_x, self.data.test_y)
        self.epoch += 1
        seconds = time.time() - tick
        lr = float(self.optimizer.param_groups[0]["lr"])
        rows, new_best = {}, []
        for k, m in enumerate(self.members):
            if m.status != RUNNING:
                continue
            row = Epoch(epoch=self.epoch, train_loss=float(train_loss[k]), train_acc=float(train_acc[k]),
                        val_loss=float(val[0][k]) if val else math.nan, val_acc=float(val[1][k]) if val else math.nan,
                        test_loss=float(test_loss[k]), test_acc=float(test_acc[k]), lr=lr, seconds=seconds)
            m.history.append(row)
            rows[k] = row
            if self.judge(m, row):
                self.best_predictions[k] = test_pred[k]
                new_best.append(k)
        return Outcome(self.epoch, seconds, rows, tuple(new_best))

    def judge(self, m: Member, row: Epoch) -> bool:
        """Move member m on after its epoch `row`; whether that epoch is its best so far."""
        t = self.spec["trainer"]
        if not math.isfinite(row.train_loss):
            m.status = FAILED
            m.error = f"training diverged: train loss is {row.train_loss} in epoch {row.epoch} (lower optimizer.lr?)"
            return False
        score = getattr(row, self.selection)
        better = score > m.best_score
        if better:
            m.best_score, m.best_epoch, m.since_best = score, row.epoch, 0
        else:
            m.since_best += 1
        if row.epoch >= t["epochs"] or (t["patience"] and m.since_best >= t["patience"]):
            m.status = COMPLETE
        return better

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
    def evaluate(self, X: torch.Tensor, Y: torch.Tensor,
                 idx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
