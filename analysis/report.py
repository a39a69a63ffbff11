"""A sweep's analysis in one folder: markdown tables to read, the same tables in CSV at full
precision, and PNG figures, indexed by report.md."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from analysis import glossary, plots, racing, stats, tables
from analysis import study as optuna_study
from analysis.anatomy import anatomy, has_anatomy
from analysis.collect import collect, complete, describe_problems, from_modified_tree, problems
from analysis.errors import AnalysisError
from analysis.groups import group_keys, groups, show
from analysis.groups import label as config_label
from analysis.markdown import markdown
from analysis.variance import variance
from neuralforge.record.files import REPORT, REPORT_FILES
from neuralforge.record.schema import COMPLETE, higher_is_better, is_accuracy

NOTES = {  # what a table's columns do not say themselves; the columns are in analysis/glossary.py
    "compare": "compare.csv holds every column: p-values (Welch, Mann-Whitney, paired; Holm-adjusted), effect "
               "sizes and the runs needed for 80% power.",
    "variance": "Variance components of a random-effects model over the crossed seed sources (ANOVA expected mean "
                "squares).",
    "anatomy": "Each condition varies one source of randomness between its runs and holds the others fixed; `all` "
               "varies every one.",
    "anatomy_pairs": "Run against run: the same seeds on 1 and 2 threads; each perturbed run against the unperturbed "
                     "base; every two runs of all.",
}


# every file a report may write (neuralforge.record.files), so that a new report into the same
# folder removes what the earlier one wrote and this one does not
FILES = tuple(REPORT_FILES)


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
    created, earlier = not out.exists(), (out / REPORT).exists()
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

    def csv(name: str, table: pd.DataFrame) -> None:
        table.to_csv(out / name, index=False)
        written.append({"file": name, "what": REPORT_FILES[name]})

    def md(name: str, title: str, sections: list[str]) -> None:
        (out / name).write_text("\n\n".join([f"# {title}", *sections]) + "\n")
        written.append({"file": name, "what": REPORT_FILES[name]})

    def figure(name: str, draw) -> None:
        draw(out / name)
        written.append({"file": name, "what": REPORT_FILES[name]})

    runs = groups(df)
    metric_name = plots.METRIC_NAMES.get(metric, metric)
    csv("runs.csv", df)
    left_out = problems(df)
    if len(left_out):
        csv("problems.csv", left_out)

    summary = tables.summarize(df, metric, seed=seed)
    csv("summary.csv", summary)
    sections = [f"## {metric_name.capitalize()} per config", markdown(summary), glossary.explain(summary.columns)]
    try:
        floor = tables.noise_floor(df)
    except AnalysisError as err:
        floor = None
        sections += ["## Noise floor", f"Not computed: {err}"]
    if floor is not None and len(floor):
        csv("noise_floor.csv", floor)
        sections += ["## Noise floor of test accuracy", markdown(floor), glossary.explain(floor.columns)]
    gap = tables.optimism(df)
    csv("optimism.csv", gap)
    sections += ["## Selection optimism", markdown(gap), glossary.explain(gap.columns)]
    emax = tables.expected_max(df, metric)
    csv("expected_max.csv", emax)
    md("summary.md", f"Summary: {metric_name}", sections)

    try:
        compared = tables.compare(df, by=by, metric=metric, seed=seed)
    except AnalysisError as err:
        pairs = None
        md("compare.md", "Comparisons", [f"No comparison: {err}."])
    else:
        pairs = compared
        csv("compare.csv", pairs)
        along = f" along {by}" if by else ""
        shown = tables.compact(pairs)
        md("compare.md", f"Comparisons of {metric_name}{along}",
           [markdown(shown), glossary.explain(shown.columns), NOTES["compare"]])

    parts = variance(df, metric)
    if len(parts):
        csv("variance.csv", parts)
        md("variance.md", f"Variance of {metric_name} by source of randomness",
           [markdown(parts), NOTES["variance"], glossary.explain(parts.columns),
            *(f"- {n}" for n in parts.attrs["notes"])])

    try:
        agree = tables.stability(df)
        matrices = tables.churn_matrices(df)
    except AnalysisError as err:
        md("stability.md", "Stability of predictions", [f"Not computed: {err}."])
    else:
        if len(agree):
            csv("stability.csv", agree)
        md("stability.md", "Stability of predictions",
           [markdown(agree), glossary.explain(agree.columns)] if len(agree) else ["No run left predictions.npy."])
        if matrices:
            figure("churn.png", lambda p: plots.churn(matrices, p))

    if has_anatomy(df):
        found = anatomy(df, metric, seed)
        csv("anatomy.csv", found.table)
        sections = [markdown(found.table), NOTES["anatomy"], glossary.explain(found.table.columns)]
        if len(found.pairs):
            csv("anatomy_pairs.csv", found.pairs)
            sections += ["## Distance between paired runs", markdown(found.pairs), NOTES["anatomy_pairs"],
                         glossary.explain(found.pairs.columns)]
        sections += ["## Runs per config to tell two configs apart (80% power, 5% two-sided), from all's std",
                     markdown(found.seeds_needed), *(f"- {n}" for n in found.notes)]
        md("anatomy.md", f"Anatomy of run-to-run spread: {metric_name}", sections)
        figure("anatomy.png", lambda p: plots.anatomy(found.values, found.table, metric, p, seed))

    roots = df.attrs.get("roots", [])
    if roots and racing.is_race(roots[0]):  # a race's folder: its rounds, table and figure
        _, manifest, race = racing.read(roots[0])
        raced = manifest["race"]["settings"]["metric"]
        standing = racing.table(race, raced)
        csv("race.csv", standing)
        md("race.md", f"Race on {plots.METRIC_NAMES.get(raced, raced)}",
           ["\n".join(f"- {racing.round_line(r, len(race.standings), raced)}" for r in race.rounds),
            racing.end_line(race), markdown(standing)])
        figure("race.png", lambda p: plots.race(race, raced, p))

    figure("distribution.png", lambda p: plots.distribution(runs, metric, p, seed))
    figure("curves.png", lambda p: plots.learning_curves(runs, p, metric))
    figure("ecdf.png", lambda p: plots.ecdf(runs, metric, p))
    figure("expected_max.png", lambda p: plots.expected_max(runs, metric, p))

    notes = []
    try:
        loaded = optuna_study.load(df.attrs.get("roots", []), study)
    except AnalysisError as err:
        loaded, notes = None, [f"no Optuna figures: {err}"]
    if loaded is not None:
        if len(loaded.directions) > 1:  # several objectives: their trade-off, not a history of one
            notes = optuna_study.plot_pareto(loaded, out / "optuna_pareto.png")
            written.append({"file": "optuna_pareto.png", "what": REPORT_FILES["optuna_pareto.png"]})
        else:
            notes = optuna_study.plot(loaded, out / "optuna_history.png", out / "optuna_importances.png")
            written.append({"file": "optuna_history.png", "what": REPORT_FILES["optuna_history.png"]})
        if (out / "optuna_importances.png").exists():
            written.append({"file": "optuna_importances.png", "what": REPORT_FILES["optuna_importances.png"]})

    _index(out, df, written, notes, _headline(summary, floor, pairs, metric))
    return written


HEADLINE_PAIRS = 5  # the comparisons a headline names; compare.md holds them all


def verdicts(pairs: pd.DataFrame, metric: str) -> list[str]:
    """The headline's comparisons, one line each: the difference with its CI, P(a > b) and the verdict."""
    points, scale = (" points", 100.0) if is_accuracy(metric) else ("", 1.0)
    return [f"{row['a']} vs {row['b']}: {scale * row['diff']:+.2f}{points} "
            f"(95% CI {scale * row['diff_low']:+.2f} to {scale * row['diff_high']:+.2f}), "
            f"P(a > b) = {row['p_a_gt_b']:.2f}: {row['verdict']}" for _, row in pairs.head(HEADLINE_PAIRS).iterrows()]


