"""python -m analysis {summary,compare,variance,stability,problems,anatomy,race,report} FOLDER... [options]
python -m analysis export {mlflow,tensorboard,wandb} FOLDER... [options]

Tables print as markdown (accuracies in %, rounded); --csv writes the full-precision table.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the report's Optuna figures go through pyplot; no display is needed

import pandas as pd

from analysis import glossary, plots, racing, tables
from analysis.anatomy import anatomy
from analysis.collect import (
    MANIFEST,
    REPEAT,
    RESULTS,
    collect,
    complete,
    describe_problems,
    from_modified_tree,
    problems,
)
from analysis.errors import AnalysisError
from analysis.markdown import markdown
from analysis.report import NOTES, report
from analysis.variance import variance
from neuralforge.record.atomic import atomic_write
from neuralforge.record.schema import COMPLETE
from neuralforge.record.trackers import TRACKERS


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return _run(args)
    except BrokenPipeError:
        # the reader stopped (| head): not an error of ours; stdout goes nowhere from here on,
        # so that Python's own flush at exit does not complain either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(args: argparse.Namespace) -> int:
    try:
        if getattr(args, "csv", None) and Path(args.csv).is_dir():  # before any table is printed
            raise AnalysisError(f"--csv {args.csv} is a folder: give a file, e.g. {Path(args.csv) / 'table.csv'}")
        df = collect(args.folders)
        if args.command not in ("problems", "export"):  # an export writes whatever the records hold
            complete(df)
            # the anatomy counts repeats in their own condition: each condition's base run is one run
            _warn(df if args.command != "anatomy" else df[df["status"] != REPEAT], args.folders)
        return args.run(df, args)
    except AnalysisError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        raise
    except OSError as err:  # --csv or -o where nothing can be written
        print(f"error: {err.strerror}: {err.filename}" if err.strerror else f"error: {err}", file=sys.stderr)
        return 1


EXAMPLES = """examples:
  python -m analysis summary multirun/widths
  python -m analysis compare multirun/widths --by model.hidden
  python -m analysis report  multirun/widths -o report/widths

Every command takes one or more folders and searches them for runs (results.json).
python -m analysis COMMAND --help lists a command's options; docs/analysis.md explains each column."""
GROUP_BY = "config key(s) that define a config (default: every swept key but the seeds)"
COMPARE_BY = "compare the values of this key, the other swept keys held equal (default: every pair of configs)"
METRIC = "a metric of results.json (default test_acc: test accuracy at the best-validation epoch)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis", description="Statistics of a sweep's runs.",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, run, text, by, metric, csv in [
        ("summary", _summary, "per config: n, mean, std, CIs, min, max; noise floor of test accuracy", "+", 1, 1),
        ("compare", _compare, "pairwise comparisons: difference, CIs, p-values, P(a > b), verdict", "1", 1, 1),
        ("variance", _variance, "variance by seed source (e.g. init vs data order)", "+", 1, 1),
        ("stability", _stability, "agreement of runs' test predictions: churn, kappa, ensemble", "+", 0, 1),
        ("problems", _problems, "runs left out: failed, pruned, stale, running, missing, unreadable, repeats", None,
         0, 0),
        ("anatomy", _anatomy, "spread per source of randomness (+experiment=anatomy), noise floor, anatomy.png",
         None, 1, 1),
        ("race", _race, "a race's rounds, and per config its seeds, mean, anytime-valid CI and status", None, 0, 1),
        ("report", _report, "markdown + CSV tables + PNG figures in one folder", "1", 1, 0),
    ]:
        c = sub.add_parser(name, help=text, description=text)
        c.set_defaults(run=run)
        c.add_argument("folders", nargs="+", metavar="FOLDER", help="sweep or run folders, searched recursively")
        if metric:
            c.add_argument("--metric", default="test_acc", help=METRIC)
        if by == "+":
            c.add_argument("--by", nargs="+", metavar="KEY", help=GROUP_BY)
        elif by == "1":
            c.add_argument("--by", metavar="KEY", help=COMPARE_BY)
        if name != "problems":
            c.add_argument("--seed", type=_seed, default=0, help="seed of the bootstraps (default 0)")
        if csv:
            c.add_argument("--csv", metavar="FILE", help="also write the table, at full precision, to FILE")
        if name == "compare":
            c.add_argument("--all", action="store_true", help="show every column (p-values, effect sizes, power, "
                                                              "paired test); --csv always writes them all")
        if name == "summary":
            c.add_argument("--all", action="store_true", help="show every column (the std's interval, SEM, median, "
                                                              "range, Student's t interval); --csv writes them all")
        if name == "anatomy":
            c.add_argument("-o", "--out", default="anatomy.png", help="where to draw the figure (default: anatomy.png)")
        if name == "report":
            c.add_argument("-o", "--out", default="report", help="output folder (default: report)")
            c.add_argument("--study", help="the Optuna study to plot, when the storage holds several")
    c = sub.add_parser("export", help=EXPORT, description=EXPORT)
    c.set_defaults(run=_export)
    c.add_argument("tracker", choices=TRACKERS, help="the tracker to write into")
    c.add_argument("folders", nargs="+", metavar="FOLDER", help="sweep or run folders, searched recursively")
    c.add_argument("--metric", default="test_acc", help=METRIC)
    c.add_argument("--seed", type=_seed, default=0, help="seed of the bootstraps (default 0)")
    for option, key, text in EXPORT_OPTIONS:
        c.add_argument(option, dest=key, metavar="VALUE", help=text)
    return p


