"""The one entry point: `python run.py [overrides]`, or `python run.py -m [sweep overrides]`."""

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from neuralforge import hardware, sweeps
from neuralforge.engine import train
from neuralforge.errors import NeuralForgeError

log = logging.getLogger("neuralforge")


def _one_line_errors(kind, err, tb):
    # Hydra reports a failed job through sys.excepthook: the harness's own errors say what
    # to change in one line; anything else keeps its traceback.
    if isinstance(err, NeuralForgeError):
        print(f"error: {err}", file=sys.stderr)
    else:
        sys.__excepthook__(kind, err, tb)


# What Hydra itself instantiates from the config: the sweep callback (the engine and the
# Optuna sweeper pass their own whitelists).
@hydra.main(config_path="conf", config_name="config", execution_whitelist=["neuralforge.sweeps.SweepCallback"])
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
    reporter = None
    if cfg.trial is not None:  # a search's trial reports each epoch to its study, whose pruner may stop it
        from neuralforge.search import Reporter  # Optuna, imported by the runs that use it
        reporter = Reporter.for_job(cfg, hc.sweeper)
    return train(cfg, hc.runtime.output_dir, overrides=list(hc.overrides.task), parallel_jobs=parallel,
                 on_epoch_end=reporter)


if __name__ == "__main__":
    sys.excepthook = _one_line_errors
    try:
        main()
    except KeyboardInterrupt:
        # every finished epoch is in last.pt: the run is resumable, not failed
        print(f"interrupted: {sweeps.relaunch[0] if sweeps.relaunch else 'no run had started'}", file=sys.stderr)
        sys.exit(130)
    if sweeps.incomplete:
        print(f"error: {sweeps.incomplete[-1]}", file=sys.stderr)
        sys.exit(1)
