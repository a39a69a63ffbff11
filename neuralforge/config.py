"""Typed schema of the configs in conf/, the checks types cannot express, and the
resolved config with its fingerprint.

Each YAML option in conf/ extends the schema registered here under ``schema/<group>/<name>``,
so a misspelt key or a value of the wrong type fails at composition with Hydra's message.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, cast, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from neuralforge.record import anatomy, objective
from neuralforge.record.errors import ConfigError
from neuralforge.record.keys import ADDED_LATER, NOT_FINGERPRINTED, SEED_KEYS, SEED_SOURCES

# What a group's members vary (`vary`), besides one seed source or several joined by "+":
# every source at once, as a plain seed sweep does, or only the one-bit init perturbation.
VARY_ALL, VARY_PERTURB = "all", "init_perturb"
ACTIVATIONS = ("relu", "gelu", "silu", "tanh")
DEVICES = ("auto", "cpu", "cuda", "mps")
MATMUL_PRECISIONS = ("highest", "high", "medium")  # torch.set_float32_matmul_precision's

Need = Callable[[bool, str], None]  # need(ok, message): the message is the one-line error


class GroupSchema(Protocol):
    """The schema of a model, optimizer or scheduler option: its target and the check of its keys."""

    _target_: str

    @staticmethod
    def check(node: DictConfig, need: Need) -> None: ...


def key(default: Any = MISSING, help: str = "", *, factory: Any = None) -> Any:
    """A schema field with its meaning, which docs/configuration.md is generated from."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class AugmentConf:
    shift: int = key(0, "random translations of up to this many pixels, whole batches at once, seeded by seeds.augment")
    flip: bool = key(ADDED_LATER["data.augment.flip"], "horizontal flips, seeded by seeds.augment, for data whose "
                                                       "mirror image is the same class")


@dataclass
class DataConf:
    name: str = key(MISSING, "the dataset: mnist, fashion_mnist, kmnist, cifar10, cifar100, svhn (torchvision's "
                             "classes) or tensors (a file of one's own)")
    root: str = key("${oc.env:NEURALFORGE_DATA,./data}", "the folder torchvision's datasets live in (MNIST: "
                                                         "<root>/MNIST/raw/); NEURALFORGE_DATA, else ./data")
    path: str | None = key(None, "data=tensors: the .npz or .pt file holding train_x, train_y, test_x, test_y")
    download: bool = key(True, "download missing files into root")
    val_size: int = key(5000, "training images held out for validation by seeds.split; 0 selects the epoch on the "
                              "test set, as the notebook did (the record says so; searches refuse it)")
    mean: Any = key(None, "pixel mean for normalisation: one number, one per channel, or null (computed from the "
                          "training images)")
    std: Any = key(None, "pixel standard deviation for normalisation: one number, one per channel, or null")
    num_classes: int | None = key(ADDED_LATER["data.num_classes"], "data=tensors: the number of classes; null "
                                                                      "counts the training labels")
    augment: AugmentConf = key(help="", factory=AugmentConf)


@dataclass
class MLPConf:
    _target_: str = "neuralforge.models.MLP"
    hidden: list[int] = key(help="widths of the hidden layers; [] is a linear model", factory=lambda: [128, 64])
    activation: str = key("relu", "relu, gelu, silu or tanh")
    dropout: float = key(0.0, "dropout after each hidden layer, in [0, 1), masks seeded by seeds.dropout")

    @staticmethod
    def check(m: DictConfig, need: Need) -> None:
        _check_layers(list(m.hidden), m, need)


@dataclass
class CNNConf:
    _target_: str = "neuralforge.models.CNN"
    channels: list[int] = key(help="output channels of each conv block (at most 4)", factory=lambda: [32, 64])
    kernel: int = key(3, "convolution kernel size, odd")
    pool: str = key("max", "how a block halves the image: max or avg pooling, or a stride of 2")
    hidden: int = key(128, "width of the hidden layer after the conv blocks; 0 for none")
    activation: str = key("relu", "relu, gelu, silu or tanh")
    dropout: float = key(0.0, "dropout in the head, in [0, 1), masks seeded by seeds.dropout")

    @staticmethod
    def check(m: DictConfig, need: Need) -> None:
        need(m.kernel > 0 and m.kernel % 2 == 1, f"model.kernel must be a positive odd number, got {m.kernel}")
        need(m.pool in ("max", "avg", "stride"), f"model.pool must be max, avg or stride, got {m.pool!r}")
        need(len(m.channels) <= 4, f"model.channels: at most 4 pooled blocks fit 28x28 images, got {len(m.channels)}")
        _check_layers(list(m.channels) + ([m.hidden] if m.hidden else []), m, need)


