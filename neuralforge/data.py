"""Datasets as normalized tensors on the training device, their validation split, and
batched augmentation.

torchvision's dataset classes read (and download) MNIST, Fashion-MNIST, KMNIST, CIFAR-10,
CIFAR-100 and SVHN; a dataset of one's own is one file (data=tensors, see tensorfile.py).
torchvision checks the MNIST family's files only for existence, so their IDX structure is
checked here first: a corrupt file gets an error that names it instead of a reshape failure
deep inside torch. It checks CIFAR's and SVHN's files against their md5 itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import datasets

from neuralforge import tensorfile
from neuralforge.record.datasets import IDX_FILES, IMAGE_MAGIC, LABEL_MAGIC, TENSORS, Dataset, dataset, idx_folder
from neuralforge.record.errors import DataError

log = logging.getLogger(__name__)


def _cls(ds: Dataset) -> Any:
    return getattr(datasets, ds.source)


@dataclass
class Tensors:
    train_x: torch.Tensor  # (N, C, H, W) float, normalized: the pool the validation split comes from
    train_y: torch.Tensor  # (N,) int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    checksums: dict[str, str]  # file name -> sha256
    background: tuple[float, ...]  # per channel, the normalized value of a black pixel: fills shifted-in borders


def check_idx(path: Path, magic: int, num_classes: int = 10) -> tuple[tuple[int, ...], str]:
    """Check one IDX file's structure; return its dimensions and its sha256."""
    blob = path.read_bytes()
    problem = None
    if len(blob) < 8:
        problem = "it is too short to hold an IDX header"
    else:
        found = int.from_bytes(blob[:4], "big")
        ndim = found & 0xFF
        if found != magic:
            problem = f"its magic number is {found}, expected {magic}"
        elif len(blob) < 4 + 4 * ndim:
            problem = "its header is truncated"
        else:
            dims = tuple(int.from_bytes(blob[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
            expected = 4 + 4 * ndim + int(np.prod(dims))
            if len(blob) != expected:
                problem = f"it holds {len(blob)} bytes but its header {dims} says {expected}"
            elif magic == IMAGE_MAGIC and dims[1:] != (28, 28):
                problem = f"its images are {dims[1:]}, expected (28, 28)"
            elif magic == LABEL_MAGIC:
                labels = np.frombuffer(blob, dtype=np.uint8, offset=8)
                if labels.size and labels.max() >= num_classes:
                    problem = f"it holds label {labels.max()}, outside 0..{num_classes - 1}"
    if problem:
        raise DataError(f"{path} is corrupt: {problem}. Replace it (delete it to download it again).")
    return dims, hashlib.sha256(blob).hexdigest()


def check_idx_files(name: str, root: str) -> dict[str, str]:
    folder = idx_folder(name, root)
    processed = folder.parent / "processed"
    if (processed / "training.pt").exists() and (processed / "test.pt").exists():
        # torchvision reads these, left by its versions before 0.9, instead of raw/: the files
        # checked and hashed here would not be the ones trained on
        raise DataError(f"{processed} holds an old torchvision's copy of the data, which torchvision would read "
                        f"instead of {folder}. Delete {processed} to train on the raw files.")
    dims, checksums = {}, {}
    for role, fname in IDX_FILES.items():
        magic = IMAGE_MAGIC if role.endswith("images") else LABEL_MAGIC
        dims[role], checksums[fname] = check_idx(folder / fname, magic)
    for split in ("train", "test"):
        if dims[f"{split}_images"][0] != dims[f"{split}_labels"][0]:
            raise DataError(f"{folder}: {dims[f'{split}_images'][0]} {split} images but "
                            f"{dims[f'{split}_labels'][0]} labels; the files do not belong together.")
    return checksums


def dataset_files(d: dict[str, Any]) -> list[Path]:
    """The files the dataset of data config `d` is read from."""
    ds, root = dataset(d["name"]), Path(d["root"])
    if ds.files == "idx":
        return [idx_folder(ds.name, root) / f for f in IDX_FILES.values()]
    if ds.files == "file":
        return [Path(d["path"])]
    cls = _cls(ds)
    if ds.split_by == "split":  # SVHN: one .mat file per split
        return [root / cls.split_list[split][1] for split in ("train", "test")]
    return [root / cls.base_folder / f for f, _ in (*cls.train_list, *cls.test_list)] + \
        [root / cls.base_folder / cls.meta["filename"]]


def location(d: dict[str, Any]) -> str:
    """Where the data config says the files are, as the key to change."""
    return f"data.path={d['path']}" if d["name"] == TENSORS else f"data.root={d['root']}"


def check_files(d: dict[str, Any]) -> dict[str, str]:
    """The sha256 of each of the dataset's files, once the MNIST family's are checked."""
    if dataset(d["name"]).files == "idx":
        return check_idx_files(d["name"], d["root"])
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in dataset_files(d)}


def _open(ds: Dataset, root: str, train: bool, download: bool) -> Any:
    """torchvision's dataset object for one split."""
    if ds.split_by == "split":
        return _cls(ds)(root, split="train" if train else "test", download=download)
    return _cls(ds)(root, train=train, download=download)


def _arrays(ds: Dataset, obj: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A torchvision dataset's images as (N, C, H, W) and its labels, as tensors."""
    x = torch.as_tensor(np.asarray(obj.data))
    if ds.layout == "NHW":
        x = x.unsqueeze(1)
    elif ds.layout == "NHWC":
        x = x.permute(0, 3, 1, 2)
    return x, torch.as_tensor(np.asarray(getattr(obj, ds.labels)))


def ensure_files(d: dict[str, Any]) -> None:
    name, root, download = d["name"], d["root"], d["download"]
    files = dataset_files(d)
    missing = [f.name for f in files if not f.exists()]
    if not missing or name == TENSORS:  # a missing tensors file is tensorfile's to report
        return
    folder = files[0].parent
    if download:
        log.info("Downloading %s into %s", name, root)
        created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
        try:
            for train in (True, False):
                _open(dataset(name), root, train, download=True)
            return
        except Exception as err:  # torchvision raises URLError, RuntimeError, OSError, ...
            lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
            reason = f"the download failed ({lines[-1]})"  # torchvision's last line says why
            # torchvision makes the folders before it fails; left empty, they would pass for a dataset
            for path in created:
                with contextlib.suppress(OSError):  # not empty: keep what is there
                    path.rmdir()
    else:
        reason = "data.download=false"
    where = f"the one holding {folder.relative_to(root)}/" if folder != Path(root) else "the one holding them"
    raise DataError(f"{name} files not found in {folder} (missing {', '.join(missing)}) and {reason}. "
                    f"Point data.root=/path/to/folder ({where}) or set NEURALFORGE_DATA.")


def test_labels(d: dict[str, Any]) -> np.ndarray:
    """The test labels of the dataset of data config `d`, from its files, as they are now."""
    if d["name"] == TENSORS:
        return tensorfile.read(d["path"], d.get("num_classes"))[0]["test_y"].numpy()
    ds = dataset(d["name"])
    try:
        obj = _open(ds, d["root"], train=False, download=False)
    except RuntimeError as err:  # missing or corrupt
        raise DataError(f"{d['name']} test files in {d['root']}: {err}") from None
    return _arrays(ds, obj)[1].numpy().astype(np.int64)


def load(d: dict[str, Any], device: torch.device) -> Tensors:
    """The dataset of data config `d`, normalized by data.mean and data.std, or, where those are
    null, by the training images' own mean and standard deviation per channel."""
    ensure_files(d)
    ds, root = dataset(d["name"]), d["root"]
    if ds.files == "file":  # read, and so checked, before it is hashed
        arrays, num_classes = tensorfile.read(d["path"], d["num_classes"])
        checksums = check_files(d)
    else:
        checksums = check_files(d)  # the MNIST family's IDX structure, before torchvision reads it
        arrays = {}
        for split in ("train", "test"):
            try:
                obj = _open(ds, root, split == "train", download=False)
            except RuntimeError as err:  # torchvision's md5 check of CIFAR and SVHN
                raise DataError(f"{ds.name} files in {dataset_files(d)[0].parent} are corrupt or incomplete ({err}). "
                                f"Delete them to download them again, or point data.root elsewhere.") from None
            arrays[f"{split}_x"], arrays[f"{split}_y"] = _arrays(ds, obj)
        assert ds.num_classes is not None  # the table gives each built-in dataset its classes
        num_classes = ds.num_classes
    shift, side = d["augment"]["shift"], min(arrays["train_x"].shape[2:])
    if shift >= side:
        raise DataError(f"data.augment.shift={shift} would move {side}-pixel images out of themselves: "
                        f"give at most {side - 1}")
    return normalized(arrays, d["mean"], d["std"], num_classes, checksums, device)


def normalized(arrays: dict[str, torch.Tensor], mean: Any, std: Any, num_classes: int,
               checksums: dict[str, str], device: torch.device) -> Tensors:
    """Images (N, C, H, W), uint8 (scaled by 1/255) or float, as normalized float32 on `device`."""

    def scaled(images: torch.Tensor) -> torch.Tensor:
        x = images.to(device=device, dtype=torch.float32)
        return x.div_(255) if images.dtype == torch.uint8 else x

    train_x, test_x = scaled(arrays["train_x"]), scaled(arrays["test_x"])
    channels = train_x.shape[1]
    for key, value in (("mean", mean), ("std", std)):
        if isinstance(value, (list, tuple)) and len(value) != channels:
            raise DataError(f"data.{key} gives {len(value)} values for images of {channels} channels: give one, "
                            f"{channels}, or null")
    if mean is None:
        mean = train_x.mean(dim=(0, 2, 3)).tolist()
    if std is None:
        std = train_x.std(dim=(0, 2, 3), correction=0).clamp_min(1e-6).tolist()
    m: torch.Tensor | float
    s: torch.Tensor | float
    if any(isinstance(v, (list, tuple)) and len(set(v)) > 1 for v in (mean, std)):
        m, s = (torch.tensor(v, device=device).view(-1, 1, 1) for v in (mean, std))
    else:  # one number: the scalar operations that have always normalized MNIST
        m, s = (float(v[0]) if isinstance(v, (list, tuple)) else float(v) for v in (mean, std))
    for x in (train_x, test_x):
        x.sub_(m).div_(s)
    means = torch.as_tensor(mean, dtype=torch.float64).expand(channels)
    stds = torch.as_tensor(std, dtype=torch.float64).expand(channels)
    return Tensors(
        train_x=train_x.contiguous(), train_y=arrays["train_y"].long().to(device),
        test_x=test_x.contiguous(), test_y=arrays["test_y"].long().to(device),
        num_classes=num_classes, checksums=checksums, background=tuple(((0 - means) / stds).tolist()),
    )


def split(n: int, val_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, val) of a seeded hold-out from a pool of n examples."""
    if val_size >= n:
        raise DataError(f"data.val_size={val_size} leaves no training data out of {n} examples")
    perm = torch.randperm(n, generator=generator)
    return perm[val_size:], perm[:val_size]


def random_shift(x: torch.Tensor, max_shift: int, generators: list[torch.Generator],
                 fill: tuple[float, ...]) -> torch.Tensor:
    """Translate each image by its own (dy, dx) in [-max_shift, max_shift], filling channel c
    with fill[c].

    x is (K, B, C, H, W), of any image size: member k draws its B shifts from generators[k],
    so a member of a group sees the same shifts as the same seed trained alone.
    """
    K, B, C, H, W = x.shape
    s = max_shift
    shifts = torch.stack([torch.randint(-s, s + 1, (B, 2), generator=g, device=g.device) for g in generators])
    shifts = shifts.to(x.device).view(K * B, 1, 2)
    flat = x.reshape(K * B, C, H, W)
    if len(set(fill)) == 1:
        padded = F.pad(flat, (s, s, s, s), value=fill[0])
    else:
        padded = torch.cat([F.pad(flat[:, c:c + 1], (s, s, s, s), value=v) for c, v in enumerate(fill)], 1)
    padded = padded.view(K * B, C, -1)
    # out[i, j] = in[i - dy, j - dx]: one flat gather index per output pixel
    rows = torch.arange(H, device=x.device).view(1, H, 1) + s - shifts[..., :1]
    cols = torch.arange(W, device=x.device).view(1, 1, W) + s - shifts[..., 1:]
    index = (rows * (W + 2 * s) + cols).view(K * B, 1, H * W).expand(K * B, C, H * W)
    return padded.gather(2, index).view(K, B, C, H, W)


def random_flip(x: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """Mirror each image left to right with probability 1/2; x is (K, B, C, H, W), member k
    drawing its B coins from generators[k] (after its shifts, when both are on)."""
    K, B = x.shape[:2]
    coins = torch.stack([torch.rand(B, generator=g, device=g.device) for g in generators]).to(x.device)
    return torch.where((coins < 0.5).view(K, B, 1, 1, 1), x.flip(-1), x)
