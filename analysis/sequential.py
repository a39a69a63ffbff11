"""Anytime-valid confidence sequences for the mean of one config's results: intervals that
cover the true mean at every number of seeds at once, so that a race may look after every round
and stop whenever it likes without raising its error rate (Ville's inequality).

Two methods, on plain arrays in seed order:

- ``t``: Lai's (1976) confidence sequence for a Gaussian mean with unknown variance, in the
  closed form of Wang & Ramdas (2023). It assumes the runs' results are independent draws of
  one normal distribution; its width shrinks like sigma * sqrt(log(n) / n), whatever sigma is.
- ``bounded``: the predictable plug-in empirical-Bernstein confidence sequence of
  Waudby-Smith & Ramdas (2023), which assumes only that every result lies in a declared
  support [low, high] ([0, 1] for an accuracy). It must allow for a run that lands anywhere in
  that support, so its width keeps a term of about (high - low) * log(1 / alpha) / n.
"""

from __future__ import annotations

import math

import numpy as np

from analysis import stats

T, BOUNDED = "t", "bounded"
METHODS = (T, BOUNDED)
# Lai's mixture over the standardised mean mu / sigma ~ N(0, 1 / T_PRIOR_PRECISION). 0.5 keeps
# the sequence narrow from 8 to 32 seeds at the levels a race of 2 to 9 configs uses (alpha / K
# from 0.025 to 0.0056): within 3% of the narrowest choice at each of those n (docs/racing.md)
T_PRIOR_PRECISION = 0.5
# Waudby-Smith & Ramdas's truncation of the bets lambda_t (their c; they suggest 1/2 or 3/4)
EB_TRUNCATION = 0.5


def t_cs(values, alpha: float, c: float = T_PRIOR_PRECISION) -> tuple[float, float]:
    """Lai's (1976, "On confidence sequences", Annals of Statistics 4(2)) confidence sequence
    for a Gaussian mean with unknown variance, at the last of the values.

    Wang & Ramdas (2023, "Anytime-valid t-tests and confidence sequences for Gaussian means
    with unknown variance", Sequential Analysis; their Gaussian mixture of scale-invariant
    likelihood ratios) write its test martingale for mean m, with prior N(0, 1/c) on the
    standardised effect, as
        G_n(m) = sqrt(c / (n + c)) * (V / (V - S^2 / (n + c)))^(n / 2),
        S = sum(x_i - m), V = sum((x_i - m)^2);
    G_1 = 1, and by Ville's inequality P(G_n(mu) >= 1/alpha for some n) <= alpha. The
    sequence is {m : G_n(m) < 1/alpha}, which solves to
        mean ± sqrt(b Q / (n (n - b))),  b = (n + c) (1 - (alpha^2 c / (n + c))^(1/n)),
    with Q = sum((x_i - mean)^2): the whole line while b >= n (too few values)."""
    lows, highs = t_cs_path(values, alpha, c)
    return (float(lows[-1]), float(highs[-1])) if len(lows) else (-math.inf, math.inf)


def t_cs_path(values, alpha: float, c: float = T_PRIOR_PRECISION) -> tuple[np.ndarray, np.ndarray]:
    """t_cs at every n = 1..len(values): (lows, highs)."""
    x = np.asarray(values, dtype=float)
    n = np.arange(1, len(x) + 1, dtype=float)
    mean = np.cumsum(x) / n
    # Welford's running sum of squares: the plain sum(x^2) - n mean^2 cancels to noise at 0.98 +- 0.0015
    delta = x - np.concatenate([[0.0], mean[:-1]])
    q = np.cumsum(delta * (x - mean))
    b = (n + c) * -np.expm1(np.log(alpha ** 2 * c / (n + c)) / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        half = np.where(b < n, np.sqrt(np.maximum(b * q, 0) / (n * (n - b))), math.inf)
    return mean - half, mean + half


def bounded_cs(values, alpha: float, support: tuple[float, float] = (0.0, 1.0),
               c: float = EB_TRUNCATION) -> tuple[float, float]:
    """The predictable plug-in empirical-Bernstein confidence sequence (PrPl-EB) of
    Waudby-Smith & Ramdas (2023, "Estimating means of bounded random variables by betting",
    JRSS B 86(1), Theorem 2), for values in `support`, at the last of them (in their order).

    On y = (x - low) / (high - low) in [0, 1]:
        mu_t = (1/2 + sum_{i<=t} y_i) / (t + 1),  s2_t = (1/4 + sum_{i<=t} (y_i - mu_i)^2) / (t + 1),
        lambda_t = min(sqrt(2 log(2/alpha) / (s2_{t-1} t log(1 + t))), c),
        v_t = 4 (y_t - mu_{t-1})^2,  psi(l) = (-log(1 - l) - l) / 4,
        C_t = sum(lambda_i y_i) / sum(lambda_i) ± (log(2/alpha) + sum(v_i psi(lambda_i))) / sum(lambda_i),
    mapped back to the support. A value outside the support is an error: the guarantee rests on it."""
    lows, highs = bounded_cs_path(values, alpha, support, c)
    return (float(lows[-1]), float(highs[-1])) if len(lows) else support


def bounded_cs_path(values, alpha: float, support: tuple[float, float] = (0.0, 1.0),
                    c: float = EB_TRUNCATION) -> tuple[np.ndarray, np.ndarray]:
    """bounded_cs at every n = 1..len(values): (lows, highs)."""
    low, high = support
    x = np.asarray(values, dtype=float)
    if not high > low:
        raise ValueError(f"support [{low}, {high}] is empty")
    if np.any((x < low) | (x > high)):
        raise ValueError(f"a value lies outside the declared support [{low}, {high}]")
    y = (x - low) / (high - low)
    t = np.arange(1, len(y) + 1)
    mu = (0.5 + np.cumsum(y)) / (t + 1)
    mu_before = np.concatenate([[0.5], mu[:-1]])
    s2 = (0.25 + np.cumsum((y - mu) ** 2)) / (t + 1)
    s2_before = np.concatenate([[0.25], s2[:-1]])
    log_term = math.log(2 / alpha)
    lam = np.minimum(np.sqrt(2 * log_term / (s2_before * t * np.log1p(t))), c)
    psi = (-np.log1p(-lam) - lam) / 4
    v = 4 * (y - mu_before) ** 2
    weight = np.cumsum(lam)
    centre = np.cumsum(lam * y) / weight
    half = (log_term + np.cumsum(v * psi)) / weight
    return low + (high - low) * (centre - half), low + (high - low) * (centre + half)


def interval(values, alpha: float, method: str = T, support: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float]:
    """The method's confidence sequence at the last value, kept inside the support (stats.clip)."""
    if method == T:
        low, high = t_cs(values, alpha)
    elif method == BOUNDED:
        low, high = bounded_cs(values, alpha, support)
    else:
        raise ValueError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    return stats.clip(low, high, support)