def _check_layers(widths: list[int], m: DictConfig, need: Need) -> None:
    need(all(w > 0 for w in widths), f"model widths must be positive, got {widths}: e.g. model.hidden=[128,64]")
    need(m.activation in ACTIVATIONS,
         f"model.activation={m.activation!r} is unknown: use one of {', '.join(ACTIVATIONS)}")
    need(0 <= m.dropout < 1, f"model.dropout must be in [0, 1), got {m.dropout}")


def _check_step(o: DictConfig, need: Need) -> None:
    need(o.lr > 0, f"optimizer.lr must be positive, got {o.lr}")
    need(o.weight_decay >= 0, f"optimizer.weight_decay must be >= 0, got {o.weight_decay}")


@dataclass
class AdamConf:
    _target_: str = "torch.optim.Adam"
    _partial_: bool = True
    lr: float = key(1e-3, "learning rate")
    betas: list[float] = key(help="Adam's two decay rates, each in [0, 1)", factory=lambda: [0.9, 0.999])
    weight_decay: float = key(0.0, "L2 penalty (AdamW: decoupled weight decay)")
    fused: bool = key(True, "torch's fused kernel: one element-wise pass over all members' tensors")

    @staticmethod
    def check(o: DictConfig, need: Need) -> None:
        _check_step(o, need)
        need(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas),
             f"optimizer.betas must be two numbers in [0, 1), got {list(o.betas)}")


@dataclass
class AdamWConf(AdamConf):
    _target_: str = "torch.optim.AdamW"
    weight_decay: float = key(0.01, "decoupled weight decay")


@dataclass
class SGDConf:
    _target_: str = "torch.optim.SGD"
    _partial_: bool = True
    lr: float = key(0.05, "learning rate")
    momentum: float = key(0.9, "momentum")
    nesterov: bool = key(True, "Nesterov momentum")
    weight_decay: float = key(0.0, "L2 penalty")
    fused: bool = key(True, "torch's fused kernel")

    @staticmethod
    def check(o: DictConfig, need: Need) -> None:
        _check_step(o, need)


@dataclass
class ConstantConf:
    _target_: str = "neuralforge.schedules.constant"
    _partial_: bool = True

    @staticmethod
    def check(node: DictConfig, need: Need) -> None:
        pass


@dataclass
class CosineConf:
    _target_: str = "neuralforge.schedules.cosine"
    _partial_: bool = True
    warmup: float = key(0.0, "linear warm-up, as a fraction of all steps, in [0, 1)")
    final_lr_ratio: float = key(0.0, "the last step's learning rate as a fraction of optimizer.lr, in [0, 1]")

    @staticmethod
    def check(sc: DictConfig, need: Need) -> None:
        need(0 <= sc.warmup < 1, f"scheduler.warmup is a fraction of all steps, in [0, 1); got {sc.warmup}")
        need(0 <= sc.final_lr_ratio <= 1, f"scheduler.final_lr_ratio must be in [0, 1], got {sc.final_lr_ratio}")


@dataclass
class OneCycleConf:
    _target_: str = "neuralforge.schedules.one_cycle"
    _partial_: bool = True
    max_lr: float = key("${optimizer.lr}", "the peak learning rate")
    pct_start: float = key(0.25, "fraction of the steps spent rising to max_lr")
    div_factor: float = key(25.0, "the first learning rate is max_lr / div_factor")
    final_div_factor: float = key(1e4, "the last learning rate is the first / final_div_factor")

    @staticmethod
    def check(sc: DictConfig, need: Need) -> None:
        for name in ("div_factor", "final_div_factor"):
            need(sc[name] > 0, f"scheduler.{name} must be positive, got {sc[name]}")


@dataclass
class TrainerConf:
    epochs: int = key(10, "epochs to train")
    batch_size: int = key(64, "training batch size, per member")
    eval_batch_size: int = key(1000, "batch size of evaluation (speed only)")
    patience: int | None = key(None, "stop a member after this many epochs without a better validation accuracy; "
                                        "null: never")
    label_smoothing: float = key(0.0, "label smoothing of the training loss, in [0, 1)")
    keep_last: bool = key(True, "keep last.pt once the run completes (false saves disk, and a complete run can "
                                "then not be extended)")
    init_from: str | None = key(None, "start from the weights in this best.pt (the notebook's rounds)")


