"""A pruner that knows a trial is a mean over seeds: `hydra/sweeper/pruner=seed_noise`.

Optuna's pruners compare a trial's intermediate value with other trials' as if each value were
exact. A trial of a search here is the mean validation accuracy of `seeds_per_trial` seeds,
and two recipes whose means differ by less than the seeds' own spread are not told apart by
one search: pruning the lower one is pruning on luck.

SeedNoisePruner prunes a trial at epoch e only when its mean lies more than `k` standard
errors below the reference of the trials it is compared with at epoch e: the `percentile` of
the completed trials' values there. The default, 0, is the best of them: a trial stops once it
can no longer plausibly be the best, and a trial within its seeds' noise of the best goes on
(50 is their median, as Optuna's MedianPruner). The standard error is the trial's
own: the sample standard deviation of its members' values at epoch e over sqrt(members), read
from the trial's user attribute that the job writes beside each report. A trial of one seed
has no measured noise, and is compared as Optuna's PercentilePruner would.

How it differs from Optuna's PercentilePruner, whose percentile convention it shares (for a
maximised objective, percentile p is the value the best p% of the others reach):
- it judges the trial's value at the current step, where PercentilePruner judges the best of
  the trial's values up to that step: a mean over seeds that was lucky once is not carried on
  that luck;
- it counts only the COMPLETE trials that reported this very step, start-up trials included:
  PercentilePruner's n_startup_trials counts every complete trial, whatever steps it reported;
- it prunes only when even `k` of the trial's own standard errors above its value stay below
  the reference (k = 0 is PercentilePruner's comparison, on the current value);
- it has no interval_steps or n_min_trials: every step is judged, against at least one trial.
"""

from __future__ import annotations

import math

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from neuralforge.search.trial import Attr


class SeedNoisePruner(optuna.pruners.BasePruner):
    # percentile 0 and 2 start-up trials: on hparams_search=mlp_recipe (24 trials) they spent 0.27
    # of the unpruned search's member-epochs and found its best (docs/search.md, Measured figures)
    def __init__(self, k: float = 2.0, percentile: float = 0.0, n_startup_trials: int = 2,
                 n_warmup_steps: int = 0) -> None:
        if k < 0 or not 0 <= percentile <= 100 or n_startup_trials < 0 or n_warmup_steps < 0:
            raise ValueError(f"SeedNoisePruner needs k >= 0, 0 <= percentile <= 100 and non-negative counts; got "
                             f"k={k}, percentile={percentile}, n_startup_trials={n_startup_trials}, "
                             f"n_warmup_steps={n_warmup_steps}")
        self.k, self.percentile = k, percentile
        self.n_startup_trials, self.n_warmup_steps = n_startup_trials, n_warmup_steps

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < self.n_warmup_steps:
            return False
        others = [t.intermediate_values[step] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if step in t.intermediate_values]
        if len(others) < max(self.n_startup_trials, 1):
            return False
        value = trial.intermediate_values[step]
        if math.isnan(value):
            return True
        maximize = study.direction == StudyDirection.MAXIMIZE
        # the value the best (100 - percentile)% of the others reach: below it, a trial is behind
        reference = float(np.percentile(others, 100 - self.percentile if maximize else self.percentile))
        margin = self.k * standard_error(trial.user_attrs.get(Attr.PER_SEED_BY_EPOCH, {}).get(str(step), []))
        return value + margin < reference if maximize else value - margin > reference


def standard_error(values: list[float]) -> float:
    """Of the mean of `values` (0 for fewer than two: no noise measured)."""
    if len(values) < 2:
        return 0.0
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))