EXPORT = "write the records into MLflow, TensorBoard or W&B, with each config's statistics (docs/trackers.md)"
EXPORT_OPTIONS = [  # each the logger group's key of that name (conf/logger/), whose default it keeps
    ("--tracking-uri", "tracking_uri",
     "mlflow: the tracking URI (default sqlite:///mlflow.db beside the sweep folder)"),
    ("--experiment", "experiment", "mlflow: the experiment (default neuralforge)"),
    ("--logdir", "dir", "tensorboard: the log folder; wandb: where its runs go (default: beside the sweep folder)"),
    ("--project", "project", "wandb: the project (default neuralforge)"),
    ("--mode", "mode", "wandb: offline (default) or online"),
]


def _export(df: pd.DataFrame, args) -> int:
    from analysis.export import export  # the tracker's client, imported by the command that uses it

    node = {key: getattr(args, key) for _, key, _ in EXPORT_OPTIONS if getattr(args, key) is not None}
    done = export(df, args.tracker, node, metric=args.metric, seed=args.seed)
    print(f"exported {done['runs']} runs, {done['configs']} configs and {done['sweeps']} sweeps to {args.tracker}")
    return 0


def _summary(df: pd.DataFrame, args) -> int:
    table = tables.summarize(df, args.metric, by=args.by, seed=args.seed)
    shown = table if args.all else tables.compact_summary(table)
    _show(f"{args.metric} per config", shown, csv_table=table, csv=args.csv)
    print(f"\n{glossary.explain(shown.columns)}")
    if not args.all:
        print("\n(--all shows the std's interval, the SEM, the median, the range and Student's t interval)")
    try:
        floor = tables.noise_floor(df, by=args.by)
    except AnalysisError as err:
        print(f"\nnoise floor not computed: {err}")
    else:
        if len(floor):
            _show("noise floor of test accuracy (std vs. test-set sampling noise)", floor)
    return 0


def _compare(df: pd.DataFrame, args) -> int:
    pairs = tables.compare(df, by=args.by, metric=args.metric, seed=args.seed)
    _show(f"{args.metric}: a vs b" + (f" along {args.by}" if args.by else ""),
          pairs if args.all else tables.compact(pairs), csv_table=pairs, csv=args.csv)
    if not args.all:
        print("\n(--all shows p-values, effect sizes and the runs needed for 80% power)")
    return 0


