"""Every file name the harness writes or reads, in one table: a run's, a group member's, a sweep's,
a search's and a report's. The table of files in docs/runs.md is generated from it.

Code names a file by its constant here, never by its spelling.
"""

from __future__ import annotations

from dataclasses import dataclass

# a run folder (a group's folder, or a single run's)
RESULTS = "results.json"
HISTORY = "history.csv"
PREDICTIONS = "predictions.npy"
BEST = "best.pt"
LAST = "last.pt"
LOCK = ".lock"
SOURCE_DIFF = "source.diff"
REFUSED = ".refused"
HYDRA = ".hydra"  # Hydra's record of the launch: config.yaml, overrides.yaml, hydra.yaml
LOG = "run.log"  # Hydra's job log, named after run.py
TEMP_SUFFIX = ".tmp"  # atomic writes' temporaries: .<name>.<random>.tmp
# a sweep or search folder
MANIFEST = "manifest.json"
OPTUNA_DB = "optuna.db"
OPTUNA_JOURNAL = "optuna.journal"
OPTIMIZATION_RESULTS = "optimization_results.yaml"
MULTIRUN = "multirun.yaml"
# a report folder
REPORT = "report.md"
# beside a sweep's folder (or a single run's): where the experiment trackers write by default
MLFLOW_DB = "mlflow.db"
MLFLOW_LOCK = f"{MLFLOW_DB}.lock"
MLFLOW_SERVER_LOCK = ".mlflow.lock"
MLFLOW_ARTIFACTS = "mlartifacts"
TENSORBOARD = "tensorboard"
WANDB = "wandb"


@dataclass(frozen=True)
class File:
    name: str
    where: str  # run, member, group, sweep, search or report
    holds: str


WHERE = {  # the table's sections, in order
    "run": "a run's folder (a single run, or a group's folder)",
    "member": "each member's folder of a group (`seed=<s>/`, or named by the source it varies)",
    "sweep": "a sweep's or search's folder",
    "report": "a report's folder (`python -m analysis report -o <folder>`)",
    "tracker": "the folder that holds a sweep's folder (or a single run's): the trackers' default place "
               "(`logger=`, `python -m analysis export`)",
}

TABLE: tuple[File, ...] = (
    File(RESULTS, "run", "the record analysis reads (its fields below); in a group, one per member instead"),
    File(HISTORY, "run", "one row per epoch, the columns below; in a group, one per member instead"),
    File(PREDICTIONS, "run", "the predicted test labels (uint8) at the chosen epoch, once the run is complete"),
    File(BEST, "run", "the weights at the chosen epoch, under the model's own names, with the resolved config"),
    File(LAST, "run", "everything a resume needs: model, optimizer, scheduler, generators, members' progress, "
                      "fingerprint, data checksums; a group's is shared by its members"),
    File(LOCK, "run", "held while a process trains here: pid, host and, under SLURM, the job"),
    File(SOURCE_DIFF, "run", "only for a run from a tree with uncommitted changes: the diff against its commit"),
    File(REFUSED, "run", "only in a sweep's job refused before training (a bad value): why"),
    File(HYDRA, "run", "Hydra's record of the launch (config, overrides)"),
    File(LOG, "run", "the job's log"),
    File(RESULTS, "member", "the member's record"),
    File(HISTORY, "member", "the member's epochs"),
    File(PREDICTIONS, "member", "the member's test predictions"),
    File(BEST, "member", "the member's weights at its chosen epoch"),
    File(MANIFEST, "sweep", "the jobs the sweep expects, with their overrides and folders"),
    File(MULTIRUN, "sweep", "Hydra's record of the multirun command"),
    File(OPTUNA_DB, "sweep", "a search's Optuna study (the default storage, SQLite)"),
    File(OPTUNA_JOURNAL, "sweep", "a search's Optuna study, where hydra.sweeper.storage=journal:<path> names it"),
    File(OPTIMIZATION_RESULTS, "sweep", "a search's best trial, or its Pareto front"),
    File(REPORT, "report", "the index: headline, files, figures"),
    File("runs.csv", "report", "every run found, one row each, with its status"),
    File("problems.csv", "report", "runs left out of every statistic: failed, pruned, stale, running, missing, "
                                   "unreadable, repeats"),
    File("summary.md", "report", "per-config statistics, noise floor, selection optimism"),
    File("summary.csv", "report", "the metric per config"),
    File("noise_floor.csv", "report", "observed std of test accuracy beside the test-set noise floor"),
    File("optimism.csv", "report", "selection optimism per config"),
    File("expected_max.csv", "report", "expected best of n runs of the metric, per config and n"),
    File("compare.md", "report", "pairwise comparisons of configs"),
    File("compare.csv", "report", "pairwise comparisons of configs, every column"),
    File("variance.md", "report", "variance components by seed source"),
    File("variance.csv", "report", "variance components by seed source"),
    File("stability.md", "report", "agreement between runs of a config"),
    File("stability.csv", "report", "agreement between runs of a config"),
    File("churn.png", "report", "pairwise disagreement heat map per config"),
    File("anatomy.md", "report", "spread per source of randomness, beside all and the noise floor"),
    File("anatomy.csv", "report", "the metric per anatomy condition"),
    File("anatomy_pairs.csv", "report", "distance between paired runs of the anatomy"),
    File("anatomy.png", "report", "each condition's runs beside all's, noise floor marked"),
    File("distribution.png", "report", "the metric of every run, per config"),
    File("curves.png", "report", "learning curves, mean ± std per config"),
    File("ecdf.png", "report", "ECDF of the metric per config"),
    File("expected_max.png", "report", "expected best of n runs"),
    File("optuna_history.png", "report", "a search's optimisation history"),
    File("optuna_importances.png", "report", "a search's hyperparameter importances (PED-ANOVA)"),
    File("optuna_pareto.png", "report", "a multi-objective search's Pareto front"),
    File("race.md", "report", "a race's rounds and standing"),
    File("race.csv", "report", "a race's standing: per config its seeds, mean, anytime-valid CI, status"),
    File("race.png", "report", "a race: each config's interval against seeds spent"),
    File(MLFLOW_DB, "tracker", "MLflow's SQLite store (logger.mlflow.tracking_uri unset)"),
    File(MLFLOW_LOCK, "tracker", "held while a process writes to that store: parallel jobs take turns"),
    File(MLFLOW_SERVER_LOCK, "tracker", "held while a process finds or creates its runs on a tracking server"),
    File(MLFLOW_ARTIFACTS, "tracker", "MLflow's artifacts: each sweep's compare.md and compare.csv"),
    File(TENSORBOARD, "tracker", "TensorBoard's event files, sweep/config/seed (logger.tensorboard.dir unset)"),
    File(WANDB, "tracker", "W&B's offline runs, for wandb sync (logger.wandb.dir unset)"),
)
REPORT_FILES = {f.name: f.holds for f in TABLE if f.where == "report"}


def markdown() -> str:
    """The table for docs/runs.md."""
    lines = []
    for where, title in WHERE.items():
        lines += ["", f"In {title}:", "", "| file | holds |", "| --- | --- |"]
        lines += [f"| `{f.name}` | {f.holds} |" for f in TABLE if f.where == where]
    return "\n".join(lines[1:])
