"""What each `data.name` is: the one table that data loading, file checks and analysis's test
labels read, and the MNIST family's IDX file names and magic numbers. Torch-free, so that analysis
reads test labels through it without loading torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Dataset:
    name: str  # data.name
    source: str  # torchvision.datasets' class; "" for data=tensors, a file of one's own
    files: str  # "idx": the MNIST family's four IDX files in <root>/<source>/raw/; "torchvision": the
    #             class's own files and checks; "file": data.path
    num_classes: int | None  # None: data.num_classes, or counted from the labels
    layout: str = "NHW"  # how the torchvision class holds its images: NHW, NHWC or NCHW
    labels: str = "targets"  # the class's attribute holding the labels
    split_by: str = "train"  # how the class picks a split: train=True/False, or split="train"/"test"


DATASETS = {d.name: d for d in (
    Dataset("mnist", "MNIST", "idx", 10),
    Dataset("fashion_mnist", "FashionMNIST", "idx", 10),
    Dataset("kmnist", "KMNIST", "idx", 10),
    Dataset("cifar10", "CIFAR10", "torchvision", 10, layout="NHWC"),
    Dataset("cifar100", "CIFAR100", "torchvision", 100, layout="NHWC"),
    Dataset("svhn", "SVHN", "torchvision", 10, layout="NCHW", labels="labels", split_by="split"),
    Dataset("tensors", "", "file", None),
)}
TENSORS = "tensors"

IDX_FILES = {  # the same four names for the whole 28x28 family
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049


def dataset(name: str) -> Dataset:
    from neuralforge.record.errors import DataError

    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"data.name={name!r} is unknown: use one of {', '.join(DATASETS)}") from None


def idx_folder(name: str, root: str | Path) -> Path:
    """Where torchvision's MNIST-family class reads its IDX files: <root>/<class name>/raw."""
    return Path(root) / DATASETS[name].source / "raw"
