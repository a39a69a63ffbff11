"""The one entry point: `python run.py [overrides]`, or `python run.py -m [sweep overrides]`."""

import logging
import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from neuralforge import commandline, hardware, sweeps
from neuralforge.engine import train
from neuralforge.record.atomic import write_text
from neuralforge.record.errors import DiskFullError, DivergedError, LockedError, NeuralForgeError
from neuralforge.record.files import HYDRA, REFUSED, RESULTS
from neuralforge.trackers.live import Live

log = logging.getLogger("neuralforge")
TRAINED = (DivergedError, DiskFullError)  # errors of a run that trained: its log keeps them
# A Ctrl-C on a joblib sweep leaves joblib's semaphores to its resource tracker, a process of its
# own, whose warning about them says nothing to do: the interrupt's one line says what to do.
os.environ.setdefault("PYTHONWARNINGS", "ignore:resource_tracker:UserWarning")


def _one_line_errors(kind, err, tb):
    # Hydra reports a failed job through sys.excepthook: the harness's own errors say what
    # to change in one line; anything else keeps its traceback.
    if isinstance(err, NeuralForgeError):
        print(f"error: {err}", file=sys.stderr)
    else:
        sys.__excepthook__(kind, err, tb)


# What Hydra itself instantiates from the config: the sweep callback and the trackers' export at
# the end (the engine and the Optuna sweeper pass their own whitelists).
@hydra.main(config_path="conf", config_name="config", execution_whitelist=["neuralforge.sweeps.SweepCallback",
                                                                         "analysis.export.ExportAtEnd"])
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    if hc.mode == RunMode.RUN:  # a sweep's hint is set by its callback, in the process a Ctrl-C stops
        sweeps.relaunch[:] = [f"the same command with hydra.run.dir={hc.runtime.output_dir} resumes from the "
                              f"last finished epoch"]
        if hc.sweeper.get("params"):
            log.warning("This config defines a sweep (hydra.sweeper.params) but runs without -m: one run of its "
                        "base config trains. Add -m to sweep.")
    # joblib runs n_jobs jobs at once on this machine, they share its cores; a search that asks
    # one trial at a time runs one, even on joblib
    parallel = hardware.jobs_at_once(hc.launcher.get("n_jobs", 1), hc.sweeper.get("n_jobs"))
    listeners = []
    if cfg.trial is not None:  # a search's trial reports each epoch to its study, whose pruner may stop it
        from neuralforge.search.trial import Reporter, is_trial  # Optuna, imported by the runs that use it
        if is_trial(cfg, hc.sweeper):
            listeners.append(Reporter.for_job(cfg, hc.sweeper))
    try:
        # the trackers (logger=), live: a missing package is refused here, before anything is written
        with Live(cfg.logger, hc.runtime.output_dir, list(hc.overrides.task)) as live:
            return train(cfg, hc.runtime.output_dir, overrides=list(hc.overrides.task), parallel_jobs=parallel,
                         listeners=[*listeners, live])
    except NeuralForgeError as err:
        folder = Path(hc.runtime.output_dir)
        if not isinstance(err, TRAINED):
            _close_job_log(folder)  # a refusal changes nothing of the folder: Hydra's traceback stays out of its log
        if hc.mode == RunMode.RUN:
            sweeps.restore_hydra_files()
            _discard_hydra_only(folder, {HYDRA, f"{hc.job.name}.log"})
        elif not isinstance(err, LockedError) and not any(folder.rglob(RESULTS)):
            # a sweep's job keeps its folder, with why it was refused: the sweep counts it as
            # failed, not as a job that was stopped
            write_text(folder / REFUSED, f"{err}\n")
        raise


def _close_job_log(folder: Path) -> None:
    """Detach and close the handlers that write into the job's log in `folder`."""
    for handler in list(logging.getLogger().handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == folder.resolve():
            logging.getLogger().removeHandler(handler)
            handler.close()


def _discard_hydra_only(folder: Path, hydra_files: set[str]) -> None:
    """Remove a refused run's folder when it holds nothing but what Hydra wrote as it started,
    and the date folder above it once that is empty."""
    logging.shutdown()  # closes run.log
    if not folder.is_dir() or not set(os.listdir(folder)) <= hydra_files:
        return
    shutil.rmtree(folder, ignore_errors=True)
    for parent in list(folder.parents)[:2]:  # outputs/<date>/, then outputs/
        try:
            parent.rmdir()
        except OSError:  # not empty, or not ours to remove
            break


if __name__ == "__main__":
    sys.excepthook = _one_line_errors
    mistake = commandline.problem(sys.argv[1:], Path(__file__).resolve().parent / "conf")
    if mistake:
        print(f"error: {mistake}", file=sys.stderr)
        sys.exit(1)
    try:
        main()
    except BrokenPipeError:  # | head stopped reading the help or a config: nothing went wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except KeyboardInterrupt:
        # every finished epoch is in last.pt: the run is resumable, not failed
        print(f"interrupted: {sweeps.relaunch[0] if sweeps.relaunch else 'no run had started'}", file=sys.stderr)
        sys.exit(130)
    if sweeps.incomplete:
        print(f"error: {sweeps.incomplete[-1]}", file=sys.stderr)
        sys.exit(1)