@dataclass
class SeedsConf:
    init: int = key("${seed}", "initial weights")
    order: int = key("${seed}", "the order of training examples, each epoch")
    split: int = key("${seed}", "which training images are held out for validation")
    augment: int = key("${seed}", "the random shifts")
    dropout: int = key("${seed}", "the dropout masks")


@dataclass
class MLflowConf:
    enabled: bool = key(False, "log to MLflow (logger=mlflow sets it); needs pip install -e '.[mlflow]'")
    tracking_uri: str | None = key(None, "MLflow's tracking URI: sqlite:///<file>, http://host:port, ...; null: "
                                         "sqlite:///<folder>/mlflow.db, <folder> the one holding the sweep folder "
                                         "(or a single run's folder)")
    experiment: str = key("neuralforge", "the MLflow experiment the runs go into")


@dataclass
class TensorBoardConf:
    enabled: bool = key(False, "write TensorBoard event files (logger=tensorboard sets it); needs "
                               "pip install -e '.[tensorboard]'")
    dir: str | None = key(None, "the log folder (tensorboard --logdir); null: <folder>/tensorboard, <folder> the "
                                "one holding the sweep folder (or a single run's folder)")


@dataclass
class WandbConf:
    enabled: bool = key(False, "log to Weights & Biases (logger=wandb sets it); needs pip install -e '.[wandb]'")
    project: str = key("neuralforge", "the W&B project")
    mode: str = key("offline", "offline (files for wandb sync, no network) or online")
    dir: str | None = key(None, "where wandb writes its runs (wandb/offline-run-*); null: <folder>, the one holding "
                                "the sweep folder (or a single run's folder)")


@dataclass
class LoggerConf:
    """Experiment trackers: none by default; logger=mlflow, or several: logger=[mlflow,tensorboard]."""
    mlflow: MLflowConf = key(help="", factory=MLflowConf)
    tensorboard: TensorBoardConf = key(help="", factory=TensorBoardConf)
    wandb: WandbConf = key(help="", factory=WandbConf)


@dataclass
class Config:
    data: Any = MISSING
    model: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    trainer: TrainerConf = field(default_factory=TrainerConf)
    logger: LoggerConf = field(default_factory=LoggerConf)
    seed: int = key(0, "the master seed: every seeds.* source follows it unless set")
    seeds: SeedsConf = field(default_factory=SeedsConf)
    n_seeds: int = key(1, "train seeds seed..seed+n_seeds-1 together in one process, each with its own folder")
    vary: str = key(ADDED_LATER["vary"], "what a group's members differ in: all (every seed source), one source "
                                         "or several joined by + (init+order), or init_perturb")
    init_perturb: int = key(ADDED_LATER["init_perturb"], "k > 0: flip the lowest mantissa bit of one initial weight, "
                                                         "chosen by k (0: off)")
    allow_targets: list[str] = key(help="instantiate() patterns a config may name besides the harness's own, e.g. "
                                        "[mypkg.*]", factory=list)
    seeds_per_trial: int | None = key(None, "seeds each Optuna trial averages (set by the search presets, with "
                                               "n_seeds: ${seeds_per_trial})")
    trial: int | None = key(None, "the Optuna trial this run is (set by the sweeper)")
    objective: Any = key(ADDED_LATER["objective"], "what a search optimises: val_acc, val_acc_std, wall_seconds or "
                                                   "n_params; a list makes it multi-objective")
    device: str = key("auto", "auto, cpu, cuda, cuda:N or mps")
    threads: int | None = key(None, "torch threads; null: all cores, shared among jobs that run at once")
    matmul_precision: str = key(ADDED_LATER["matmul_precision"], "torch.set_float32_matmul_precision: highest "
                                                                 "(float32), high, or medium (lets CPUs with AMX "
                                                                 "round products' factors to bfloat16)")


SCHEMA_GROUP = "schema"  # YAML options extend their schema with `- /schema/<group>/<name>@_here_`
SCHEMAS = [  # (config group, name in the ConfigStore, schema)
    ("data", "dataset", DataConf),
    ("model", "mlp", MLPConf),
    ("model", "cnn", CNNConf),
    ("optimizer", "adam", AdamConf),
    ("optimizer", "adamw", AdamWConf),
    ("optimizer", "sgd", SGDConf),
    ("scheduler", "constant", ConstantConf),
    ("scheduler", "cosine", CosineConf),
    ("scheduler", "one_cycle", OneCycleConf),
    ("trainer", "trainer", TrainerConf),
    ("logger", "logger", LoggerConf),
]


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    for group, name, node in SCHEMAS:
        # a group of its own, not the option's group: a schema is never offered as an option
        cs.store(group=f"{SCHEMA_GROUP}/{group}", name=name, node=node)
    # the anatomy preset's sweep: the conditions the recipe can vary
    OmegaConf.register_resolver("anatomy_conditions", anatomy.conditions, replace=True)


