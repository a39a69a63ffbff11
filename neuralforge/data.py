"""Datasets as normalized tensors on the training device, their validation split, and
batched augmentation.

torchvision's dataset classes read (and download) the files. torchvision only checks that
the files exist, so the IDX structure is checked here first: a corrupt file gets an error that
names it instead of a reshape failure deep inside torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import datasets

from neuralforge.errors import DataError

log = logging.getLogger(__name__)

DATASETS = {
    "mnist": datasets.MNIST,
    "fashion_mnist": datasets.FashionMNIST,
    "kmnist": datasets.KMNIST,
}
FILES = {  # the same four names for the whole 28x28 family
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
NUM_CLASSES = 10


@dataclass
class Tensors:
    train_x: torch.Tensor  # (N, 1, 28, 28) float, normalized: the pool the validation split comes from
    train_y: torch.Tensor  # (N,) int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    checksums: dict[str, str]  # file name -> sha256
    background: float  # the normalized value of a black pixel, used to fill shifted-in borders


def raw_folder(name: str, root: str) -> Path:
    return Path(root) / DATASETS[name].__name__ / "raw"


def check_idx(path: Path, magic: int, num_classes: int = NUM_CLASSES) -> tuple[tuple[int, ...], str]:
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


def check_files(name: str, root: str) -> dict[str, str]:
    folder = raw_folder(name, root)
    processed = folder.parent / "processed"
    if (processed / "training.pt").exists() and (processed / "test.pt").exists():
        # torchvision reads these, left by its versions before 0.9, instead of raw/: the files
        # checked and hashed here would not be the ones trained on
        raise DataError(f"{processed} holds an old torchvision's copy of the data, which torchvision would read "
                        f"instead of {folder}. Delete {processed} to train on the raw files.")
    dims, checksums = {}, {}
    for role, fname in FILES.items():
        magic = IMAGE_MAGIC if role.endswith("images") else LABEL_MAGIC
        dims[role], checksums[fname] = check_idx(folder / fname, magic)
    for split in ("train", "test"):
        if dims[f"{split}_images"][0] != dims[f"{split}_labels"][0]:
            raise DataError(f"{folder}: {dims[f'{split}_images'][0]} {split} images but "
                            f"{dims[f'{split}_labels'][0]} labels; the files do not belong together.")
    return checksums


def ensure_files(name: str, root: str, download: bool) -> None:
    folder = raw_folder(name, root)
    missing = [f for f in FILES.values() if not (folder / f).exists()]
    if not missing:
        return
    if download:
        log.info("Downloading %s into %s", name, root)
        created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
        try:
            for train in (True, False):
                DATASETS[name](root, train=train, download=True)
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
    raise DataError(f"{name} files not found in {folder} (missing {', '.join(missing)}) and {reason}. "
                    f"Point data.root=/path/to/folder (the one holding {folder.parent.name}/raw/) "
                    f"or set NEURALFORGE_DATA.")


def load(name: str, root: str, mean: float, std: float, device: torch.device, download: bool = True) -> Tensors:
    if name not in DATASETS:
        raise DataError(f"data.name={name!r} is unknown: use one of {', '.join(DATASETS)}")
    ensure_files(name, root, download)
    checksums = check_files(name, root)
    cls = DATASETS[name]
    train, test = cls(root, train=True, download=False), cls(root, train=False, download=False)

    def to_device(images: torch.Tensor) -> torch.Tensor:
        x = images.to(device=device, dtype=torch.float32).div_(255).sub_(mean).div_(std)
        return x.unsqueeze(1).contiguous()

    return Tensors(
        train_x=to_device(train.data), train_y=train.targets.to(device),
        test_x=to_device(test.data), test_y=test.targets.to(device),
        num_classes=NUM_CLASSES, checksums=checksums, background=(0 - mean) / std,
    )


def split(n: int, val_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, val) of a seeded hold-out from a pool of n examples."""
    if val_size >= n:
        raise DataError(f"data.val_size={val_size} leaves no training data out of {n} examples")
    perm = torch.randperm(n, generator=generator)
    return perm[val_size:], perm[:val_size]


def random_shift(x: torch.Tensor, max_shift: int, generators: list[torch.Generator], fill: float) -> torch.Tensor:
    """Translate each image by its own (dy, dx) in [-max_shift, max_shift], filling with `fill`.

    x is (K, B, C, H, W): member k draws its B shifts from generators[k], so a member of a
    group sees the same shifts as the same seed trained alone.
    """
    K, B, C, H, W = x.shape
    s = max_shift
    shifts = torch.stack([torch.randint(-s, s + 1, (B, 2), generator=g, device=g.device) for g in generators])
    shifts = shifts.to(x.device).view(K * B, 1, 2)
    padded = F.pad(x.reshape(K * B, C, H, W), (s, s, s, s), value=fill).view(K * B, C, -1)
    # out[i, j] = in[i - dy, j - dx]: one flat gather index per output pixel
    rows = torch.arange(H, device=x.device).view(1, H, 1) + s - shifts[..., :1]
    cols = torch.arange(W, device=x.device).view(1, 1, W) + s - shifts[..., 1:]
    index = (rows * (W + 2 * s) + cols).view(K * B, 1, H * W).expand(K * B, C, H * W)
    return padded.gather(2, index).view(K, B, C, H, W)
