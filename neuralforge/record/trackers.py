"""The experiment trackers that `logger=` and `python -m analysis export` name: each one's
package, which the optional extra of the same name installs (`pip install -e '.[mlflow]'`)."""

from __future__ import annotations

MODULES = {"mlflow": "mlflow", "tensorboard": "tensorboard", "wandb": "wandb"}  # tracker -> its package
TRACKERS = tuple(MODULES)
WANDB_MODES = ("offline", "online")