register()


def schema_of(node: DictConfig | dict[str, Any]) -> type[GroupSchema] | None:
    """The schema of a model, optimizer or scheduler node, by its _target_ (None: a model of one's own)."""
    found = next((c for _, _, c in SCHEMAS if getattr(c, "_target_", None) == node.get("_target_")), None)
    return cast("type[GroupSchema] | None", found)  # the schemas that have a _target_ are GroupSchemas


def plain(node: Any, resolve: bool = False, throw_on_missing: bool = False) -> dict[str, Any]:
    """A config mapping as plain dicts and lists, keyed by str as every config here is."""
    out = OmegaConf.to_container(node, resolve=resolve, throw_on_missing=throw_on_missing)
    if not isinstance(out, dict):
        raise TypeError(f"a config mapping was expected, not {type(out).__name__}")
    return cast(dict[str, Any], out)


def _unknown_keys(cfg: DictConfig) -> list[str]:
    """Keys that `+key=value` added past the schema: Hydra lets `+` append to any node."""
    sections: list[tuple[str, Any, type]] = [("", cfg, Config), ("data.", cfg.data, DataConf),
                                             ("data.augment.", cfg.data.augment, AugmentConf),
                                             ("trainer.", cfg.trainer, TrainerConf), ("seeds.", cfg.seeds, SeedsConf),
                                             ("logger.", cfg.logger, LoggerConf),
                                             *((f"logger.{name}.", cfg.logger[name], conf)
                                               for name, conf in get_type_hints(LoggerConf).items())]
    for group in ("model", "optimizer", "scheduler"):
        schema = schema_of(cfg[group])
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

    t = cfg.trainer
    need(isinstance(cfg.model.get("_target_"), str), "model._target_ is missing: name the model's class or factory, "
                                                     "e.g. model._target_=mypkg.Net")
    # each schema checks its own keys; a model of one's own is checked by running it (engine.Run.setup)
    for group in ("model", "optimizer", "scheduler"):
        schema = schema_of(cfg[group])
        if schema is not None:
            schema.check(cfg[group], need)
    need(t.batch_size > 0, f"trainer.batch_size must be positive, got {t.batch_size}")
    need(t.eval_batch_size > 0, f"trainer.eval_batch_size must be positive, got {t.eval_batch_size}")
    need(t.epochs > 0, f"trainer.epochs must be positive, got {t.epochs}")
    need(t.patience is None or t.patience > 0, f"trainer.patience must be positive or null, got {t.patience}")
    need(0 <= t.label_smoothing < 1, f"trainer.label_smoothing must be in [0, 1), got {t.label_smoothing}")
    d = cfg.data
    for key in ("mean", "std"):
        value = d[key]
        numbers = list(value) if OmegaConf.is_list(value) else [value]
        is_number = [isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers]
        need(value is None or (bool(numbers) and all(is_number)),
             f"data.{key} must be a number, a list of one per channel, or null (computed from the training images); "
             f"got {value}")
    need(d.std is None or all(v > 0 for v in (list(d.std) if OmegaConf.is_list(d.std) else [d.std])),
         f"data.std must be positive, got {d.std}")
    need(d.name != "tensors" or d.path is not None, "data=tensors needs data.path=<file.npz|file.pt>")
    need(d.num_classes is None or d.num_classes > 1, f"data.num_classes must be at least 2, got {d.num_classes}")
    need(all(isinstance(p, str) and p for p in cfg.allow_targets),
         f"allow_targets holds patterns such as mypkg.*, got {list(cfg.allow_targets)}")
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
    names = objective.names(cfg.objective)
    need("val_acc_std" not in names or cfg.n_seeds >= 2,
         "objective val_acc_std is the spread over a group's seeds: set n_seeds >= 2 (in a search, seeds_per_trial)")
    need(cfg.init_perturb >= 0, f"init_perturb must be >= 0 (0: off), got {cfg.init_perturb}")
    sources = varied_sources(cfg.vary)
    need(cfg.vary in (VARY_ALL, VARY_PERTURB) or (bool(sources) and set(sources) <= set(SEED_SOURCES)),
         f"vary={cfg.vary!r} is unknown: use {VARY_ALL}, {VARY_PERTURB}, or seed sources joined by + "
         f"(of {', '.join(SEED_SOURCES)}), e.g. vary=init+order")
    if cfg.n_seeds > 1 and cfg.vary != VARY_ALL:  # members differing only where nothing is drawn: copies
        cannot = anatomy.left_out(cfg.data.augment.shift, cfg.model.dropout)
        for source in sources:
            need(source not in cannot, f"vary={cfg.vary} but {cannot.get(source)}: set it > 0 or vary another source")
    for source in SEED_SOURCES:
        need(cfg.seeds[source] >= 0, f"seeds.{source} must be >= 0, got {cfg.seeds[source]}")


