"""The conditions of `python run.py -m +experiment=anatomy`: one group of runs per source of
randomness, in which only that source varies.

Each condition is an option of the `anatomy` config group (conf/anatomy/). A job records its
option among its overrides (`anatomy=init`), which is how analysis tells the conditions apart:
the threads pair repeats the config and seeds of all's first run, on other thread counts.
Torch-free: analysis reads the same rules.
"""

from __future__ import annotations

# what varies between a condition's runs, in the order a table lists them
CONDITIONS = {
    "init": "seeds.init (initial weights)",
    "order": "seeds.order (order of the training data)",
    "split": "seeds.split (which images are held out for validation)",
    "augment": "seeds.augment (the random shifts)",
    "dropout": "seeds.dropout (the dropout masks)",
    "all": "every seed, as a plain seed sweep",
    "perturb": "one bit of one initial weight (init_perturb), no seed",
    "threads_1": "nothing: the base run on 1 thread",
    "threads_2": "nothing: the base run on 2 threads",
}
THREADS = ("threads_1", "threads_2")


def left_out(shift: int, dropout: float) -> dict[str, str]:
    """The conditions that cannot vary for a recipe, with why."""
    out = {}
    if not shift:
        out["augment"] = "data.augment.shift=0 draws no shifts"
    if not dropout:
        out["dropout"] = "model.dropout=0 draws no dropout masks"
    return out


def conditions(shift: int, dropout: float) -> str:
    """The conditions a recipe can vary, as the sweep's choices ("init,order,...")."""
    skipped = left_out(shift, dropout)
    return ",".join(c for c in CONDITIONS if c not in skipped)


def condition_of(overrides: str) -> str | None:
    """The condition a run was launched as, from its overrides ("anatomy=init ...")."""
    for override in overrides.split():
        key, _, value = override.partition("=")
        if key.lstrip("+") == "anatomy":
            return value
    return None