def _headline(summary: pd.DataFrame, floor: pd.DataFrame | None, pairs: pd.DataFrame | None,
              metric: str) -> list[str]:
    """The numbers a reader wants first: each config's mean and spread, the best, and the
    comparisons' verdicts."""
    unit, scale = ("%", 100.0) if is_accuracy(metric) else ("", 1.0)
    name = plots.METRIC_NAMES.get(metric, metric)
    keys = [c for c in summary.columns if c not in ("n", *stats.describe([0.0]), "small_n")]

    def label(row) -> str:
        return config_label({k: row[k] for k in keys})

    best = summary["mean"].idxmax() if higher_is_better(metric) else summary["mean"].idxmin()
    lines = [f"## Headline: {name}", ""]
    for i, row in summary.iterrows():
        ci = (f"95% CI {scale * row['t_low']:.2f} to {scale * row['t_high']:.2f}{unit}" if row["n"] > 1
              else "one run: no CI")
        flag = " (small n)" if row["small_n"] else ""
        lines.append(f"- {'**best** ' if i == best and len(summary) > 1 else ''}{label(row)}: "
                     f"{scale * row['mean']:.2f}{unit} ± {scale * row['std']:.2f} (std), n = {row['n']}{flag}; {ci}")
    if floor is not None and len(floor):
        for _, row in floor.iterrows():
            if row["std"] > 0 and row["floor_std"] == row["floor_std"]:
                share = (row["floor_std"] / row["std"]) ** 2
                lines.append(f"- test-set sampling noise explains {100 * min(share, 1):.0f}% of the variance of "
                             f"test accuracy" + (f" in {label(row)}" if len(floor) > 1 else ""))
    if pairs is not None:
        lines += [f"- {line}" for line in verdicts(pairs, metric)]
        if len(pairs) > HEADLINE_PAIRS:
            lines.append(f"- {len(pairs) - HEADLINE_PAIRS} more pairs in compare.md")
    return [*lines, ""]


def _index(out: Path, df: pd.DataFrame, written: list[dict[str, str]], notes: list[str],
           headline: list[str]) -> None:
    n_complete = int((df["status"] == COMPLETE).sum())
    modified = from_modified_tree(df)
    left_out = describe_problems(df)
    lines = [f"# Analysis of {', '.join(df.attrs.get('roots', [])) or 'runs'}", "", *headline,
             f"{n_complete} complete runs" + (f"; left out of every statistic: {left_out} (problems.csv)"
                                             if left_out else "") + "."]
    if modified:
        lines += ["", f"{modified} runs came from a modified tree: each record's provenance.source_diff, with its "
                      f"git_commit, rebuilds its code."]
    constants = df.attrs.get("constants", {})
    if constants:
        shared = pd.DataFrame({"key": list(constants), "value": [show(v) for v in constants.values()]})
        lines += ["", "## Config shared by every run", "", markdown(shared)]
    lines += ["", "## Files", ""]
    lines += [f"- [{w['file']}]({w['file']}): {w['what']}" for w in written]
    lines += [f"- {n}" for n in notes]
    lines += [""] + [f"![{w['file']}]({w['file']})" for w in written if w["file"].endswith(".png")]
    (out / REPORT).write_text("\n".join(lines) + "\n")
    written.append({"file": REPORT, "what": REPORT_FILES[REPORT]})