def resolve(cfg: DictConfig, *, threads: int, device: str) -> dict[str, Any]:
    """The fully resolved config as plain data, with the runtime choices filled in."""
    spec = plain(cfg, resolve=True, throw_on_missing=True)
    spec.pop("hydra", None)
    for key in ("root", "path"):
        if spec["data"].get(key) is not None:
            spec["data"][key] = os.path.abspath(os.path.expanduser(spec["data"][key]))
    spec["threads"] = threads
    spec["device"] = device
    return spec


def fingerprint(spec: dict[str, Any]) -> str:
    """A hash of everything that decides a run's numbers (the thread count included)."""
    kept = copy.deepcopy(spec)
    for dotted in NOT_FINGERPRINTED:
        _pop(kept, dotted)
    for dotted, old in ADDED_LATER.items():
        _pop(kept, dotted, only_if=old)
    blob = json.dumps(kept, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


_ANY = object()


def _pop(tree: dict[str, Any], dotted: str, only_if: Any = _ANY) -> None:
    """Delete the key at a dotted path, if there (and, given only_if, if it holds that value)."""
    *parents, key = dotted.split(".")
    for name in parents:
        node = tree.get(name)
        if not isinstance(node, dict):
            return
        tree = node
    if key in tree and (only_if is _ANY or tree[key] == only_if):
        del tree[key]


def flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as {"optimizer.lr": 0.001, ...}."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def differences(theirs: dict[str, Any], mine: dict[str, Any], shown: int = 4) -> str:
    """What differs between two resolved configs, as 'key: theirs there, mine here; ...'."""
    # a group's members hold shifted seeds: not shown, said only when nothing else differs
    skip = {*NOT_FINGERPRINTED, *SEED_KEYS}
    a, b = {**ADDED_LATER, **flat(theirs or {})}, {**ADDED_LATER, **flat(mine)}
    keys = sorted(k for k in {*a, *b} if k not in skip and a.get(k) != b.get(k))
    more = f"; {len(keys) - shown} more" if len(keys) > shown else ""
    return "; ".join(f"{k}: {a.get(k)!r} there, {b.get(k)!r} here" for k in keys[:shown]) + more or "its seeds differ"


def varied_sources(vary: str) -> list[str]:
    """The seed sources `vary` names: all five for "all", none for "init_perturb"."""
    if vary == VARY_ALL:
        return list(SEED_SOURCES)
    return [] if vary == VARY_PERTURB else vary.split("+")


def member_name(member: dict[str, Any]) -> str:
    """A group member's folder name, after what tells the members apart: seed=5, init=5,
    init+order=5 (the first source's seed), init_perturb=5."""
    vary = member.get("vary", VARY_ALL)
    if vary == VARY_ALL:
        return f"seed={member['seed']}"
    if vary == VARY_PERTURB:
        return f"{vary}={member['init_perturb']}"
    return f"{vary}={member['seeds'][varied_sources(vary)[0]]}"


def member_spec(spec: dict[str, Any], k: int) -> dict[str, Any]:
    """Member k of a group: with vary=all (the default) the run with every seed shifted by k;
    otherwise only the named seed sources shifted by k, or only init_perturb raised by k, every
    other source held at the group's own value."""
    member = copy.deepcopy(spec)
    vary = spec.get("vary", VARY_ALL)
    if vary == VARY_ALL:
        member["seed"] = spec["seed"] + k
    if vary == VARY_PERTURB:
        member["init_perturb"] = spec["init_perturb"] + k
    for source in varied_sources(vary):
        member["seeds"][source] = spec["seeds"][source] + k
    return member
