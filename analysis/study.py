"""The Optuna study of a hyperparameter search, when the sweep folder holds its storage: a
SQLite ``*.db`` or a journal file (``optuna.journal``, or a ``*.log`` whose lines are journal
operations; Hydra's own job logs are not)."""

from __future__ import annotations

import json
import sqlite3
import warnings
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

from analysis.errors import AnalysisError
from analysis.plots import DPI
from neuralforge.record.study import StudyAttr

if TYPE_CHECKING:
    import optuna
    from matplotlib.axes import Axes
    from optuna.storages import BaseStorage

# PED-ANOVA compares the top trials' parameter density with all trials': with fewer complete
# trials than this its shares are mostly noise
FEW_TRIALS = 20


def find_storages(folder: str | Path) -> list[tuple[str, str | BaseStorage]]:
    """(file, storage) for each Optuna storage directly in `folder`."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    folder = Path(folder)
    found: list[tuple[str, str | BaseStorage]] = []
    for db in sorted(folder.glob("*.db")):
        if _is_optuna_db(db):
            found.append((str(db), f"sqlite:///{db.resolve()}"))
    journals = [folder / "optuna.journal", *sorted(folder.glob("*.log"))]
    for journal in journals:
        if journal.is_file() and _is_journal(journal):
            found.append((str(journal), optuna.storages.JournalStorage(JournalFileBackend(str(journal)))))
    return found


def load(folders: list[str | Path], name: str | None = None) -> optuna.Study | None:
    """The one study in the storages under `folders` (or the one called `name`); None when
    there is no storage."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    candidates = []
    for folder in folders:
        for file, storage in find_storages(folder):
            for study in optuna.study.get_all_study_names(storage):
                if name is None or study == name:
                    candidates.append((file, storage, study))
    if not candidates:
        if name is not None:
            raise AnalysisError(f"no Optuna study named {name!r} in {', '.join(map(str, folders))}")
        return None
    if len(candidates) > 1:
        listed = ", ".join(f"{study} ({file})" for file, _, study in candidates)
        raise AnalysisError(f"several Optuna studies ({listed}): choose one with --study NAME")
    file, storage, study = candidates[0]
    return optuna.load_study(study_name=study, storage=storage)


def plot(study, history_path: Path, importance_path: Path) -> list[str]:
    """Optimisation history and parameter importances (PED-ANOVA: no scikit-learn needed).
    Returns notes on what could not be drawn."""
    import optuna
    from matplotlib.ticker import MaxNLocator, PercentFormatter
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.visualization import matplotlib as vis

    notes = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # Given a target, Optuna drops the best-so-far line: the axis is relabelled instead.
        ax = vis.plot_optimization_history(study, target_name="objective")
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("trial")
        # The harness's objective: validation accuracy, averaged over a trial's seeds
        ax.set_ylabel("objective: validation accuracy (%)")
        _save(ax, history_path)
        try:
            # No target: given one, PED-ANOVA assumes lower is better; left alone it reads the
            # study's direction. Importances are shares, the same for any scale of the objective.
            ax = vis.plot_param_importances(study, evaluator=PedAnovaImportanceEvaluator())
        except (ValueError, RuntimeError) as err:
            notes.append(f"parameter importances not drawn: {err}")
        else:
            ax.set_xlabel("importance (PED-ANOVA, share of total)")
            done = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
            if done < FEW_TRIALS:
                ax.set_title(f"Hyperparameter importances from only {done} complete trials: a rough guide",
                             fontsize=10)
                notes.append(f"parameter importances come from only {done} complete trials (under {FEW_TRIALS}): "
                             f"a rough guide")
            ax.set_ylabel("hyperparameter")
            _save(ax, importance_path)
    return notes


def plot_pareto(study, path: Path) -> list[str]:
    """The trials of a multi-objective study in its objectives' space, the Pareto front marked.
    Returns notes on what could not be drawn."""
    import optuna
    from optuna.visualization import matplotlib as vis

    names = study.user_attrs.get(StudyAttr.CONFIG, {}).get("objective")
    names = names if isinstance(names, list) and len(names) == len(study.directions) else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            ax = vis.plot_pareto_front(study, target_names=names)
        except ValueError as err:  # more than three objectives
            return [f"Pareto front not drawn: {err}"]
        _save(ax, path)
    return []


def _is_optuna_db(path: Path) -> bool:
    # Opening an arbitrary .db through Optuna would create Optuna's tables in it: look first.
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as con:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error:
        return False
    return {"studies", "trials"} <= tables


def _is_journal(path: Path) -> bool:
    try:
        with path.open() as f:
            first = json.loads(f.readline())
    except (OSError, ValueError):
        return False
    return isinstance(first, dict) and "op_code" in first


def _save(ax: Axes, path: Path) -> None:
    import matplotlib.pyplot as plt  # Optuna draws on pyplot's figures, which pyplot must close

    fig = ax.get_figure(root=True)
    assert fig is not None  # an Axes that Optuna drew is on a figure
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
