"""What a search's trial is made of, shared by the sweeper (hydra/sweeper=nf_optuna) and the
job that trains the trial: the study's storage, the objectives computed from a trial's
records, and the job's reports to its trial after each epoch, which let the pruner stop it.

The job finds its trial in the storage by the study's name and the trial's number (unique in
the study, whichever search asked for it and on whichever launcher it runs), through Optuna's
public storage API.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from neuralforge.errors import ConfigError

log = logging.getLogger(__name__)

# what hydra.sweeper.sampler and hydra.sweeper.pruner may instantiate
SAMPLER_WHITELIST = ("optuna.samplers.*",)
PRUNER_WHITELIST = ("optuna.pruners.*", "neuralforge.pruners.*")
# the trial's user attribute holding the members' validation accuracies at each epoch, by epoch
# (what the noise-aware pruner measures a group's noise with)
PER_SEED_BY_EPOCH = "val_acc_per_seed_by_epoch"


def _val_acc_std(recs: list[dict[str, Any]]) -> float:
    if len(recs) < 2:
        raise ConfigError("objective val_acc_std is the spread over a trial's seeds: set seeds_per_trial >= 2")
    return float(np.std([r["metrics"]["val_acc"] for r in recs], ddof=1))


# objective name -> its value from a trial's complete member records
OBJECTIVES: dict[str, Callable[[list[dict[str, Any]]], float]] = {
    "val_acc": lambda recs: float(np.mean([r["metrics"]["val_acc"] for r in recs])),  # the members' mean
    "val_acc_std": _val_acc_std,  # sample standard deviation over the trial's seeds
    "wall_seconds": lambda recs: float(max(r["timing"]["wall_seconds"] for r in recs)),  # the group's
    "n_params": lambda recs: float(recs[0]["n_params"]),
}


def objectives(cfg: DictConfig) -> list[str]:
    """The `objective` key as a list of names, each checked."""
    names = list(cfg.objective) if isinstance(cfg.objective, (ListConfig, list, tuple)) else [cfg.objective]
    unknown = [n for n in names if n not in OBJECTIVES]
    if not names or unknown:
        raise ConfigError(f"objective={unknown[0] if unknown else '[]'} is unknown: use one or a list of "
                          f"{', '.join(OBJECTIVES)} (e.g. objective=[val_acc,wall_seconds])")
    if "val_acc_std" in names and (cfg.seeds_per_trial or cfg.n_seeds) < 2:
        raise ConfigError("objective val_acc_std is the spread over a trial's seeds: set seeds_per_trial >= 2")
    return names


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL; `journal:<path>` is a journal file (safe for many
    processes on one machine or a shared file system)."""
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:").removeprefix("//"))
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend, JournalStorage
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # a generous lock timeout: two processes on one sqlite file wait for each other
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.storages.get_storage(url)


def build_pruner(node: Any) -> optuna.pruners.BasePruner:
    if node is None:
        return optuna.pruners.NopPruner()
    return instantiate(node, _convert_="all", _execution_whitelist_=PRUNER_WHITELIST)


def trial_id(study: optuna.Study, storage: optuna.storages.BaseStorage, number: int) -> int:
    """The storage's id of trial `number` of `study`."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


class Reporter:
    """The epoch-end hook of a search's job: reports the members' mean validation accuracy at
    each epoch to the trial, and answers whether the pruner stops the trial.

    A resumed job reports the epochs its trial lacks, and no epoch twice."""

    def __init__(self, storage: optuna.storages.BaseStorage, study: optuna.Study, number: int) -> None:
        self.storage, self.study = storage, study
        self.trial_id = trial_id(study, storage, number)
        self.trial = optuna.trial.Trial(study, self.trial_id)

    @classmethod
    def for_job(cls, cfg: DictConfig, sweeper: DictConfig) -> "Reporter | None":
        """The reporter of the job of trial `cfg.trial`, or None when there is nothing to report
        to: not a trial of nf_optuna, or a multi-objective search (Optuna's pruners are
        single-objective)."""
        if cfg.trial is None or not str(sweeper.get("_target_", "")).endswith(".NFOptunaSweeper"):
            return None
        if len(objectives(cfg)) > 1:
            return None
        storage = open_storage(str(sweeper.storage))
        pruner = build_pruner(OmegaConf.to_container(sweeper.pruner) if sweeper.get("pruner") else None)
        study = optuna.load_study(study_name=sweeper.study_name, storage=storage, pruner=pruner)
        return cls(storage, study, cfg.trial)

    def __call__(self, run: Any) -> bool:
        frozen = self.storage.get_trial(self.trial_id)
        if frozen.state.is_finished():  # failed as stale by another search: nothing to report to
            return False
        per_seed = dict(frozen.user_attrs.get(PER_SEED_BY_EPOCH, {}))
        missing = []
        for epoch in range(1, run.epoch + 1):
            if epoch in frozen.intermediate_values:
                continue
            # each member's value at that epoch; one stopped earlier (patience) by its last
            values = [next((r["val_acc"] for r in reversed(m.history) if r["epoch"] <= epoch), None)
                      for m in run.members]
            values = [v for v in values if v is not None and np.isfinite(v)]
            if values:
                per_seed[str(epoch)] = values
                missing.append((epoch, float(np.mean(values))))
        if missing:
            # the per-seed values first: a pruner that reads them finds them beside each value
            self.trial.set_user_attr(PER_SEED_BY_EPOCH, per_seed)
            for epoch, value in missing:
                self.trial.report(value, epoch)
        if run.epoch >= run.spec["trainer"]["epochs"]:
            return False  # trained to the end: pruning now would save nothing and lose its value
        return self.trial.should_prune()