def _variance(df: pd.DataFrame, args) -> int:
    table = variance(df, args.metric, by=args.by)
    if table.empty:
        print("\n".join(table.attrs["notes"]), file=sys.stderr)
        return 1
    _show(f"variance of {args.metric} by source", table, args.csv)
    for note in table.attrs["notes"]:
        print(f"note: {note}")
    return 0


def _stability(df: pd.DataFrame, args) -> int:
    table = tables.stability(df, by=args.by)
    if table.empty:
        raise AnalysisError("no complete run left predictions.npy")
    _show("agreement of test predictions within each config", table, args.csv)
    return 0


def _anatomy(df: pd.DataFrame, args) -> int:
    found = anatomy(df, args.metric, seed=args.seed)
    _show(f"{args.metric} per condition: only the named source varies", found.table, args.csv)
    print(f"\n{NOTES['anatomy']}\n{glossary.explain(found.table.columns)}")
    if len(found.pairs):
        _show("distance between paired runs", found.pairs)
        print(f"\n{NOTES['anatomy_pairs']}\n{glossary.explain(found.pairs.columns)}")
    _show("runs per config to tell two configs apart (80% power, 5% two-sided), from all's std",
          found.seeds_needed)
    for note in found.notes:
        print(f"note: {note}")
    plots.anatomy(found.values, found.table, args.metric, Path(args.out), args.seed)
    print(f"\nwrote {args.out}")
    return 0


def _seed(text: str) -> int:
    if not text.isdigit():  # numpy's generators take no negative seed
        raise argparse.ArgumentTypeError(f"a seed is a whole number >= 0, got {text!r}")
    return int(text)


def _problems(df: pd.DataFrame, args) -> int:
    if df.empty:
        raise AnalysisError(f"no {RESULTS} or {MANIFEST} under {', '.join(args.folders)}")
    listed = problems(df)
    if listed.empty:
        print(f"all {len(df)} runs complete")
    else:
        print(markdown(listed))
    return 0


def _race(df: pd.DataFrame, args) -> int:
    for folder in args.folders:
        rules, manifest, found = racing.read(folder)
        metric = manifest["race"]["settings"]["metric"]
        print(f"\n## race in {folder}: {metric}, {rules.method} sequences at alpha {rules.alpha} / "
              f"{len(found.standings)} configs\n")
        for r in found.rounds:
            print(racing.round_line(r, len(found.standings), metric))
        print(racing.end_line(found))
        _show(f"{metric} per config", racing.table(found, metric), args.csv)
    return 0


def _report(df: pd.DataFrame, args) -> int:
    written = report(df, args.out, by=args.by, metric=args.metric, seed=args.seed, study=args.study)
    print(f"wrote {len(written)} files to {Path(args.out)}/ (start with report.md)")
    return 0


def _show(title: str, table: pd.DataFrame, csv: str | None = None, csv_table: pd.DataFrame | None = None) -> None:
    print(f"\n## {title}\n")
    print(markdown(table))
    if csv:  # whole or not at all
        full = table if csv_table is None else csv_table
        atomic_write(Path(csv), lambda f: full.to_csv(f, index=False))


def _warn(df: pd.DataFrame, folders: list[str]) -> None:
    left_out = describe_problems(df)
    if left_out:
        print(f"note: left out of every statistic: {left_out} "
              f"(python -m analysis problems {' '.join(folders)})", file=sys.stderr)
    modified = from_modified_tree(df)
    if modified:
        print(f"note: {modified} runs came from a modified tree: each record's provenance.source_diff, with its "
              f"git_commit, rebuilds its code", file=sys.stderr)
    chose_on_test = int(((df["status"] == COMPLETE) & (df["selection"] == "test_acc")).sum())
    if chose_on_test:
        print(f"note: {chose_on_test} runs chose their epoch on test accuracy (data.val_size=0): "
              f"their test_acc is optimistic", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
