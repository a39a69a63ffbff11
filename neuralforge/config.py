"""Typed schema of the configs in conf/, the checks types cannot express, and the
resolved config with its fingerprint.

Each YAML option in conf/ extends the schema registered here under ``<group>/schema_<name>``,
so a misspelt key or a value of the wrong type fails at composition with Hydra's message.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from neuralforge.errors import ConfigError

SEED_SOURCES = ("init", "order", "split", "augment", "dropout")
ACTIVATIONS = ("relu", "gelu", "silu", "tanh")
DEVICES = ("auto", "cpu", "cuda", "mps")
MATMUL_PRECISIONS = ("highest", "high", "medium")  # torch.set_float32_matmul_precision's

# Keys that say where things are or what to keep, not what is computed: a run moved to
# another data folder, or told to delete last.pt, is still the same run.
NOT_FINGERPRINTED = ("data.root", "data.download", "trainer.keep_last")
# Keys added after runs were already being written, at the value that computes what those runs
# computed: hashed only when set otherwise, so the folders of earlier versions still resume.
ADDED_LATER = {"matmul_precision": "highest", "objective": "val_acc"}


@dataclass
class AugmentConf:
    shift: int = 0


@dataclass
class DataConf:
    name: str = MISSING
    root: str = "${oc.env:NEURALFORGE_DATA,./data}"
    download: bool = True
    val_size: int = 5000
    mean: float = MISSING
    std: float = MISSING
    augment: AugmentConf = field(default_factory=AugmentConf)


@dataclass
class MLPConf:
    _target_: str = "neuralforge.models.MLP"
    hidden: list[int] = field(default_factory=lambda: [128, 64])
    activation: str = "relu"
    dropout: float = 0.0


@dataclass
class CNNConf:
    _target_: str = "neuralforge.models.CNN"
    channels: list[int] = field(default_factory=lambda: [32, 64])
    kernel: int = 3
    pool: str = "max"
    hidden: int = 128
    activation: str = "relu"
    dropout: float = 0.0


@dataclass
class AdamConf:
    _target_: str = "torch.optim.Adam"
    _partial_: bool = True
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    fused: bool = True


@dataclass
class AdamWConf(AdamConf):
    _target_: str = "torch.optim.AdamW"
    weight_decay: float = 0.01


@dataclass
class SGDConf:
    _target_: str = "torch.optim.SGD"
    _partial_: bool = True
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    fused: bool = True


@dataclass
class ConstantConf:
    _target_: str = "neuralforge.schedules.constant"
    _partial_: bool = True


@dataclass
class CosineConf:
    _target_: str = "neuralforge.schedules.cosine"
    _partial_: bool = True
    warmup: float = 0.0
    final_lr_ratio: float = 0.0


@dataclass
class OneCycleConf:
    _target_: str = "neuralforge.schedules.one_cycle"
    _partial_: bool = True
    max_lr: float = "${optimizer.lr}"  # type: ignore[assignment]
    pct_start: float = 0.25
    div_factor: float = 25.0
    final_div_factor: float = 1e4


@dataclass
class TrainerConf:
    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int = 1000
    patience: Optional[int] = None
    label_smoothing: float = 0.0
    keep_last: bool = True
    init_from: Optional[str] = None


@dataclass
class SeedsConf:
    init: int = "${seed}"  # type: ignore[assignment]
    order: int = "${seed}"  # type: ignore[assignment]
    split: int = "${seed}"  # type: ignore[assignment]
    augment: int = "${seed}"  # type: ignore[assignment]
    dropout: int = "${seed}"  # type: ignore[assignment]


@dataclass
class Config:
    data: Any = MISSING
    model: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    trainer: TrainerConf = field(default_factory=TrainerConf)
    seed: int = 0
    seeds: SeedsConf = field(default_factory=SeedsConf)
    n_seeds: int = 1
    seeds_per_trial: Optional[int] = None
    trial: Optional[int] = None  # set by the Optuna sweeper: the trial this run is
    # what a search optimises (neuralforge.search.OBJECTIVES); a list makes it multi-objective
    objective: Any = "val_acc"
    device: str = "auto"
    threads: Optional[int] = None
    matmul_precision: str = "highest"


SCHEMAS = [  # (config group, name in the ConfigStore, schema)
    ("data", "schema", DataConf),
    ("model", "schema_mlp", MLPConf),
    ("model", "schema_cnn", CNNConf),
    ("optimizer", "schema_adam", AdamConf),
    ("optimizer", "schema_adamw", AdamWConf),
    ("optimizer", "schema_sgd", SGDConf),
    ("scheduler", "schema_constant", ConstantConf),
    ("scheduler", "schema_cosine", CosineConf),
    ("scheduler", "schema_one_cycle", OneCycleConf),
    ("trainer", "schema", TrainerConf),
]


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    for group, name, node in SCHEMAS:
        cs.store(group=group, name=name, node=node)


register()


def _unknown_keys(cfg: DictConfig) -> list[str]:
    """Keys that `+key=value` added past the schema: Hydra lets `+` append to any node."""
    by_target = {c._target_: c for _, _, c in SCHEMAS if hasattr(c, "_target_")}
    sections: list[tuple[str, Any, type]] = [("", cfg, Config), ("data.", cfg.data, DataConf),
                                             ("data.augment.", cfg.data.augment, AugmentConf),
                                             ("trainer.", cfg.trainer, TrainerConf), ("seeds.", cfg.seeds, SeedsConf)]
    for group in ("model", "optimizer", "scheduler"):
        schema = by_target.get(cfg[group].get("_target_"))
        if schema is not None:
            sections.append((f"{group}.", cfg[group], schema))
    return [f"{prefix}{key}" for prefix, node, schema in sections
            for key in node if key not in {f.name for f in fields(schema)}]


def validate(cfg: DictConfig) -> None:
    """The checks Hydra's types cannot express. Each failure names the key to change."""

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    unknown = [k for k in _unknown_keys(cfg) if k != "hydra"]
    need(not unknown, f"unknown key {', '.join(unknown)}: check its spelling (python run.py --cfg job lists the keys)")

    m, t, o = cfg.model, cfg.trainer, cfg.optimizer
    widths = list(m.hidden) if OmegaConf.is_list(m.hidden) else [m.hidden]
    if "channels" in m:
        widths = list(m.channels) + ([m.hidden] if m.hidden else [])
        need(m.kernel > 0 and m.kernel % 2 == 1, f"model.kernel must be a positive odd number, got {m.kernel}")
        need(m.pool in ("max", "avg", "stride"), f"model.pool must be max, avg or stride, got {m.pool!r}")
        need(len(m.channels) <= 4, f"model.channels: at most 4 pooled blocks fit 28x28 images, got {len(m.channels)}")
    need(all(w > 0 for w in widths), f"model widths must be positive, got {widths}: e.g. model.hidden=[128,64]")
    need(m.activation in ACTIVATIONS, f"model.activation={m.activation!r} is unknown: use one of {', '.join(ACTIVATIONS)}")
    need(0 <= m.dropout < 1, f"model.dropout must be in [0, 1), got {m.dropout}")
    need(t.batch_size > 0, f"trainer.batch_size must be positive, got {t.batch_size}")
    need(t.eval_batch_size > 0, f"trainer.eval_batch_size must be positive, got {t.eval_batch_size}")
    need(t.epochs > 0, f"trainer.epochs must be positive, got {t.epochs}")
    need(t.patience is None or t.patience > 0, f"trainer.patience must be positive or null, got {t.patience}")
    need(0 <= t.label_smoothing < 1, f"trainer.label_smoothing must be in [0, 1), got {t.label_smoothing}")
    need(o.lr > 0, f"optimizer.lr must be positive, got {o.lr}")
    need(o.weight_decay >= 0, f"optimizer.weight_decay must be >= 0, got {o.weight_decay}")
    if "betas" in o:
        need(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas),
             f"optimizer.betas must be two numbers in [0, 1), got {list(o.betas)}")
    for key in ("div_factor", "final_div_factor"):
        if key in cfg.scheduler:
            need(cfg.scheduler[key] > 0, f"scheduler.{key} must be positive, got {cfg.scheduler[key]}")
    need(cfg.data.std > 0, f"data.std must be positive, got {cfg.data.std}")
    if "warmup" in cfg.scheduler:
        need(0 <= cfg.scheduler.warmup < 1,
             f"scheduler.warmup is a fraction of all steps, in [0, 1); got {cfg.scheduler.warmup}")
        need(0 <= cfg.scheduler.final_lr_ratio <= 1,
             f"scheduler.final_lr_ratio must be in [0, 1], got {cfg.scheduler.final_lr_ratio}")
    need(cfg.data.val_size >= 0, f"data.val_size must be >= 0, got {cfg.data.val_size}")
    need(cfg.data.augment.shift >= 0, f"data.augment.shift must be >= 0, got {cfg.data.augment.shift}")
    need(cfg.trial is None or cfg.data.val_size > 0,
         "a search needs a validation set to choose on: data.val_size=0 would select on the test set")
    need(t.init_from is None or Path(t.init_from).is_file(),
         f"trainer.init_from={t.init_from}: no such file (give the path of a run's best.pt)")
    need(cfg.n_seeds > 0, f"n_seeds must be positive, got {cfg.n_seeds}")
    # a trial's seeds train as one group: without this, a search of one's own (not a preset)
    # would quietly train one seed per trial
    need(cfg.seeds_per_trial is None or cfg.n_seeds == cfg.seeds_per_trial,
         f"seeds_per_trial={cfg.seeds_per_trial} but n_seeds={cfg.n_seeds}: a trial trains its seeds as one group, "
         f"add n_seeds='${{seeds_per_trial}}' (as the hparams_search presets do)")
    need(cfg.threads is None or cfg.threads > 0, f"threads must be positive or null, got {cfg.threads}")
    need(cfg.device in DEVICES or re.fullmatch(r"cuda:\d+", cfg.device) is not None,
         f"device={cfg.device!r} is unknown: use one of {', '.join(DEVICES)} or cuda:N")
    need(cfg.matmul_precision in MATMUL_PRECISIONS,
         f"matmul_precision={cfg.matmul_precision!r} is unknown: use one of {', '.join(MATMUL_PRECISIONS)}")
    need(cfg.seed >= 0, f"seed must be >= 0, got {cfg.seed}")
    for source in SEED_SOURCES:
        need(cfg.seeds[source] >= 0, f"seeds.{source} must be >= 0, got {cfg.seeds[source]}")


