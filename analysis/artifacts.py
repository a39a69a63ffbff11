"""What a run leaves beside results.json, read only when an analysis needs it: the learning
curve (history.csv), the predicted test labels (predictions.npy) and the true test labels
(found through the run's config: the MNIST family's IDX file, read here; other datasets
through neuralforge.data, which loads torch only then).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from neuralforge.record.datasets import IDX_FILES, LABEL_MAGIC, dataset, idx_folder
from neuralforge.record.files import HISTORY, PREDICTIONS
from neuralforge.record.schema import read_results


def histories(runs: pd.DataFrame) -> pd.DataFrame:
    """The learning curves of `runs`, stacked, with the run's folder as a column."""
    frames = [pd.read_csv(Path(folder) / HISTORY).assign(folder=folder) for folder in runs["folder"]
              if (Path(folder) / HISTORY).exists()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def predictions(runs: pd.DataFrame) -> tuple[list[str], np.ndarray | None]:
    """The runs that have predictions, and those predictions as a (runs, test examples) array."""
    folders, preds = [], []
    for folder in runs["folder"]:
        path = Path(folder) / PREDICTIONS
        if path.exists():
            folders.append(folder)
            preds.append(np.load(path))
    if not preds:
        return [], None
    if len({p.shape for p in preds}) > 1:
        raise AnalysisError(f"predictions of different lengths in {', '.join(folders)}: not one test set")
    return folders, np.stack(preds)


def test_labels(folder: str | Path) -> np.ndarray:
    """The true test labels of the run in `folder`, from the files it was evaluated on."""
    rec = read_results(Path(folder))
    if rec is None:
        raise AnalysisError(f"{folder} holds no record")
    data = rec.config["data"]
    if dataset(data["name"]).files != "idx":
        return _dataset_labels(json.dumps(data, sort_keys=True))
    return _read_labels(str(idx_folder(data["name"], data["root"]) / IDX_FILES["test_labels"]))


@functools.lru_cache(maxsize=8)
def _dataset_labels(data_json: str) -> np.ndarray:
    from neuralforge import data  # torch, for the datasets torchvision or torch.load read
    from neuralforge.record.errors import DataError

    try:
        labels = data.test_labels(json.loads(data_json))
    except (DataError, OSError) as err:
        raise AnalysisError(f"test labels not readable ({err}): analyses that need them are skipped") from None
    labels.flags.writeable = False  # shared through the cache
    return labels


@functools.lru_cache(maxsize=8)
def _read_labels(path: str) -> np.ndarray:
    try:
        blob = Path(path).read_bytes()
    except OSError as err:
        raise AnalysisError(f"test labels not readable at {path} ({err.strerror}): "
                            f"analyses that need them are skipped") from None
    magic, n = int.from_bytes(blob[:4], "big"), int.from_bytes(blob[4:8], "big")
    labels = np.frombuffer(blob, dtype=np.uint8, offset=8)
    if magic != LABEL_MAGIC or len(labels) != n:
        raise AnalysisError(f"{path} is not an IDX label file (magic {magic}, {len(labels)} labels for {n})")
    labels.flags.writeable = False  # shared through the cache
    return labels
