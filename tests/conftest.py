"""A small MNIST-format dataset in real IDX files, read by torchvision's own MNIST class.

Each class is a bright 6x6 square at its own place, jittered and noisy: learnable in a few
epochs, far from trivially separable by one pixel.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from neuralforge import hardware
from neuralforge.idx import FILES, IMAGE_MAGIC, LABEL_MAGIC

CONF = str(Path(__file__).resolve().parents[1] / "conf")
N_TRAIN, N_TEST = 600, 200
# Read before any test runs: each test then unsets the variable (see _no_real_data).
REAL_DATA = os.environ.get("NEURALFORGE_DATA")

CPU_FLAGS = hardware.cpu_flags()


def make_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        r, col = 3 + 8 * (c // 4) + rng.integers(-1, 2), 2 + 6 * (c % 4) + rng.integers(-1, 2)
        images[i, r:r + 6, col:col + 6] = 255
    return images, labels


def write_idx(path: Path, array: np.ndarray) -> None:
    magic = IMAGE_MAGIC if array.ndim == 3 else LABEL_MAGIC
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_dataset(root: Path, seed: int = 0) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        images, labels = make_images(n, rng)
        write_idx(raw / FILES[f"{split}_images"], images)
        write_idx(raw / FILES[f"{split}_labels"], labels)
    return root


@pytest.fixture(scope="session")
def idx_root(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("idx"))


@pytest.fixture(autouse=True)
def _no_real_data(monkeypatch):
    # Tests on the fixture must test the fixture, also where CI points NEURALFORGE_DATA at MNIST.
    monkeypatch.delenv("NEURALFORGE_DATA", raising=False)


@pytest.fixture(autouse=True)
def _matmul_precision():
    # process-wide, and set by every run: a test that trains at medium must not leave it so
    before = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(before)


# Small and fast: a 32-16 MLP, 100 validation images, 2 epochs on one thread.
FAST = ["model.hidden=[32,16]", "data.val_size=100", "trainer.epochs=2", "trainer.eval_batch_size=256",
        "threads=1", "device=cpu", "data.download=false"]


@pytest.fixture
def make_cfg(idx_root):
    def make(*overrides: str):
        # choosing another model drops the small MLP's widths, which that model would not have
        fast = [o for o in FAST if not (o.startswith("model.") and any(x.startswith("model=") for x in overrides))]
        with initialize_config_dir(config_dir=CONF):
            return compose("config", overrides=[f"data.root={idx_root}", *fast, *overrides])
    return make
