"""Statistics of repeated runs, on plain arrays: one value per run, or one row of test
predictions per run. tables.py applies them per config.

Every bootstrap takes a seed: the same folder gives the same report twice.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import special, stats
from statsmodels.stats.inter_rater import cohens_kappa

from neuralforge.record.schema import higher_is_better as metric_higher_is_better
from neuralforge.record.schema import is_accuracy

CONFIDENCE = 0.95
# Under this many runs a percentile-bootstrap CI of the mean is too narrow, by about
# sqrt((n - 1) / n) and worse in the tails (Hesterberg 2015, "What Teachers Should Know About the
# Bootstrap", The American Statistician 69(4)): with 3 runs it is the min-max range.
SMALL_N = 10
N_BOOT = 9999
GAMMA = 0.75  # Bouthillier et al. 2021: P(A > B) above this is a difference worth acting on
POWER = 0.8


def bootstrap(samples: tuple[np.ndarray, ...], statistic, seed: int,
              n_boot: int = N_BOOT) -> tuple[float, float, float]:
    """Percentile bootstrap: (low, high, standard error) of `statistic`, resampling each sample
    independently."""
    if min(len(s) for s in samples) < 2:
        return math.nan, math.nan, math.nan
    # Percentile, not BCa: with a handful of seeds the values tie and P(A > B) sits at 0 or 1,
    # where BCa's acceleration is 0/0 and scipy answers NaN.
    res = stats.bootstrap(samples, statistic, n_resamples=n_boot, vectorized=True,
                          method="percentile", confidence_level=CONFIDENCE, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high), float(res.standard_error)


def _std(x, axis=-1):
    return np.std(x, axis=axis, ddof=1)


def describe(values, seed: int = 0, bounds: tuple[float, float] = (-math.inf, math.inf)) -> dict[str, float]:
    """Location and spread of one config's results, with two 95% intervals for the mean (a
    seeded bootstrap and Student's t), kept inside `bounds` (support(metric)), and a seeded
    bootstrap interval and standard error of the std. The std's percentile interval (Efron &
    Tibshirani 1993, "An Introduction to the Bootstrap", ch. 13) runs short of its nominal
    coverage with a handful of runs; with 32 it is a fair guide to how well a spread is known."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    out = {"n": n, "mean": x.mean(), "std": math.nan, "std_low": math.nan, "std_high": math.nan,
           "std_se": math.nan, "sem": math.nan, "median": np.median(x), "min": x.min(), "max": x.max(),
           "range": np.ptp(x), "ci_low": math.nan, "ci_high": math.nan, "t_low": math.nan, "t_high": math.nan}
    if n < 2:
        return out
    out["std"] = x.std(ddof=1)
    out["sem"] = stats.sem(x)
    low, high, _ = bootstrap((x,), np.mean, seed)
    out["ci_low"], out["ci_high"] = clip(low, high, bounds)
    out["std_low"], out["std_high"], out["std_se"] = bootstrap((x,), _std, seed)
    out["t_low"], out["t_high"] = t_interval(x, bounds)
    return out


