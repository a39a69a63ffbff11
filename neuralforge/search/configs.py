"""The configs of `hydra/sweeper=nf_optuna` and its pruners (`hydra/sweeper/pruner=<name>`),
registered in Hydra's ConfigStore as this module is first imported (by the plugin,
hydra_plugins/neuralforge_optuna). Each pruner's keys and defaults are read from the pruner's
own signature, never restated."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, make_dataclass
from typing import Any

import optuna
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

# hydra-optuna-sweeper's public config module: registers the sampler configs (hydra/sweeper/sampler=tpe, ...)
import hydra_plugins.hydra_optuna_sweeper.config  # noqa: F401
from neuralforge.record.liveness import STALE_AFTER_S
from neuralforge.search.pruners import SeedNoisePruner


def pruner_config(cls: type, target: str, **defaults: Any) -> type:
    """A structured config of a pruner's arguments, each with the pruner's own default; `defaults`
    only for arguments that have none (PercentilePruner's percentile)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = [p for p in inspect.signature(cls).parameters.values() if p.kind in kinds]
    missing = [p.name for p in params if p.default is inspect.Parameter.empty and p.name not in defaults]
    if missing:
        raise TypeError(f"{target} has no default for {missing}: give one")
    # Any: a value of the wrong type reaches the pruner, whose own check says what is wrong
    keys = [(p.name, Any, field(default=defaults.get(p.name, p.default))) for p in params]
    return make_dataclass(f"{cls.__name__}Conf", [("_target_", str, field(default=target)), *keys])


PRUNERS = {  # hydra/sweeper/pruner=<name>
    "none": pruner_config(optuna.pruners.NopPruner, "optuna.pruners.NopPruner"),
    "median": pruner_config(optuna.pruners.MedianPruner, "optuna.pruners.MedianPruner"),
    "percentile": pruner_config(optuna.pruners.PercentilePruner, "optuna.pruners.PercentilePruner", percentile=25.0),
    "successive_halving": pruner_config(optuna.pruners.SuccessiveHalvingPruner,
                                        "optuna.pruners.SuccessiveHalvingPruner"),
    "hyperband": pruner_config(optuna.pruners.HyperbandPruner, "optuna.pruners.HyperbandPruner"),
    "wilcoxon": pruner_config(optuna.pruners.WilcoxonPruner, "optuna.pruners.WilcoxonPruner"),
    "seed_noise": pruner_config(SeedNoisePruner, "neuralforge.search.pruners.SeedNoisePruner"),
}


@dataclass
class NFOptunaSweeperConf:
    _target_: str = "neuralforge.search.sweeper.NFOptunaSweeper"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])
    sampler: Any = MISSING
    pruner: Any = MISSING
    direction: Any = "maximize"  # or a list, one per objective
    storage: Any = "sqlite:///${hydra.sweep.dir}/optuna.db"
    study_name: str | None = "neuralforge"
    n_trials: int | None = None  # the study's total: at least 1; null: 20, or the size of the grid
    n_jobs: int = 1  # trials in flight at once (with a parallel launcher)
    max_failure_rate: float = 1.0  # stop once more than this fraction of the trials launched failed
    params: dict[str, str] | None = None
    custom_search_space: str | None = None  # a function (cfg, optuna.trial.Trial) that suggests more
    stale_after_s: float = STALE_AFTER_S


_store = ConfigStore.instance()
_store.store(group="hydra/sweeper", name="nf_optuna", node=NFOptunaSweeperConf, provider="neuralforge")
for _name, _node in PRUNERS.items():
    _store.store(group="hydra/sweeper/pruner", name=_name, node=_node, provider="neuralforge")
