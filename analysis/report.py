"""A sweep's analysis in one folder: markdown tables to read, the same tables in CSV at full
precision, and PNG figures, indexed by report.md."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from analysis import plots, study as optuna_study, tables
from analysis.collect import collect, complete, describe_problems, problems
from analysis.errors import AnalysisError
from analysis.groups import group_keys, groups, show
from analysis.markdown import markdown
from analysis.variance import variance

EXPLAIN = {
    "summary": "One row per config (runs that differ only in seeds). std_se: bootstrap standard error of std; "
               "ci_*: 95% percentile-bootstrap CI of the mean (seeded); t_*: 95% Student-t CI of the mean.",
    "noise_floor": "floor_std: the std test-set sampling alone would give if each test example were an independent "
                   "coin (Jordan 2023); remainder_std = sqrt(std² − floor²): spread between the functions the runs "
                   "learnt; binomial_std: the naive sqrt(p(1−p)/n_test).",
    "optimism": "optimism: max test accuracy over epochs minus test accuracy at the epoch validation chose: what "
                "picking the epoch on test would have added.",
    "compare": "diff = mean_a − mean_b with 95% bootstrap CI; welch_p, mwu_p: Welch t and Mann-Whitney U tests; "
               "p_a_gt_b = P(a > b) = U/(n_a n_b) with bootstrap CI; verdict (Bouthillier et al. 2021): better only "
               "if P > 0.75 and its CI's lower bound > 0.5, none (too few runs) at counts where an exact Mann-Whitney "
               "test cannot reach p < 0.05; n_for_power: runs per config to detect this diff with 80% "
               "power; paired_p: paired t-test on the n_pairs seeds both ran; *_holm: Holm-adjusted over the table.",
    "variance": "Variance components of a random-effects model over the crossed seed sources (ANOVA expected mean "
                "squares); share: fraction of the total.",
    "stability": "churn: mean pairwise share of test examples two runs label differently; kappa: mean pairwise "
                 "Cohen's kappa of per-example correctness; some_wrong / all_wrong: share of test examples that some "
                 "/ every run gets wrong; ensemble_acc: majority-vote accuracy.",
}


# every file a report may write, so that a new report into the same folder removes what the
# earlier one wrote and this one does not
FILES = ("report.md", "runs.csv", "problems.csv", "summary.md", "summary.csv", "noise_floor.csv", "optimism.csv",
         "expected_max.csv", "compare.md", "compare.csv", "variance.md", "variance.csv", "stability.md",
         "stability.csv", "churn.png", "distribution.png", "curves.png", "ecdf.png", "expected_max.png",
         "optuna_history.png", "optuna_importances.png", "optuna_pareto.png")


def report(paths, out: str | os.PathLike, by: str | None = None, metric: str = "test_acc", seed: int = 0,
           study: str | None = None) -> pd.DataFrame:
    """Write the analysis of the runs under `paths` (or an already collected frame) into `out`;
    return the files written and what each holds. `by`: the key compare.md compares along."""
    df = paths if isinstance(paths, pd.DataFrame) else collect(paths)
    complete(df)
    if by is not None:
        group_keys(df, by)  # a key that does not vary is an error before anything is written
    tables.check_metric(df, metric)  # and so is a metric the records lack
    out = Path(out)
    created, earlier = not out.exists(), (out / "report.md").exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        # drawn in a scratch folder, then moved in: a failure leaves the folder as it was
        with tempfile.TemporaryDirectory(dir=out, prefix=".report-") as scratch:
            written = _write(Path(scratch), df, by, metric, seed, study)
            for w in written:  # report.md, the index, last
                os.replace(Path(scratch) / w["file"], out / w["file"])
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    # what an earlier report left here that this one does not write (variance.md of a grid,
    # problems.csv of a sweep with failures) would be read as this sweep's; other files stay,
    # and without an earlier report.md no file here is taken for one
    stale = set(FILES) - {w["file"] for w in written} if earlier else set()
    for name in stale:
        (out / name).unlink(missing_ok=True)
    return pd.DataFrame(written)


def _write(out: Path, df: pd.DataFrame, by: str | None, metric: str, seed: int,
           study: str | None) -> list[dict[str, str]]:
    written: list[dict[str, str]] = []

    def csv(name: str, table: pd.DataFrame, what: str) -> None:
        table.to_csv(out / name, index=False)
        written.append({"file": name, "what": what})

    def md(name: str, title: str, sections: list[str], what: str) -> None:
        (out / name).write_text("\n\n".join([f"# {title}", *sections]) + "\n")
        written.append({"file": name, "what": what})

    def figure(name: str, draw, what: str) -> None:
        draw(out / name)
        written.append({"file": name, "what": what})

    runs = groups(df)
    metric_name = plots.METRIC_NAMES.get(metric, metric)
    csv("runs.csv", df, "every run found, one row each, with its status")
    left_out = problems(df)
    if len(left_out):
        csv("problems.csv", left_out, "runs left out of every statistic: failed, pruned, stale, running, missing, unreadable, "
                                        "repeats")

    summary = tables.summarize(df, metric, seed=seed)
    csv("summary.csv", summary, f"{metric} per config")
    sections = [f"## {metric_name.capitalize()} per config", markdown(summary), EXPLAIN["summary"]]
    try:
        floor = tables.noise_floor(df)
    except AnalysisError as err:
        floor = None
        sections += ["## Noise floor", f"Not computed: {err}"]
    if floor is not None and len(floor):
        csv("noise_floor.csv", floor, "observed std of test accuracy beside the test-set noise floor")
        sections += ["## Noise floor of test accuracy", markdown(floor), EXPLAIN["noise_floor"]]
    gap = tables.optimism(df)
    csv("optimism.csv", gap, "selection optimism per config")
    sections += ["## Selection optimism", markdown(gap), EXPLAIN["optimism"]]
    emax = tables.expected_max(df, metric)
    csv("expected_max.csv", emax, f"expected best {metric} of n runs, per config and n")
    md("summary.md", f"Summary: {metric_name}", sections, "per-config statistics, noise floor, selection optimism")

    try:
        pairs = tables.compare(df, by=by, metric=metric, seed=seed)
    except AnalysisError as err:
        md("compare.md", "Comparisons", [f"No comparison: {err}."], "pairwise comparisons of configs")
    else:
        csv("compare.csv", pairs, "pairwise comparisons of configs")
        along = f" along {by}" if by else ""
        md("compare.md", f"Comparisons of {metric_name}{along}", [markdown(pairs), EXPLAIN["compare"]],
           "pairwise comparisons of configs")

    parts = variance(df, metric)
    if len(parts):
        csv("variance.csv", parts, "variance components by seed source")
        md("variance.md", f"Variance of {metric_name} by source of randomness",
           [markdown(parts), EXPLAIN["variance"], *(f"- {n}" for n in parts.attrs["notes"])],
           "variance components by seed source")

    try:
        agree = tables.stability(df)
        matrices = tables.churn_matrices(df)
    except AnalysisError as err:
        md("stability.md", "Stability of predictions", [f"Not computed: {err}."], "agreement between runs")
    else:
        if len(agree):
            csv("stability.csv", agree, "agreement between runs of a config")
        md("stability.md", "Stability of predictions",
           [markdown(agree), EXPLAIN["stability"]] if len(agree) else ["No run left predictions.npy."],
           "agreement between runs of a config")
        if matrices:
            figure("churn.png", lambda p: plots.churn(matrices, p), "pairwise disagreement heat map per config")

    figure("distribution.png", lambda p: plots.distribution(runs, metric, p, seed), f"{metric} of every run, per config")
    figure("curves.png", lambda p: plots.learning_curves(runs, p, metric), "learning curves, mean ± std per config")
    figure("ecdf.png", lambda p: plots.ecdf(runs, metric, p), f"ECDF of {metric} per config")
    figure("expected_max.png", lambda p: plots.expected_max(runs, metric, p), "expected best of n runs")

    notes = []
    try:
        found = optuna_study.load(df.attrs.get("roots", []), study)
    except AnalysisError as err:
        found, notes = None, [f"no Optuna figures: {err}"]
    if found is not None:
        if len(found.directions) > 1:  # several objectives: their trade-off, not a history of one
            notes = optuna_study.plot_pareto(found, out / "optuna_pareto.png")
            written.append({"file": "optuna_pareto.png", "what": f"Pareto front of study {found.study_name}"})
        else:
            notes = optuna_study.plot(found, out / "optuna_history.png", out / "optuna_importances.png")
            written.append({"file": "optuna_history.png", "what": f"optimisation history of study {found.study_name}"})
        if (out / "optuna_importances.png").exists():
            written.append({"file": "optuna_importances.png", "what": "hyperparameter importances (PED-ANOVA)"})

    _index(out, df, written, notes)
    return written


def _index(out: Path, df: pd.DataFrame, written: list[dict[str, str]], notes: list[str]) -> None:
    n_complete = int((df["status"] == "complete").sum())
    left_out = describe_problems(df)
    lines = [f"# Analysis of {', '.join(df.attrs.get('roots', [])) or 'runs'}", "",
             f"{n_complete} complete runs" + (f"; left out of every statistic: {left_out} (problems.csv)"
                                             if left_out else "") + "."]
    constants = df.attrs.get("constants", {})
    if constants:
        shared = pd.DataFrame({"key": list(constants), "value": [show(v) for v in constants.values()]})
        lines += ["", "## Config shared by every run", "", markdown(shared)]
    lines += ["", "## Files", ""]
    lines += [f"- [{w['file']}]({w['file']}): {w['what']}" for w in written]
    lines += [f"- {n}" for n in notes]
    lines += [""] + [f"![{w['file']}]({w['file']})" for w in written if w["file"].endswith(".png")]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    written.append({"file": "report.md", "what": "this index"})