def t_interval(values, bounds: tuple[float, float] = (-math.inf, math.inf)) -> tuple[float, float]:
    """The 95% CI of the mean by Student's t (Student 1908, "The Probable Error of a Mean",
    Biometrika 6(1)): mean ± t_{n-1} SEM, inside `bounds`; NaN under two values, the mean itself
    when they all tie."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    sem = stats.sem(x)
    if not sem > 0:
        return float(x.mean()), float(x.mean())
    low, high = stats.t.interval(CONFIDENCE, len(x) - 1, loc=x.mean(), scale=sem)
    low, high = clip(low, high, bounds)
    return float(low), float(high)


def support(metric: str) -> tuple[float, float]:
    """Where a metric's values, and so its mean, can lie: an accuracy in [0, 1], a loss or a
    time at or above 0, any other metric anywhere."""
    if is_accuracy(metric):
        return 0.0, 1.0
    if not metric_higher_is_better(metric):
        return 0.0, math.inf
    return -math.inf, math.inf


def clip(low: float, high: float, bounds: tuple[float, float]) -> tuple[float, float]:
    """An interval of a mean cut to where the mean can lie: every interval that covered the
    mean still does, so coverage is kept, and an accuracy's interval ends at 100%, not 100.54%
    (Student's t with 2 runs near the top). Every interval of a mean goes through here."""
    return min(max(low, bounds[0]), bounds[1]), max(min(high, bounds[1]), bounds[0])


def p_greater(x, y, axis: int = -1):
    """P(X > Y) over all pairs, ties counting one half: Mann-Whitney's U / (nx ny), from the
    rank sum (n log n per resample where comparing all pairs is nx ny)."""
    x, y = np.moveaxis(np.asarray(x), axis, -1), np.moveaxis(np.asarray(y), axis, -1)
    nx, ny = x.shape[-1], y.shape[-1]
    ranks = stats.rankdata(np.concatenate([x, y], axis=-1), axis=-1)
    return (ranks[..., :nx].sum(axis=-1) - nx * (nx + 1) / 2) / (nx * ny)


def cohen_d(x, y) -> float:
    return (np.mean(x) - np.mean(y)) / pooled_std(x, y)


def hedges_g(x, y) -> float:
    """Cohen's d with the exact small-sample bias correction J(df)."""
    df = len(x) + len(y) - 2
    j = math.exp(special.gammaln(df / 2) - special.gammaln((df - 1) / 2)) / math.sqrt(df / 2)
    return cohen_d(x, y) * j


def pooled_std(x, y) -> float:
    nx, ny = len(x), len(y)
    return math.sqrt(((nx - 1) * np.var(x, ddof=1) + (ny - 1) * np.var(y, ddof=1)) / (nx + ny - 2))


def n_for_power(sd: float, delta: float, power: float = POWER, alpha: float = 1 - CONFIDENCE) -> float:
    """Runs per config for a two-sided z-test to detect `delta` with `power`:
    2 (z_{1-alpha/2} + z_power)^2 sd^2 / delta^2, rounded up, and never under 2 (a spread
    cannot be estimated from fewer)."""
    if not np.isfinite(sd):
        return math.nan
    if delta == 0:
        return math.inf
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(max(2, math.ceil(2 * z ** 2 * sd ** 2 / delta ** 2)))


def verdict(p: float, low: float, high: float, gamma: float = GAMMA) -> str:
    """Bouthillier et al. 2021: A is better when P(A > B) is meaningful (> gamma) and
    significant (its CI's lower bound > 0.5)."""
    if p > gamma and low > 0.5:
        return "a better"
    if p < 1 - gamma and high < 0.5:
        return "b better"
    if low > 0.5 or high < 0.5:
        return "significant, not meaningful"
    return "inconclusive"


def compare(a, b, seed: int = 0, pairs: tuple[np.ndarray, np.ndarray] | None = None,
            higher_is_better: bool = True) -> dict[str, Any]:
    """Config A against config B. `pairs`: A's and B's results on the seeds both ran, in
    matching order, for the paired t-test. P(a > b) is what it says whatever the metric; the
    verdict names the better config, the lower one for a loss."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    nx, ny = len(x), len(y)
    out: dict[str, Any] = {"n_a": nx, "n_b": ny, "mean_a": x.mean(), "mean_b": y.mean(),
                           "diff": x.mean() - y.mean()}
    out["diff_low"], out["diff_high"], _ = bootstrap(
        (x, y), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis), seed)
    two = nx > 1 and ny > 1
    out["welch_p"] = stats.ttest_ind(x, y, equal_var=False).pvalue if two else math.nan
    mwu = stats.mannwhitneyu(x, y, alternative="two-sided")
    out["mwu_p"] = mwu.pvalue
    out["p_a_gt_b"] = mwu.statistic / (nx * ny)
    out["p_low"], out["p_high"], _ = bootstrap((x, y), p_greater, seed)
    # P(a < b) = 1 - P(a > b): Mann-Whitney's U counts a tie as half of each
    p, low, high = ((out["p_a_gt_b"], out["p_low"], out["p_high"]) if higher_is_better
                    else (1 - out["p_a_gt_b"], 1 - out["p_high"], 1 - out["p_low"]))
    # with 3 runs each, any two separated configs get P(a > b) = 1 and a bootstrap CI of [1, 1]:
    # a verdict needs counts at which an exact Mann-Whitney test could reach p < 0.05 at all (with
    # ties, mwu_p comes from scipy's normal approximation and may dip below 0.05 at these counts)
    enough = two and 2 / math.comb(nx + ny, nx) < 0.05
    out["verdict"] = verdict(p, low, high) if enough else "too few runs"
    sd = pooled_std(x, y) if two else math.nan
    out["cohen_d"] = out["diff"] / sd if two and sd > 0 else math.nan
    out["hedges_g"] = hedges_g(x, y) if two and sd > 0 else math.nan
    out["n_for_power"] = n_for_power(sd, out["diff"]) if two else math.nan
    out["n_pairs"] = 0 if pairs is None else len(pairs[0])
    out["paired_p"] = stats.ttest_rel(*pairs).pvalue if pairs is not None and len(pairs[0]) > 1 else math.nan
    return out


def expected_best(values, higher_is_better: bool = True) -> np.ndarray:
    """expected_max, or for a lower-is-better metric the expected minimum."""
    v = np.asarray(values, dtype=float)
    return expected_max(v) if higher_is_better else -expected_max(-v)


def expected_max(values) -> np.ndarray:
    """Expected best of n runs drawn without replacement from these N, for n = 1..N: the
    unbiased estimator of Tang et al. 2020, sum_i v_(i) C(i-1, n-1) / C(N, n), in log space so
    that N in the thousands does not overflow."""
    v = np.sort(np.asarray(values, dtype=float))
    big_n = len(v)
    i = np.arange(1, big_n + 1)[None, :]
    n = np.arange(1, big_n + 1)[:, None]
    with np.errstate(invalid="ignore"):
        log_w = _log_comb(i - 1, n - 1) - _log_comb(big_n, n)
    weights = np.where(i >= n, np.exp(log_w), 0.0)
    return weights @ v


def _log_comb(n, k):
    return special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)


def noise_floor(correct: np.ndarray) -> dict[str, float]:
    """How much of the run-to-run spread of test accuracy is sampling noise of the test set
    (Jordan 2023, "Calibrated Chaos").

    correct: (runs, test examples) booleans. If each example were an independent coin with its
    own p_i, accuracy would vary with std sqrt(sum p_i (1 - p_i)) / n_test. p_i is estimated
    from k runs, and sum p_i (1 - p_i) with the unbiased k / (k - 1) factor, so the floor is
    on the same footing as the observed std (ddof=1) beside it. What the floor does not
    explain is variance between runs in the distribution they learnt.
    """
    k, n_test = correct.shape
    acc = correct.mean(axis=1)
    p = correct.mean(axis=0)
    out = {"n": k, "n_test": n_test, "mean": acc.mean(), "std": math.nan, "floor_std": math.nan,
           "remainder_std": math.nan, "binomial_std": math.sqrt(acc.mean() * (1 - acc.mean()) / n_test)}
    if k < 2:
        return out
    out["std"] = acc.std(ddof=1)
    out["floor_std"] = math.sqrt(np.sum(p * (1 - p)) * k / (k - 1)) / n_test
    out["remainder_std"] = math.sqrt(max(0.0, out["std"] ** 2 - out["floor_std"] ** 2))
    return out


def churn(preds: np.ndarray) -> np.ndarray:
    """Pairwise share of test examples on which two runs predict different labels."""
    return (preds[:, None, :] != preds[None, :, :]).mean(axis=-1)


def kappa(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Cohen's kappa of two runs' per-example correctness: agreement beyond chance on which
    examples are hard."""
    table = np.bincount(2 * correct_a.astype(int) + correct_b.astype(int), minlength=4).reshape(2, 2)
    return float(cohens_kappa(table, return_results=False))


def stability(preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """How much runs of one config agree on the test set. preds: (runs, test examples)."""
    k = len(preds)
    correct = preds == labels[None, :]
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    # Majority vote; stats.mode breaks a tie towards the smaller label.
    vote = stats.mode(preds, axis=0, keepdims=False).mode
    with np.errstate(invalid="ignore", divide="ignore"):
        kappas = [kappa(correct[i], correct[j]) for i, j in pairs]
    return {
        "n": k,
        "mean_acc": correct.mean(),
        "ensemble_acc": (vote == labels).mean(),
        "churn": churn(preds)[np.triu_indices(k, 1)].mean() if pairs else math.nan,
        "kappa": np.nanmean(kappas) if pairs and not np.all(np.isnan(kappas)) else math.nan,
        "some_wrong": (~correct).any(axis=0).mean(),
        "all_wrong": (~correct).all(axis=0).mean(),
    }


def paired_distance(acc_a, acc_b, preds_a: np.ndarray | None = None,
                    preds_b: np.ndarray | None = None) -> dict[str, float]:
    """How far runs land from their partners, pair by pair: run i of A against run i of B
    (the same seeds on two thread counts; a perturbed run against its unperturbed base).
    Summers & Dinneen 2021 ("Nondeterminism and Instability in Neural Network Optimization")
    compare such pairs to the spread between seeds. preds: (pairs, test examples); without
    them, which pairs are identical and their churn are not known."""
    diff = np.abs(np.asarray(acc_a, dtype=float) - np.asarray(acc_b, dtype=float))
    out = {"pairs": len(diff), "identical": math.nan, "mean_abs_diff": diff.mean(), "max_abs_diff": diff.max(),
           "churn": math.nan}
    if preds_a is not None and preds_b is not None:
        disagree = (preds_a != preds_b).mean(axis=1)
        out["identical"], out["churn"] = int((disagree == 0).sum()), disagree.mean()
    return out
