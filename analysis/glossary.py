"""What every column of the analysis tables means: one glossary, printed under each table of a
report and kept word for word in docs/analysis.md (a test holds them equal)."""

from __future__ import annotations

from collections.abc import Iterable

COLUMNS = {
    "config": "the folder that names a config whose runs differ in many keys",
    "n": "complete runs of the config (repeats of the same seeds count once)",
    "mean": "mean over the runs",
    "std": "standard deviation over the runs (ddof 1)",
    "std_se": "bootstrap standard error of std",
    "sem": "standard error of the mean, std / sqrt(n)",
    "median": "median over the runs",
    "min": "lowest run",
    "max": "highest run",
    "range": "max − min",
    "ci_low": "95% percentile-bootstrap CI of the mean, lower end (seeded: --seed)",
    "ci_high": "95% percentile-bootstrap CI of the mean, upper end",
    "t_low": "95% Student-t CI of the mean, lower end (never below 0% for an accuracy)",
    "t_high": "95% Student-t CI of the mean, upper end (never above 100% for an accuracy)",
    "small_n": "yes when n is under 10: percentile-bootstrap CIs are too narrow there (Hesterberg 2015); "
               "prefer the t interval",
    "n_test": "test examples each run was scored on",
    "floor_std": "the std that test-set sampling alone would give if each test example were an independent "
                 "coin with its own probability of being right (Jordan 2023)",
    "remainder_std": "sqrt(std² − floor_std²): spread between the functions the runs learnt",
    "binomial_std": "the naive sqrt(p (1 − p) / n_test)",
    "test_acc": "test accuracy at the epoch of best validation accuracy, mean over runs",
    "max_test_acc": "best test accuracy over all epochs, mean over runs",
    "optimism": "max_test_acc − test_acc: what choosing the epoch on test would have added",
    "optimism_max": "the largest optimism of one run",
    "expected_best": "expected best of n runs drawn from the config's runs (Tang et al. 2020); "
                     "the minimum for a loss or a time",
    "a": "the first config of the pair",
    "b": "the second config of the pair",
    "n_a": "runs of a",
    "n_b": "runs of b",
    "mean_a": "mean of a",
    "mean_b": "mean of b",
    "diff": "mean_a − mean_b",
    "diff_low": "95% bootstrap CI of diff, lower end",
    "diff_high": "95% bootstrap CI of diff, upper end",
    "welch_p": "Welch's t-test p-value",
    "mwu_p": "Mann-Whitney U test p-value",
    "p_a_gt_b": "P(a > b) = U / (n_a n_b): the chance that a run of a beats a run of b",
    "p_low": "95% bootstrap CI of P(a > b), lower end",
    "p_high": "95% bootstrap CI of P(a > b), upper end",
    "verdict": "after Bouthillier et al. 2021: a (or b) better only when P(a > b) > 0.75 (or < 0.25) and its CI "
               "excludes 0.5; 'too few runs' at counts where an exact Mann-Whitney test cannot reach p < 0.05",
    "cohen_d": "diff / pooled std",
    "hedges_g": "Cohen's d with the small-sample correction",
    "n_for_power": "runs per config a z-test needs to detect this diff with 80% power",
    "n_pairs": "seeds both configs ran",
    "paired_p": "paired t-test p-value on the n_pairs seeds",
    "welch_p_holm": "welch_p, Holm-adjusted over the table's rows",
    "mwu_p_holm": "mwu_p, Holm-adjusted over the table's rows",
    "paired_p_holm": "paired_p, Holm-adjusted over the table's rows",
    "source": "a seed source, an interaction of sources, or the residual",
    "df": "degrees of freedom",
    "mean_sq": "ANOVA mean square",
    "variance": "variance component (random-effects model, expected mean squares)",
    "share": "variance / total variance",
    "condition": "an anatomy condition: the source of randomness its runs differ in",
    "varies": "what the condition's runs differ in; every other source is held at one value",
    "std_low": "95% bootstrap CI of std, lower end",
    "std_high": "95% bootstrap CI of std, upper end",
    "share_of_all": "std / the std of the condition `all`, where every source varies",
    "pair": "which runs are compared, run against run",
    "pairs": "pairs of runs compared",
    "identical": "share of the pairs whose predictions agree on every test example",
    "mean_abs_diff": "mean |difference| of the metric between the two runs of a pair",
    "max_abs_diff": "largest |difference| of the metric between the two runs of a pair",
    "delta": "a difference between two configs' means one wants to detect",
    "std_all": "the std of the condition `all`: run-to-run spread with every source varying",
    "n_per_config": "runs per config a two-sided z-test needs to detect delta with 80% power at 5%",
    "mean_acc": "mean test accuracy of the runs",
    "ensemble_acc": "accuracy of the runs' majority vote",
    "churn": "mean share of test examples two runs label differently",
    "kappa": "mean pairwise Cohen's kappa of per-example correctness",
    "some_wrong": "share of test examples some run gets wrong",
    "all_wrong": "share of test examples every run gets wrong",
}


def explain(columns: Iterable[str]) -> str:
    """A markdown list of the columns shown, in the table's order."""
    known = [c for c in dict.fromkeys(columns) if c in COLUMNS]
    return "\n".join(f"- `{c}`: {COLUMNS[c]}" for c in known)


def table() -> str:
    """The whole glossary as the markdown table docs/analysis.md holds."""
    return "\n".join(["| column | meaning |", "| --- | --- |", *(f"| `{c}` | {t} |" for c, t in COLUMNS.items())])
