"""What a search's trial is made of, shared by the sweeper (hydra/sweeper=nf_optuna) and the job
that trains the trial: the study's storage, the names of what a trial and a study remember, and
the job's reports to its trial, which let the pruner stop it.

The job finds its trial in the storage by the study's name and the trial's number (unique in the
study, whichever search asked for it and on whichever launcher it runs), through Optuna's public
storage API. The job is the one writer of a trial's per-seed values; the sweeper writes who owns
the trial, and tells its state.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from neuralforge.engine import Listener
from neuralforge.record import objective
from neuralforge.record.errors import ConfigError
from neuralforge.record.schema import COMPLETE, PRUNED, Record
from neuralforge.record.study import Attr
from neuralforge.training import Outcome, Training

log = logging.getLogger(__name__)

# what hydra.sweeper.sampler and hydra.sweeper.pruner may instantiate
SAMPLER_WHITELIST = ("optuna.samplers.*",)
PRUNER_WHITELIST = ("optuna.pruners.*", "neuralforge.search.pruners.*")


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
    """The pruner of hydra.sweeper.pruner; a bad setting is a one-line error."""
    if node is None:
        return optuna.pruners.NopPruner()
    target = node.get("_target_")
    try:
        pruner = instantiate(node, _convert_="all", _execution_whitelist_=PRUNER_WHITELIST)
    except Exception as err:  # Hydra's whitelist, or the pruner's own checks of its arguments
        why = (str(err.__cause__ or err).strip().splitlines() or [type(err).__name__])[-1]
        raise ConfigError(f"hydra.sweeper.pruner ({target}) refused: {why}. Fix its settings, or pick "
                          f"one with hydra/sweeper/pruner=<name>") from None
    if not isinstance(pruner, optuna.pruners.BasePruner):
        raise ConfigError(f"hydra.sweeper.pruner._target_={target} is not an Optuna pruner: pick one with "
                          f"hydra/sweeper/pruner=<name>")
    return pruner


def trial_id(study: optuna.Study, storage: optuna.storages.BaseStorage, number: int) -> int:
    """The storage's id of trial `number` of `study`."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def is_trial(cfg: DictConfig, sweeper: DictConfig) -> bool:
    """Whether this job is a trial of nf_optuna (a search's job, told its trial number)."""
    return cfg.trial is not None and str(sweeper.get("_target_", "")).endswith(".NFOptunaSweeper")


class Reporter(Listener):
    """The job's side of its trial. After each epoch it reports the members' mean validation
    accuracy to the trial (one objective: Optuna's pruners are single-objective) and answers
    whether the pruner stops the trial; at the end it writes the members' values.

    A resumed job reports the epochs its trial lacks, and no epoch twice."""

    def __init__(self, storage: optuna.storages.BaseStorage, study: optuna.Study, number: int, prunes: bool) -> None:
        self.storage, self.study, self.prunes = storage, study, prunes
        self.trial_id = trial_id(study, storage, number)
        self.trial = optuna.trial.Trial(study, self.trial_id)

    @classmethod
    def for_job(cls, cfg: DictConfig, sweeper: DictConfig) -> Reporter:
        storage = open_storage(str(sweeper.storage))
        pruner = build_pruner(OmegaConf.to_container(sweeper.pruner) if sweeper.get("pruner") else None)
        study = optuna.load_study(study_name=sweeper.study_name, storage=storage, pruner=pruner)
        return cls(storage, study, cfg.trial, prunes=len(objective.names(cfg.objective)) == 1)

    def epoch_done(self, training: Training, outcome: Outcome) -> bool:
        if not self.prunes:
            return False
        frozen = self.storage.get_trial(self.trial_id)
        if frozen.state.is_finished():  # failed as stale by another search: nothing to report to
            return False
        per_seed = dict(frozen.user_attrs.get(Attr.PER_SEED_BY_EPOCH, {}))
        missing = []
        for epoch in range(1, training.epoch + 1):
            if epoch in frozen.intermediate_values:
                continue
            # each member's value at that epoch; one stopped earlier (patience) by its last
            found = [next((r.val_acc for r in reversed(m.history) if r.epoch <= epoch), None)
                     for m in training.members]
            values = [v for v in found if v is not None and np.isfinite(v)]
            if values:
                per_seed[str(epoch)] = values
                missing.append((epoch, float(np.mean(values))))
        if missing:
            # the per-seed values first: a pruner that reads them finds them beside each value
            self.trial.set_user_attr(Attr.PER_SEED_BY_EPOCH, per_seed)
            for epoch, value in missing:
                self.trial.report(value, epoch)
        if training.epoch >= training.spec["trainer"]["epochs"]:
            return False  # trained to the end: pruning now would save nothing and lose its value
        return self.trial.should_prune()

    def finished(self, records: list[Record]) -> None:
        if self.storage.get_trial(self.trial_id).state.is_finished():
            return  # failed as stale by another search while this job trained
        done = sorted((r for r in records if r.status in (COMPLETE, PRUNED)), key=lambda r: r.seed)
        self.trial.set_user_attr(Attr.SEEDS, [r.seed for r in done])
        self.trial.set_user_attr(Attr.VAL_PER_SEED, [r.metrics.val_acc for r in done])
        self.trial.set_user_attr(Attr.TEST_PER_SEED, [r.metrics.test_acc for r in done])
