"""Data beyond MNIST: a tensors file of one's own, CIFAR and SVHN through torchvision's own
classes (on fixtures written here, in their formats), and augmentation on any image size."""

from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pytest
import scipy.io
import torch
from conftest import record
from torchvision import datasets

import analysis
from neuralforge import data
from neuralforge.engine import train
from neuralforge.record.errors import DataError

N_TRAIN, N_TEST = 300, 100


def colour_images(n: int, rng: np.random.Generator, side: tuple[int, int] = (32, 32)):
    """(n, H, W, 3) uint8: class c is a bright bar across the middle of the image at its own
    height, in channel c % 3; a mirror image is of the same class, as flips assume."""
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 60, (n, *side, 3)).astype(np.uint8)
    w = side[1]
    for i, c in enumerate(labels):
        r = int(c) * (side[0] - 3) // 10
        images[i, r:r + 3, w // 6:w - w // 6, c % 3] = 255
    return images, labels


def tensors_arrays(seed: int = 0, side=(32, 32)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    (train_x, train_y), (test_x, test_y) = colour_images(N_TRAIN, rng, side), colour_images(N_TEST, rng, side)
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def normalized_chw(arrays: dict[str, np.ndarray], i: int) -> torch.Tensor:
    """Training image i as (C, H, W), normalized by the training images' mean and std per channel."""
    x = arrays["train_x"].astype(np.float64) / 255
    mean, std = x.mean((0, 1, 2)), x.std((0, 1, 2))
    return torch.from_numpy(((x[i] - mean) / std).transpose(2, 0, 1)).float()


def spec(**d) -> dict:
    return {"root": "/nowhere", "path": None, "download": False, "mean": None, "std": None, "num_classes": None,
            "augment": {"shift": 0, "flip": False}, **d}


# ---------------------------------------------------------------- tensors files
def test_a_tensors_file_trains_a_group_with_flips_and_shifts(make_cfg, tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, **tensors_arrays(side=(24, 30)))  # HWC uint8, not square
    train(make_cfg("data=tensors", f"data.path={path}", "data.val_size=50", "n_seeds=2", "trainer.epochs=4",
                   "trainer.batch_size=32",
                   "data.augment.shift=2", "data.augment.flip=true"), tmp_path / "run")
    for s in range(2):
        rec = record(tmp_path / f"run/seed={s}")
        assert rec.status == "complete" and rec.metrics.test_acc > 0.5  # chance is 0.1
        assert rec.provenance["dataset_sha256"] == {"mine.npz": hashlib.sha256(path.read_bytes()).hexdigest()}
        assert rec.n_params == 3 * 24 * 30 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    # the analysis reads the test labels from the same file: accuracy from predictions and labels
    table = analysis.stability(analysis.collect(tmp_path / "run"))
    assert table["ensemble_acc"].iloc[0] > 0.5 and table["n"].iloc[0] == 2


def test_a_pt_file_in_chw_float_loads_as_the_npz_in_hwc_uint8_normalized_by_its_training_images(tmp_path):
    arrays = tensors_arrays()
    np.savez(tmp_path / "hwc.npz", **arrays)
    torch.save({k: torch.from_numpy(v).permute(0, 3, 1, 2).float() / 255 if k.endswith("_x") else torch.from_numpy(v)
                for k, v in arrays.items()}, tmp_path / "chw.pt")
    a = data.load(spec(name="tensors", path=str(tmp_path / "hwc.npz")), torch.device("cpu"))
    b = data.load(spec(name="tensors", path=str(tmp_path / "chw.pt")), torch.device("cpu"))
    assert a.train_x.shape == (N_TRAIN, 3, 32, 32) and a.num_classes == 10
    torch.testing.assert_close(a.train_x, b.train_x)
    assert torch.equal(a.test_y, b.test_y)
    per_channel = a.train_x.transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(per_channel.std(1, correction=0), torch.ones(3), atol=1e-4, rtol=0)
    # a black pixel, normalized per channel: what shifts fill borders with
    mean, std = arrays["train_x"].reshape(-1, 3).mean(0) / 255, arrays["train_x"].reshape(-1, 3).std(0) / 255
    np.testing.assert_allclose(a.background, -mean / std, rtol=1e-4)


def _with(**changes):
    def make(arrays):
        arrays.update(changes)
        return {k: v for k, v in arrays.items() if v is not None}
    return make


@pytest.mark.parametrize("damage, message", [
    (_with(test_y=None), r"lacks test_y \(it holds test_x, train_x, train_y\)"),
    (lambda a: {**a, "train_x": a["train_x"].reshape(N_TRAIN, -1)}, r"train_x has shape \(300, 3072\)"),
    (lambda a: {**a, "test_y": np.where(np.arange(N_TEST) == 3, 12, a["test_y"])},
     r"test_y holds label 12, out of range \(train_y's labels are 0..9\)"),
    (lambda a: {**a, "train_x": np.where(np.arange(N_TRAIN)[:, None, None, None] == 5, np.nan,
                                         a["train_x"].astype(np.float32))}, "train_x holds NaN"),
    (lambda a: {**a, "train_y": a["train_y"][:-1]}, "train_x holds 300 images but train_y 299 labels"),
    (lambda a: {**a, "test_x": a["test_x"][:, :28]}, r"train_x images are \(C, H, W\) = \(3, 32, 32\) but test_x"),
    (lambda a: {**a, "train_y": a["train_y"].astype(np.float32)},
     "train_y is torch.float32; give class labels as integers"),
    (lambda a: {**a, "train_y": a["train_y"] - 1}, "train_y holds label -1; labels start at 0"),
])
def test_each_bad_tensors_file_is_refused_in_one_line_and_nothing_is_written(make_cfg, tmp_path, damage, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **damage(tensors_arrays()))
    with pytest.raises(DataError, match=message) as err:
        train(make_cfg("data=tensors", f"data.path={path}", "data.val_size=50"), tmp_path / "run")
    assert "\n" not in str(err.value) and f"data.path={path}" in str(err.value)
    assert not [p for p in (tmp_path / "run").rglob("*") if p.is_file()]


class Payload:
    """Anything that is not a tensor or a primitive: unpickling it would run this module's code."""


def test_a_pt_file_holding_pickled_code_a_garbage_npz_or_a_missing_file_is_refused_in_one_line(make_cfg, tmp_path):
    torch.save({"train_x": Payload()}, tmp_path / "code.pt")
    (tmp_path / "garbage.npz").write_bytes(b"\x80\x04 not an archive" * 10)
    for path, message in ((tmp_path / "code.pt", "holds more than tensors"), (tmp_path / "none.npz", "no such file"),
                          (tmp_path / "garbage.npz", r"is not a valid \.npz file \(not the zip archive")):
        with pytest.raises(DataError, match=message) as err:
            train(make_cfg("data=tensors", f"data.path={path}"), tmp_path / "run")
        assert "\n" not in str(err.value)


def test_a_shift_as_large_as_the_images_is_refused(make_cfg, tmp_path):
    path = tmp_path / "small.npz"
    np.savez(path, **tensors_arrays(side=(6, 9)))
    with pytest.raises(DataError, match=r"data\.augment\.shift=6 would move 6-pixel images out of themselves"):
        train(make_cfg("data=tensors", f"data.path={path}", "data.val_size=50", "data.augment.shift=6"), tmp_path / "r")


def test_data_tensors_without_a_path_says_which_key_to_give(make_cfg, tmp_path):
    with pytest.raises(Exception, match=r"data=tensors needs data.path=<file.npz\|file.pt>"):
        train(make_cfg("data=tensors"), tmp_path)


# ---------------------------------------------------------------- torchvision's CIFAR and SVHN
def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def cifar_root(tmp_path, monkeypatch):
    """CIFAR-10's python format: five training batches, a test batch and the meta file, whose
    md5s torchvision checks; the fixture's own md5s stand in for those of the real files."""
    folder = tmp_path / "cifar" / datasets.CIFAR10.base_folder
    folder.mkdir(parents=True)
    arrays = tensors_arrays()
    batches = [(f"data_batch_{i + 1}", slice(60 * i, 60 * (i + 1)), "train") for i in range(5)]
    for name, rows, split in [*batches, ("test_batch", slice(None), "test")]:
        x = arrays[f"{split}_x"][rows].transpose(0, 3, 1, 2).reshape(-1, 3072)  # CIFAR stores CHW rows
        (folder / name).write_bytes(pickle.dumps({"data": x, "labels": arrays[f"{split}_y"][rows].tolist()}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{c}" for c in range(10)]}))
    monkeypatch.setattr(datasets.CIFAR10, "train_list", [[n, _md5(folder / n)] for n, _, _ in batches])
    monkeypatch.setattr(datasets.CIFAR10, "test_list", [["test_batch", _md5(folder / "test_batch")]])
    monkeypatch.setattr(datasets.CIFAR10, "meta", {**datasets.CIFAR10.meta, "md5": _md5(folder / "batches.meta")})
    return tmp_path / "cifar", arrays


def test_a_cifar_format_fixture_loads_through_torchvision_and_trains(cifar_root, make_cfg, tmp_path):
    root, arrays = cifar_root
    d = data.load(spec(name="cifar10", root=str(root)), torch.device("cpu"))
    assert d.train_x.shape == (N_TRAIN, 3, 32, 32) and d.test_x.shape == (N_TEST, 3, 32, 32) and d.num_classes == 10
    assert torch.equal(d.train_y, torch.from_numpy(arrays["train_y"]))
    labels = data.test_labels(spec(name="cifar10", root=str(root)))  # what analysis scores predictions on
    assert labels.dtype == np.int64 and np.array_equal(labels, arrays["test_y"])
    # the pixels in their places: the fixture's HWC image 7, normalized per channel
    torch.testing.assert_close(d.train_x[7], normalized_chw(arrays, 7))
    train(make_cfg("data=cifar10", f"data.root={root}", "data.val_size=50", "trainer.epochs=4",
                   "trainer.batch_size=32"), tmp_path / "run")
    rec = record(tmp_path / "run")
    assert rec.metrics.test_acc > 0.5 and rec.config["data"]["augment"]["flip"] is True
    assert set(rec.provenance["dataset_sha256"]) == {"data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                                                        "data_batch_5", "test_batch", "batches.meta"}


def test_cifar_offline_names_the_files_and_the_override(make_cfg, tmp_path):
    with pytest.raises(DataError) as err:
        train(make_cfg("data=cifar10", f"data.root={tmp_path / 'empty'}", "data.download=false"), tmp_path / "run")
    message = str(err.value)
    assert "data_batch_1" in message and "test_batch" in message and "data.root=" in message
    assert "cifar-10-batches-py" in message and "\n" not in message


def test_a_corrupt_cifar_file_is_refused_by_torchvisions_md5_in_one_line(cifar_root, make_cfg, tmp_path):
    root, _ = cifar_root
    batch = root / datasets.CIFAR10.base_folder / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:-10])
    with pytest.raises(DataError, match="corrupt or incomplete") as err:
        train(make_cfg("data=cifar10", f"data.root={root}"), tmp_path / "run")
    assert "\n" not in str(err.value)


def test_an_svhn_format_fixture_loads_through_torchvision(tmp_path, monkeypatch):
    arrays = tensors_arrays()
    split_list = dict(datasets.SVHN.split_list)
    for split, name in (("train", "train_32x32.mat"), ("test", "test_32x32.mat")):
        labels = arrays[f"{split}_y"]
        # SVHN's .mat: X is (H, W, C, N), y is (N, 1) with the digit 0 labelled 10
        scipy.io.savemat(tmp_path / name, {"X": arrays[f"{split}_x"].transpose(1, 2, 3, 0),
                                           "y": np.where(labels == 0, 10, labels).reshape(-1, 1)})
        split_list[split] = [split_list[split][0], name, _md5(tmp_path / name)]
    monkeypatch.setattr(datasets.SVHN, "split_list", split_list)
    d = data.load(spec(name="svhn", root=str(tmp_path)), torch.device("cpu"))
    assert d.train_x.shape == (N_TRAIN, 3, 32, 32) and torch.equal(d.test_y, torch.from_numpy(arrays["test_y"]))
    # SVHN's .mat holds (H, W, C, N); the pixels land in their places
    torch.testing.assert_close(d.train_x[3], normalized_chw(arrays, 3))


# ---------------------------------------------------------------- augmentation
def test_flips_are_seeded_per_member_and_mirror_whole_images():
    x = torch.arange(2 * 8 * 3 * 5 * 7, dtype=torch.float32).view(2, 8, 3, 5, 7)
    gens = lambda *seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    a = data.random_flip(x, gens(0, 1))
    assert torch.equal(a, data.random_flip(x, gens(0, 1)))
    assert torch.equal(a[1], data.random_flip(x[1:], gens(1))[0])  # member 1 flips as seed 1 alone
    flipped = [[torch.equal(a[k, i], x[k, i].flip(-1)) for i in range(8)] for k in range(2)]
    kept = [[torch.equal(a[k, i], x[k, i]) for i in range(8)] for k in range(2)]
    assert all(f != s for fk, sk in zip(flipped, kept) for f, s in zip(fk, sk))  # each image one or the other
    assert any(map(any, flipped)) and any(map(any, kept)) and flipped[0] != flipped[1]


def test_shifts_work_on_any_image_size_and_fill_each_channel_with_its_own_black():
    x = torch.rand(2, 4, 3, 9, 13) + 10  # far from the fills
    out = data.random_shift(x, 3, [torch.Generator().manual_seed(s) for s in (0, 1)], fill=(-1.0, -2.0, -3.0))
    assert out.shape == x.shape
    for c, fill in enumerate((-1.0, -2.0, -3.0)):
        border = out[:, :, c][out[:, :, c] < 0]
        assert border.numel() > 0 and torch.all(border == fill)
    # a kept pixel is some pixel of the same image and channel
    assert all(set(out[k, i, c][out[k, i, c] > 0].tolist()) <= set(x[k, i, c].flatten().tolist())
               for k in range(2) for i in range(4) for c in range(3))
