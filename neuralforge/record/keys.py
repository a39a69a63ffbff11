"""What each config key is: the one table that the fingerprint, job folder names, analysis, the
sweeper and relaunches derive their lists from. Torch-free, so that analysis reads it too.

A key that is not listed is an ordinary one: it decides the run's numbers, names its job folder,
tells configs apart, must stay the same on a relaunch, and may be searched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

SEED_SOURCES = ("init", "order", "split", "augment", "dropout")
# keys that index repeats of one config: the seeds, and init_perturb, which picks the initial
# weight a run perturbs
SEED_KEYS = ("seed", *(f"seeds.{s}" for s in SEED_SOURCES), "init_perturb")


@dataclass(frozen=True)
class Role:
    fingerprinted: bool = True  # part of the hash that a resume checks: it decides the run's numbers
    names_folder: bool = True  # in a sweep job's folder name (Hydra's override_dirname)
    tells_configs_apart: bool = True  # analysis: runs that differ in it are different configs
    may_change_on_relaunch: bool = False  # a search relaunched with another value goes on
    searchable: bool = True  # may be a swept or searched key
    # a key added after runs were already written: hashed only when set to another value than
    # this one, which computes what those runs computed, so that their folders still resume
    added_later_at: Any = ...  # ...: not added later


# where things are, or what is kept: a run moved to another data folder is the same run
WHERE = Role(fingerprinted=False, names_folder=False, tells_configs_apart=False, may_change_on_relaunch=True,
             searchable=False)
# how fast or in how many processes a run computes: its last bits, not its recipe
HOW = Role(tells_configs_apart=False, may_change_on_relaunch=True, searchable=False)
SEED = Role(tells_configs_apart=False)
# the logger group's keys (config.LoggerConf), each a way to name it on a command line
LOGGER_KEYS = {"mlflow": ("enabled", "tracking_uri", "experiment"), "tensorboard": ("enabled", "dir"),
               "wandb": ("enabled", "project", "mode", "dir")}

ROLES: dict[str, Role] = {
    **{k: SEED for k in SEED_KEYS},
    "data.root": WHERE,
    "data.path": WHERE,  # the file's sha256 is checked instead, as the dataset files' are
    "allow_targets": WHERE,  # what may run, not what is computed
    "data.download": WHERE,
    "trainer.keep_last": WHERE,
    # fingerprinted (the last bits of float sums change), but out of folder names: a sweep
    # relaunched on another launcher, whose default count differs, finds its folders again
    "threads": Role(names_folder=False, tells_configs_apart=False, may_change_on_relaunch=True, searchable=False),
    "device": HOW,
    "trainer.eval_batch_size": Role(tells_configs_apart=False, searchable=True),
    "n_seeds": Role(tells_configs_apart=False, searchable=False),
    "seeds_per_trial": Role(tells_configs_apart=False, searchable=False),
    # the Optuna trial's number: two trials that drew the same values are repeats
    "trial": Role(tells_configs_apart=False, may_change_on_relaunch=True, searchable=False),
    "matmul_precision": Role(added_later_at="highest"),
    "vary": Role(added_later_at="all"),  # an anatomy's conditions are configs of their own
    "init_perturb": Role(tells_configs_apart=False, added_later_at=0),
    "data.augment.flip": Role(added_later_at=False),
    "data.num_classes": Role(added_later_at=None),
    # where a run is shown (experiment trackers), not what it computes: a finished sweep relaunched
    # with a logger trains nothing
    **{k: WHERE for k in ("logger", *(f"logger.{t}.{f}" for t, fs in LOGGER_KEYS.items() for f in fs))},
    # what a search optimises, not what a run computes
    "objective": Role(tells_configs_apart=False, searchable=False, added_later_at="val_acc"),
}
# choices of the defaults list that a command line names (+experiment=widths): not config keys,
# and not part of what a job is
CHOICES: dict[str, Role] = {
    "experiment": Role(names_folder=False, tells_configs_apart=False, searchable=False),
    "hparams_search": Role(names_folder=False, tells_configs_apart=False, searchable=False),
}

def keys_where(**wanted: bool) -> tuple[str, ...]:
    """The listed keys (choices included) whose role has every attribute as wanted, e.g.
    keys_where(fingerprinted=False)."""
    return tuple(k for k, r in {**ROLES, **CHOICES}.items() if all(getattr(r, a) == v for a, v in wanted.items()))


NOT_FINGERPRINTED = tuple(k for k in keys_where(fingerprinted=False) if k in ROLES)
NOT_IN_FOLDER_NAMES = keys_where(names_folder=False)
NOT_A_CONFIG = frozenset(k for k in keys_where(tells_configs_apart=False) if k not in SEED_KEYS)
RELAUNCH_MAY_CHANGE = keys_where(may_change_on_relaunch=True)
NOT_SEARCHABLE = keys_where(searchable=False)
ADDED_LATER = {k: r.added_later_at for k, r in ROLES.items() if r.added_later_at is not ...}


def is_seed_key(key: str) -> bool:
    return key in SEED_KEYS


def markdown() -> str:
    """The key-role table of docs/design.md: one row per role, with the keys that have it."""
    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    rows: dict[Role, list[str]] = {}
    for k, r in {**ROLES, **CHOICES}.items():
        rows.setdefault(r, []).append(f"`{k}`" + (" (a choice)" if k in CHOICES else ""))
    lines = ["| keys | fingerprinted | in folder names | tells configs apart | may change on a relaunch | searchable |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r, names in rows.items():
        if names[0].endswith("(a choice)"):
            hashed = "not a key: what it chooses is"
        elif r.added_later_at is not ... and r.fingerprinted:
            hashed = f"only when not `{json.dumps(r.added_later_at)}` (added later)"
        else:
            hashed = yes(r.fingerprinted)
        lines.append(f"| {', '.join(names)} | {hashed} | {yes(r.names_folder)} | {yes(r.tells_configs_apart)} | "
                     f"{yes(r.may_change_on_relaunch)} | {yes(r.searchable)} |")
    return "\n".join(lines)