def resolve(cfg: DictConfig, *, threads: int, device: str) -> dict[str, Any]:
    """The fully resolved config as plain data, with the runtime choices filled in."""
    spec = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert isinstance(spec, dict)
    spec.pop("hydra", None)
    spec["data"]["root"] = os.path.abspath(os.path.expanduser(spec["data"]["root"]))
    spec["threads"] = threads
    spec["device"] = device
    return spec


def fingerprint(spec: dict[str, Any]) -> str:
    """A hash of everything that decides a run's numbers (the thread count included)."""
    kept = copy.deepcopy(spec)
    for dotted in NOT_FINGERPRINTED:
        section, key = dotted.split(".")
        kept.get(section, {}).pop(key, None)
    for key, old in ADDED_LATER.items():
        if kept.get(key) == old:
            del kept[key]
    blob = json.dumps(kept, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as {"optimizer.lr": 0.001, ...}."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def differences(theirs: dict[str, Any], mine: dict[str, Any], shown: int = 4) -> str:
    """What differs between two resolved configs, as 'key: theirs there, mine here; ...'."""
    # a group's members hold shifted seeds: not shown, said only when nothing else differs
    skip = {*NOT_FINGERPRINTED, "seed", *(f"seeds.{s}" for s in SEED_SOURCES)}
    a, b = {**ADDED_LATER, **flat(theirs or {})}, {**ADDED_LATER, **flat(mine)}
    keys = sorted(k for k in {*a, *b} if k not in skip and a.get(k) != b.get(k))
    more = f"; {len(keys) - shown} more" if len(keys) > shown else ""
    return "; ".join(f"{k}: {a.get(k)!r} there, {b.get(k)!r} here" for k in keys[:shown]) + more or "its seeds differ"


def member_spec(spec: dict[str, Any], k: int) -> dict[str, Any]:
    """Member k of a group is the run with every seed shifted by k."""
    member = copy.deepcopy(spec)
    member["seed"] = spec["seed"] + k
    member["seeds"] = {source: spec["seeds"][source] + k for source in SEED_SOURCES}
    return member
