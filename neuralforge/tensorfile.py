"""A dataset of one's own in one file (data=tensors data.path=...): its arrays, checked.

The file holds train_x, train_y, test_x and test_y: a .npz (numpy.savez, read without
pickles) or a .pt (a dict of tensors, read with torch.load(weights_only=True)). Images are
(N, H, W), (N, H, W, C) or (N, C, H, W), uint8 (0..255) or float; labels are integers
from 0. Each problem is refused in one line that names the file and the array.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from neuralforge.record.errors import DataError

KEYS = ("train_x", "train_y", "test_x", "test_y")
CHANNELS = (1, 3, 4)  # what a last axis of this size is taken for: grey, RGB, RGBA


def read(path: str | Path, num_classes: int | None) -> tuple[dict[str, torch.Tensor], int]:
    """The four arrays as tensors, images (N, C, H, W) and labels int64, and the class count:
    num_classes, or one more than the largest training label."""
    path = Path(path)
    arrays = _load(path)
    missing = [k for k in KEYS if k not in arrays]
    if missing:
        held = ", ".join(sorted(arrays)) or "nothing"
        raise DataError(f"data.path={path} lacks {', '.join(missing)} (it holds {held}): a tensors file holds "
                        f"{', '.join(KEYS)}")
    out = {}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        out[f"{split}_x"], out[f"{split}_y"] = _images(path, f"{split}_x", x), _labels(path, f"{split}_y", y)
        if len(out[f"{split}_x"]) != len(out[f"{split}_y"]):
            raise DataError(f"data.path={path}: {split}_x holds {len(out[f'{split}_x'])} images but {split}_y "
                            f"{len(out[f'{split}_y'])} labels; they must be as many")
        if len(out[f"{split}_x"]) == 0:
            raise DataError(f"data.path={path}: {split}_x holds no images")
    if out["train_x"].shape[1:] != out["test_x"].shape[1:]:
        raise DataError(f"data.path={path}: train_x images are (C, H, W) = {tuple(out['train_x'].shape[1:])} but "
                        f"test_x images {tuple(out['test_x'].shape[1:])}; they must be alike")
    if out["train_x"].dtype != out["test_x"].dtype:
        raise DataError(f"data.path={path}: train_x is {out['train_x'].dtype} but test_x {out['test_x'].dtype}; "
                        f"give both as uint8 or both as float")
    n = num_classes if num_classes is not None else int(out["train_y"].max()) + 1
    for key in ("train_y", "test_y"):
        top = int(out[key].max())
        if top >= n:
            said = f"data.num_classes={n}" if num_classes is not None else f"train_y's labels are 0..{n - 1}"
            raise DataError(f"data.path={path}: {key} holds label {top}, out of range ({said})")
    return out, n


def _load(path: Path) -> dict[str, object]:
    if not path.is_file():
        raise DataError(f"data.path={path}: no such file (give a .npz or .pt file holding {', '.join(KEYS)})")
    if path.suffix == ".npz":
        if not zipfile.is_zipfile(path):  # numpy would take it for a pickle, and say so misleadingly
            raise DataError(f"data.path={path} is not a valid .npz file (not the zip archive numpy.savez writes): "
                            f"write it with numpy.savez(path, train_x=..., train_y=..., test_x=..., test_y=...)")
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
            raise DataError(f"data.path={path} is not a readable .npz file of plain arrays "
                            f"({type(err).__name__}: {_first_line(err)})") from None
    if path.suffix == ".pt":
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise DataError(f"data.path={path} is refused: it holds more than tensors and primitives "
                            f"(weights_only load failed: {_first_line(err)})") from None
        except Exception as err:  # torch's unpickler raises many kinds on junk
            raise DataError(f"data.path={path} is unreadable ({type(err).__name__}: {_first_line(err)})") from None
        if not isinstance(obj, dict):
            raise DataError(f"data.path={path} holds a {type(obj).__name__}, not a dict of {', '.join(KEYS)}")
        return obj
    raise DataError(f"data.path={path}: a tensors file is a .npz or a .pt, not {path.suffix or 'a file without one'}")


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0]


def _tensor(path: Path, key: str, value: object) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "uif":
            raise DataError(f"data.path={path}: {key} holds {value.dtype} values, not numbers")
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, torch.Tensor):
        return value
    raise DataError(f"data.path={path}: {key} is a {type(value).__name__}, not an array")


def _images(path: Path, key: str, value: object) -> torch.Tensor:
    x = _tensor(path, key, value)
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise DataError(f"data.path={path}: {key} is {x.dtype}; give images as uint8 (0..255) or float")
    if x.dim() == 3:
        x = x.unsqueeze(1)
    elif x.dim() == 4 and x.shape[-1] in CHANNELS and x.shape[1] not in CHANNELS:
        x = x.permute(0, 3, 1, 2)  # HWC to CHW
    elif x.dim() != 4:
        raise DataError(f"data.path={path}: {key} has shape {tuple(x.shape)}; give images as (N, H, W), "
                        f"(N, H, W, C) or (N, C, H, W)")
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise DataError(f"data.path={path}: {key} holds NaN or infinite values")
    return x.contiguous()


def _labels(path: Path, key: str, value: object) -> torch.Tensor:
    y = _tensor(path, key, value)
    if y.is_floating_point() or y.dtype == torch.bool:
        raise DataError(f"data.path={path}: {key} is {y.dtype}; give class labels as integers 0..C-1")
    if y.dim() != 1:
        raise DataError(f"data.path={path}: {key} has shape {tuple(y.shape)}; give labels as (N,)")
    if len(y) and int(y.min()) < 0:
        raise DataError(f"data.path={path}: {key} holds label {int(y.min())}; labels start at 0")
    return y.long()
