"""What an Optuna study and its trials remember, by name: the one set of user-attribute names
that the sweeper, the trial's job and analysis read and write."""

from __future__ import annotations

from enum import StrEnum


class Attr(StrEnum):
    """A trial's user attributes."""
    # written by the sweeper that asked for the trial, or took it over
    HOST = "nf_host"
    PID = "nf_pid"
    HEARTBEAT = "nf_heartbeat"  # refreshed while the trial's job runs or waits in a queue
    OVERRIDES = "nf_overrides"  # the job's command line
    FOLDER = "nf_folder"  # the job's folder in the sweep; written last: a trial that has it has the others
    STALE = "nf_stale"  # failed because the search that ran it was gone: it does not count toward n_trials
    ERROR = "error"  # why the trial failed
    # written by the trial's job
    PER_SEED_BY_EPOCH = "val_acc_per_seed_by_epoch"  # {epoch: the members' val_acc}: the noise-aware pruner reads it
    SEEDS = "seeds"  # the members' seeds, complete or pruned
    VAL_PER_SEED = "val_acc_per_seed"  # their val_acc at their chosen epochs
    TEST_PER_SEED = "test_acc_per_seed"  # their test_acc there, recorded, never optimised


class StudyAttr(StrEnum):
    CONFIG = "nf_config"  # the config the study searches: all but the searched keys
