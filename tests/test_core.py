"""The core: configs, the model, training, checkpoints, resume and the results record."""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import (
    CONF,
    CPU_FLAGS,
    REAL_DATA,
    Interrupted,
    OnEpoch,
    history,
    interrupt_after,
    record,
    write_dataset,
    write_idx,
)
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError
from torchvision import datasets

from neuralforge import checkpoint, data, hardware
from neuralforge.checkpoint import BestState
from neuralforge.config import fingerprint
from neuralforge.engine import settle, train
from neuralforge.models import MLP
from neuralforge.record.atomic import atomic_write, write_json
from neuralforge.record.datasets import IDX_FILES
from neuralforge.record.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DivergedError,
    LockedError,
    NeuralForgeError,
)
from neuralforge.record.files import BEST, HISTORY, LAST, LOCK, PREDICTIONS, RESULTS
from neuralforge.record.liveness import STALE_AFTER_S
from neuralforge.record.schema import HISTORY_COLUMNS, SCHEMA_VERSION, parse
from neuralforge.runfolder import RunFolder
from neuralforge.training import Training


# ---------------------------------------------------------------- configs
def test_default_config_is_the_notebook_recipe(idx_root):
    from hydra import compose, initialize_config_dir
    with initialize_config_dir(config_dir=CONF):
        cfg = compose("config")
    assert list(cfg.model.hidden) == [128, 64] and cfg.model.activation == "relu"
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.lr == 1e-3
    assert cfg.trainer.batch_size == 64 and cfg.trainer.epochs == 10
    assert cfg.data.name == "mnist" and cfg.data.val_size == 5000
    assert all(cfg.seeds[s] == cfg.seed == 0 for s in ("init", "order", "split", "augment", "dropout"))


def test_seed_moves_every_source_and_a_source_override_moves_one(make_cfg):
    cfg = make_cfg("seed=3")
    assert dict(cfg.seeds) == {s: 3 for s in ("init", "order", "split", "augment", "dropout")}
    cfg = make_cfg("seed=3", "seeds.init=7")
    assert cfg.seeds.init == 7 and cfg.seeds.order == 3


def test_groups_compose(make_cfg):
    cfg = make_cfg("optimizer=sgd", "optimizer.lr=0.05", "scheduler=one_cycle", "data=fashion_mnist",
                   "model.hidden=[256,128,64]", "trainer.batch_size=128")
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer.momentum == 0.9
    assert cfg.scheduler.max_lr == 0.05  # follows optimizer.lr
    assert cfg.data.name == "fashion_mnist" and list(cfg.model.hidden) == [256, 128, 64]


@pytest.mark.parametrize("override, message", [
    ("model.hiden=[1]", "hiden"),
    ("model.hidden=abc", "hidden"),
    ("model.hidden=[1.5]", "hidden"),
    ("trainer.batch_size=many", "batch_size"),
    ("optimizer=rmsprop", "optimizer/rmsprop"),
])
def test_typos_and_wrong_types_fail_at_composition(make_cfg, override, message):
    with pytest.raises((ConfigCompositionException, ValidationError)) as err:
        make_cfg(override)
    assert message in str(err.value) + str(err.value.__cause__)


def test_fingerprint_covers_threads_but_not_where_data_lives(make_cfg):
    from neuralforge.config import resolve
    cfg = make_cfg()
    base = fingerprint(resolve(cfg, threads=1, device="cpu"))
    assert fingerprint(resolve(cfg, threads=2, device="cpu")) != base
    assert fingerprint(resolve(make_cfg("seed=1"), threads=1, device="cpu")) != base
    assert fingerprint(resolve(make_cfg("data.root=/elsewhere"), threads=1, device="cpu")) == base


def test_matmul_precision_is_fingerprinted_and_its_default_keeps_earlier_fingerprints(make_cfg):
    from neuralforge.config import resolve
    spec = resolve(make_cfg(), threads=1, device="cpu")
    assert fingerprint(resolve(make_cfg("matmul_precision=medium"), threads=1, device="cpu")) != fingerprint(spec)
    before = dict(spec)
    del before["matmul_precision"]  # a run folder written before the key existed
    assert fingerprint(before) == fingerprint(spec)


# ---------------------------------------------------------------- model
@pytest.mark.parametrize("hidden", [[], [16], [32, 16], [64, 32, 16, 8]])
def test_mlp_shapes_and_parameter_count(hidden):
    model = MLP(hidden, members=3)
    model.reset_parameters([torch.Generator().manual_seed(k) for k in range(3)])
    logits = model(torch.randn(3, 5, 1, 28, 28))
    assert logits.shape == (3, 5, 10)
    assert model(torch.randn(7, 1, 28, 28)).shape == (3, 7, 10)  # one batch shared by all members
    sizes = [784, *hidden, 10]
    assert sum(p[0].numel() for p in model.parameters()) == sum(i * o + o for i, o in itertools.pairwise(sizes))


def test_mlp_init_is_nn_linear_bounds_and_per_member():
    model = MLP([64], members=2)
    model.reset_parameters([torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)])
    w = model.weights[0]
    assert w.abs().max() <= 1 / math.sqrt(784) and w.abs().max() > 0.9 / math.sqrt(784)
    assert not torch.equal(w[0], w[1])
    again = MLP([64], members=1)
    again.reset_parameters([torch.Generator().manual_seed(1)])
    assert torch.equal(again.weights[0][0], w[1])


# ---------------------------------------------------------------- training
def test_training_beats_chance_and_writes_every_file(make_cfg, tmp_path):
    score = train(make_cfg("trainer.epochs=5"), tmp_path, overrides=["trainer.epochs=5"])
    rec = record(tmp_path)
    m = rec.metrics
    assert rec.status == "complete" and rec.schema_version == SCHEMA_VERSION
    assert score == m.val_acc and m.selection == "val_acc"
    assert m.test_acc > 0.5  # chance is 0.1
    assert m.epochs_run == 5 and 1 <= m.best_epoch <= 5
    assert rec.overrides == ["trainer.epochs=5"]
    assert rec.config["threads"] == 1 and rec.provenance["threads"] == 1
    assert set(rec.provenance["dataset_sha256"]) == set(IDX_FILES.values())
    assert rec.n_params == 784 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    h = history(tmp_path)
    assert list(h.columns) == list(HISTORY_COLUMNS) and len(h) == 5
    assert h.val_acc.max() == m.val_acc and h.test_acc[h.epoch == m.best_epoch].item() == m.test_acc
    preds = np.load(tmp_path / PREDICTIONS)
    assert preds.dtype == np.uint8 and preds.shape == (200,)
    labels = np.frombuffer((Path(rec.config["data"]["root"]) / "MNIST/raw" / IDX_FILES["test_labels"])
                           .read_bytes()[8:], dtype=np.uint8)
    assert (preds == labels).mean() == m.test_acc  # exactly: a count over 200, not float32 noise
    for f in ("best.pt", LAST):
        assert (tmp_path / f).exists()
    assert not (tmp_path / LOCK).exists()


@pytest.mark.parametrize("precision", ["highest", "medium"])
def test_resume_equals_uninterrupted_bit_for_bit(make_cfg, tmp_path, caplog, precision):
    overrides = ("trainer.epochs=4", "model.dropout=0.2", "data.augment.shift=2", "scheduler=one_cycle",
                 f"matmul_precision={precision}")
    train(make_cfg(*overrides), tmp_path / "straight")
    with pytest.raises(Interrupted):
        train(make_cfg(*overrides), tmp_path / "killed", listeners=interrupt_after(2))
    assert record(tmp_path / "killed").status == "running"
    with caplog.at_level("INFO"):
        train(make_cfg(*overrides), tmp_path / "killed")
    assert "Resuming from epoch 3" in caplog.text
    a, b = record(tmp_path / "straight"), record(tmp_path / "killed")
    assert a.metrics == b.metrics and a.fingerprint == b.fingerprint
    pd.testing.assert_frame_equal(history(tmp_path / "straight").drop(columns="seconds"),
                                  history(tmp_path / "killed").drop(columns="seconds"), check_exact=True)
    assert np.array_equal(np.load(tmp_path / "straight/predictions.npy"), np.load(tmp_path / "killed/predictions.npy"))


def test_every_run_sets_its_matmul_precision_and_records_it(make_cfg, tmp_path):
    train(make_cfg("matmul_precision=medium"), tmp_path / "medium")
    assert torch.get_float32_matmul_precision() == "medium"
    assert record(tmp_path / "medium").config["matmul_precision"] == "medium"
    # the setting is process-wide: a joblib worker's next job, at the default, must not inherit it
    settle(make_cfg())
    assert torch.get_float32_matmul_precision() == "highest"


def _medium_error() -> tuple[torch.Tensor, torch.Tensor]:
    model = MLP([128, 64], members=4)
    model.reset_parameters([torch.Generator().manual_seed(k) for k in range(4)])
    x = torch.randn(4, 64, 1, 28, 28, generator=torch.Generator().manual_seed(9))
    exact = model(x)
    hardware.configure_matmul("medium")
    return exact, model(x)


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this CPU has no bfloat16 matmul: "
                    "medium runs highest's kernels")
def test_medium_matmul_precision_runs_other_kernels_within_bfloat16_error():
    exact, rough = _medium_error()
    assert not torch.equal(exact, rough)  # oneDNN's kernels instead of MKL's
    assert torch.allclose(exact, rough, rtol=0.05, atol=0.05)  # bfloat16 keeps 8 significant bits


@pytest.mark.skipif("amx_bf16" not in CPU_FLAGS, reason="this CPU has no AMX: oneDNN keeps medium in float32 "
                    "(seen on an AMD EPYC with AVX512-BF16)")
def test_medium_matmul_precision_rounds_to_bfloat16_where_the_cpu_has_amx():
    exact, rough = _medium_error()
    # float32 differs in its last bits (about 1e-7 of the size); bfloat16 factors by about 2^-8
    assert ((rough - exact).abs().max() / exact.abs().max()).item() > 1e-4


def test_run_killed_between_its_last_checkpoint_and_records_completes_them(make_cfg, tmp_path, monkeypatch):
    write = RunFolder.write_records

    def killed_before_final_records(folder, training, values=None):
        if training.epoch == 2:
            raise Interrupted  # last.pt of the final epoch is on disk; its records are not
        return write(folder, training, values)

    monkeypatch.setattr(RunFolder, "write_records", killed_before_final_records)
    with pytest.raises(Interrupted):
        train(make_cfg("trainer.epochs=2"), tmp_path / "killed")
    monkeypatch.undo()
    assert record(tmp_path / "killed").status == "running"
    train(make_cfg("trainer.epochs=2"), tmp_path / "killed")
    train(make_cfg("trainer.epochs=2"), tmp_path / "straight")
    a, b = record(tmp_path / "straight"), record(tmp_path / "killed")
    assert b.status == "complete" and a.metrics == b.metrics and b.metrics.epochs_run == 2
    pd.testing.assert_frame_equal(history(tmp_path / "straight").drop(columns="seconds"),
                                  history(tmp_path / "killed").drop(columns="seconds"), check_exact=True)
    assert np.array_equal(np.load(tmp_path / "straight/predictions.npy"), np.load(tmp_path / "killed/predictions.npy"))


def test_complete_run_is_not_retrained(make_cfg, tmp_path, caplog):
    first = train(make_cfg(), tmp_path)
    stamp = (tmp_path / LAST).stat().st_mtime_ns
    with caplog.at_level("INFO"):
        assert train(make_cfg(), tmp_path) == first
    assert "Skipped: run already complete" in caplog.text and (tmp_path / LAST).stat().st_mtime_ns == stamp


def test_keep_last_false_deletes_last_checkpoint(make_cfg, tmp_path):
    train(make_cfg("trainer.keep_last=false"), tmp_path)
    assert not (tmp_path / LAST).exists() and (tmp_path / "best.pt").exists()
    assert record(tmp_path).status == "complete"


def test_validation_is_held_out_of_training_per_seed(make_cfg, tmp_path):
    cfg = make_cfg("n_seeds=3", "data.val_size=100")
    run = Training(cfg, *settle(cfg))
    n = len(run.data.train_y)
    for train_idx, val_idx in zip(run.train_idx, run.val_idx):
        assert len(val_idx) == 100 and len(train_idx) == n - 100
        assert sorted(torch.cat([train_idx, val_idx]).tolist()) == list(range(n))  # disjoint, all of the pool
    assert not torch.equal(run.val_idx[0], run.val_idx[1])  # each seed its own split


def test_best_checkpoint_holds_the_best_epochs_weights(make_cfg, tmp_path):
    # patience 2 on a stalling lr: the run goes on past its best epoch, so last != best
    train(make_cfg("trainer.epochs=8", "trainer.patience=2", "optimizer.lr=3e-3"), tmp_path)
    m = record(tmp_path).metrics
    assert m.best_epoch < m.epochs_run
    best = BestState.load(tmp_path / BEST)
    assert best.epoch == m.best_epoch and best.selection == "val_acc" and best.score == m.val_acc
    cfg = make_cfg()
    run = Training(cfg, *settle(cfg))
    run.model.load_state_dict(best.model)
    _, test_acc, pred = run.evaluate(run.data.test_x, run.data.test_y)
    assert test_acc.item() == pytest.approx(m.test_acc)  # the recorded test accuracy is the best epoch's
    assert np.array_equal(pred[0].numpy(), np.load(tmp_path / PREDICTIONS))


def test_a_failed_write_keeps_the_file_before_it_and_leaves_no_temporary(tmp_path):
    checkpoint.save({"epoch": 1}, tmp_path / LAST)
    before = (tmp_path / LAST).read_bytes()

    def dies_midway(f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # a kill while torch.save writes

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / LAST, dies_midway)
    assert (tmp_path / LAST).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [LAST]

    for stop in (KeyboardInterrupt, SystemExit):  # Ctrl-C; submitit's exit once SLURM's signal requeued the job
        def interrupted_then_torn(f, stop=stop):  # what torch.save does when a stop lands inside it
            try:
                raise stop
            finally:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")

        with pytest.raises(stop):  # a stop, not a failure
            atomic_write(tmp_path / LAST, interrupted_then_torn)
        assert (tmp_path / LAST).read_bytes() == before
    write_json(tmp_path / RESULTS, {"status": "running"})
    with pytest.raises(TypeError):  # not serialisable: fails while writing
        write_json(tmp_path / RESULTS, {"status": object()})
    assert parse((tmp_path / RESULTS).read_bytes(), tmp_path / RESULTS) == {"status": "running"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([LAST, RESULTS])


def test_early_stopping_after_patience(make_cfg, tmp_path):
    # lr so small that validation accuracy stalls at once
    train(make_cfg("trainer.epochs=8", "trainer.patience=1", "optimizer.lr=1e-9"), tmp_path)
    m = record(tmp_path).metrics
    assert m.epochs_run < 8 and m.epochs_run == m.best_epoch + 1


def test_val_size_zero_selects_on_test_and_says_so(make_cfg, tmp_path):
    score = train(make_cfg("data.val_size=0"), tmp_path)

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    # strict JSON, as any parser reads it: the missing validation figures are null, not NaN
    m = json.loads((tmp_path / RESULTS).read_text(), parse_constant=refuse)["metrics"]
    assert m["selection"] == "test_acc" and score == m["test_acc"] and m["val_acc"] is None
    assert history(tmp_path).val_acc.isna().all()


def test_init_from_starts_from_saved_weights(make_cfg, tmp_path):
    train(make_cfg(), tmp_path / "first")
    best = BestState.load(tmp_path / "first/best.pt")
    train(make_cfg(f"trainer.init_from={tmp_path / 'first/best.pt'}", "optimizer.lr=1e-12", "trainer.epochs=1"),
          tmp_path / "second")
    second = checkpoint.load(tmp_path / "second/last.pt")["model"]
    for name, t in best.model.items():
        torch.testing.assert_close(second[name], t, rtol=0, atol=1e-6)


def test_diverging_run_is_recorded_failed_and_raises(make_cfg, tmp_path):
    with pytest.raises(DivergedError, match="diverged"):
        train(make_cfg("optimizer=sgd", "optimizer.lr=1e12"), tmp_path)
    rec = record(tmp_path)
    assert rec.status == "failed" and "diverged" in rec.error


def test_augmentation_is_seeded_and_moves_pixels_by_at_most_k():
    x = torch.arange(2 * 3 * 784, dtype=torch.float32).view(2, 3, 1, 28, 28)
    gens = lambda: [torch.Generator().manual_seed(s) for s in (0, 1)]  # noqa: E731
    a, b = data.random_shift(x, 2, gens(), fill=(-1.0,)), data.random_shift(x, 2, gens(), fill=(-1.0,))
    assert torch.equal(a, b)
    assert not torch.equal(a, data.random_shift(x, 2, [torch.Generator().manual_seed(9)] * 2, fill=(-1.0,)))
    moved = 0
    for k in range(2):
        for i in range(3):
            src, out = x[k, i, 0], a[k, i, 0]
            kept = out != -1
            # every kept pixel comes from (r - dy, c - dx) with one (dy, dx) per image, |dy|, |dx| <= 2
            r, c = torch.nonzero(kept, as_tuple=True)
            flat = out[kept].long() - int(src[0, 0])
            dy, dx = r - flat // 28, c - flat % 28
            assert dy.unique().numel() == 1 and dx.unique().numel() == 1
            assert abs(int(dy[0])) <= 2 and abs(int(dx[0])) <= 2
            moved += int(dy[0] != 0 or dx[0] != 0)
    assert moved > 0


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("override, message", [
    ("model.hidden=[0]", "widths must be positive"),
    ("model.hidden=[64,-3]", "widths must be positive"),
    ("trainer.batch_size=0", "batch_size must be positive"),
    ("optimizer.lr=-0.1", "lr must be positive"),
    ("model.dropout=1.0", "dropout"),
    ("device=cuda", "no CUDA GPU"),
    ("trainer.init_from=nowhere/best.pt", "no such file"),
    ("seed=-1", "^seed must be >= 0"),
    ("device=cuda:x", "unknown"),
    ("scheduler=cosine scheduler.warmup=2", "scheduler.warmup is a fraction"),
    ("optimizer.betas=[2,3]", "betas must be two numbers in"),
    ("optimizer.betas=[0.9]", "betas must be two numbers in"),
    ("scheduler=one_cycle scheduler.div_factor=0", "scheduler.div_factor must be positive"),
    ("data.std=0", "data.std must be positive"),
    ("+trainer.patiance=1", "unknown key trainer.patiance"),  # + appends past the schema
    ("+model.dropuot=0.2", "unknown key model.dropuot"),
    ("scheduler=one_cycle scheduler.pct_start=2", "pct_start"),  # and by OneCycleLR
    ("scheduler=one_cycle trainer.batch_size=500 trainer.epochs=2", "warms up over pct_start=0.25 of 2 steps"),
    ("matmul_precision=low", "matmul_precision='low' is unknown: use one of highest, high, medium"),
    ("seeds_per_trial=4", r"seeds_per_trial=4 but n_seeds=1: .* add n_seeds='\$\{seeds_per_trial\}'"),
])
def test_bad_values_get_one_line_errors(make_cfg, tmp_path, override, message):
    if override == "device=cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(NeuralForgeError, match=message) as err:
        train(make_cfg(*override.split()), tmp_path)
    assert "\n" not in str(err.value)
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_a_gpu_number_past_the_last_gpu_is_refused(monkeypatch):
    # the machine's answer is faked (CI has no GPU); what is tested is the harness's check of it
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert hardware.resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ConfigError, match="has 1 CUDA GPU"):
        hardware.resolve_device("cuda:5")


def test_missing_dataset_names_files_and_override(make_cfg, tmp_path):
    with pytest.raises(DataError) as err:
        train(make_cfg(f"data.root={tmp_path / 'nothing'}"), tmp_path / "run")
    assert "train-images-idx3-ubyte" in str(err.value) and "data.root=" in str(err.value)


def test_a_failed_download_says_why_and_leaves_no_empty_folders(make_cfg, tmp_path, monkeypatch):
    # the real download code, pointed at a mirror that is not there: offline, on any machine
    monkeypatch.setattr(datasets.FashionMNIST, "mirrors", [(tmp_path / "no-mirror").as_uri() + "/"])
    root = tmp_path / "new" / "data"  # neither exists yet
    with pytest.raises(DataError, match="the download failed") as err:
        train(make_cfg("data=fashion_mnist", f"data.root={root}", "data.download=true"), tmp_path / "run")
    assert "data.root=" in str(err.value)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[:-100]), "bytes"),
    (lambda p: p.write_bytes(b"\x00\x00\x08\x04" + p.read_bytes()[4:]), "magic"),
    (lambda p: p.write_bytes(b"\x00"), "too short"),
])
def test_corrupt_dataset_file_gets_a_clear_error(make_cfg, tmp_path, damage, message):
    root = write_dataset(tmp_path / "data")
    damage(root / "MNIST/raw/train-images-idx3-ubyte")
    with pytest.raises(DataError, match=message):
        train(make_cfg(f"data.root={root}"), tmp_path / "run")


def test_an_old_torchvisions_processed_copy_is_refused(make_cfg, tmp_path):
    root = write_dataset(tmp_path / "data")
    processed = root / "MNIST" / "processed"
    processed.mkdir()
    for name, n in (("training.pt", 50), ("test.pt", 20)):  # torchvision would read these, not raw/
        torch.save((torch.zeros(n, 28, 28, dtype=torch.uint8), torch.full((n,), 7)), processed / name)
    with pytest.raises(DataError, match="old torchvision's copy"):
        train(make_cfg(f"data.root={root}"), tmp_path / "run")


def test_label_out_of_range_is_corrupt(make_cfg, tmp_path):
    root = write_dataset(tmp_path / "data")
    write_idx(root / "MNIST/raw/t10k-labels-idx1-ubyte", np.full(200, 12, dtype=np.uint8))
    with pytest.raises(DataError, match="label 12"):
        train(make_cfg(f"data.root={root}"), tmp_path / "run")


def test_truncated_checkpoint_is_refused_and_kept(make_cfg, tmp_path):
    with pytest.raises(Interrupted):
        train(make_cfg(), tmp_path, listeners=interrupt_after(1))
    last = tmp_path / LAST
    last.write_bytes(last.read_bytes()[:1000])
    torn = last.read_bytes()
    with pytest.raises(CheckpointError, match="unreadable"):
        train(make_cfg(), tmp_path)
    assert last.read_bytes() == torn


def test_checkpoint_with_pickled_code_is_refused(make_cfg, tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned",))
    torch.save({"fingerprint": "x", "payload": Evil()}, tmp_path / LAST)
    with pytest.raises(CheckpointError, match="weights_only"):
        checkpoint.load(tmp_path / LAST)
    with pytest.raises(CheckpointError, match="refused"):
        train(make_cfg(), tmp_path)


def test_checkpoint_of_another_config_is_refused(make_cfg, tmp_path):
    with pytest.raises(Interrupted):
        train(make_cfg("seed=1"), tmp_path, listeners=interrupt_after(1))
    before = (tmp_path / RESULTS).read_bytes()
    with pytest.raises(ConfigError, match="another config"):  # its record says so first
        train(make_cfg("seed=2"), tmp_path)
    assert (tmp_path / RESULTS).read_bytes() == before
    (tmp_path / RESULTS).unlink()  # the checkpoint alone must refuse too
    ckpt = (tmp_path / LAST).read_bytes()
    with pytest.raises(CheckpointError, match="belongs to another config"):
        train(make_cfg("seed=2"), tmp_path)
    assert (tmp_path / LAST).read_bytes() == ckpt


def test_foreign_checkpoint_is_refused(make_cfg, tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / LAST)
    with pytest.raises(CheckpointError, match="another config"):
        train(make_cfg(), tmp_path)
    (tmp_path / LAST).write_text("hello world\n")  # torch's legacy unpickler raises KeyError on this
    with pytest.raises(CheckpointError, match="unreadable"):
        train(make_cfg(), tmp_path)


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(make_cfg, tmp_path):
    lock = tmp_path / LOCK
    tmp_path.mkdir(exist_ok=True)
    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    with pytest.raises(LockedError, match="in use"):
        train(make_cfg(), tmp_path)
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    lock.write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
    train(make_cfg(), tmp_path)
    assert record(tmp_path).status == "complete" and not lock.exists()


def test_lock_of_another_host_is_taken_over_only_once_it_is_not_refreshed(make_cfg, tmp_path):
    lock = tmp_path / LOCK
    lock.write_text(json.dumps({"pid": 1, "host": "node-a"}))  # a SLURM job killed on another node
    with pytest.raises(LockedError, match=r"refreshed \d s ago"):  # seconds, not the 30 minutes that free it
        train(make_cfg(), tmp_path)
    old = time.time() - STALE_AFTER_S - 60
    os.utime(lock, (old, old))
    train(make_cfg(), tmp_path)
    assert record(tmp_path).status == "complete" and not lock.exists()


@pytest.mark.parametrize("content", ["", "own pid"])
def test_an_empty_lock_or_one_naming_this_process_is_a_dead_one(make_cfg, tmp_path, content):
    lock = tmp_path / LOCK
    own = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
    lock.write_text(own if content else "")  # the pid a killed process had, now this one's (pid 1 in a container)
    if not content:
        with pytest.raises(LockedError):  # a lock being written this instant is empty too
            train(make_cfg(), tmp_path)
        old = time.time() - 120
        os.utime(lock, (old, old))
    train(make_cfg(), tmp_path)
    assert record(tmp_path).status == "complete"


def test_a_lock_deleted_by_hand_is_taken_again_and_one_taken_by_another_is_left_alone(make_cfg, tmp_path):
    def at_epoch_1(folder, action):
        def act(training):
            if training.epoch == 1:
                action(folder / LOCK)
        return [OnEpoch(act)]

    unlocks = at_epoch_1(tmp_path / "a", lambda lock: lock.unlink())
    train(make_cfg("trainer.epochs=3"), tmp_path / "a", listeners=unlocks)
    assert record(tmp_path / "a").status == "complete"
    assert not (tmp_path / "a" / LOCK).exists()

    other = {"pid": os.getppid(), "host": socket.gethostname()}  # deleted, then taken by another process
    with pytest.raises(LockedError, match="was taken by pid"):
        train(make_cfg("trainer.epochs=3"), tmp_path / "b",
              listeners=at_epoch_1(tmp_path / "b", lambda lock: lock.write_text(json.dumps(other))))
    assert json.loads((tmp_path / "b" / LOCK).read_text()) == other  # its lock stays


def test_a_running_run_refreshes_its_lock_every_epoch(make_cfg, tmp_path):
    lock = tmp_path / LOCK
    seen = []

    def act(training):
        seen.append(lock.stat().st_mtime)
        os.utime(lock, (0, 0))
    train(make_cfg("trainer.epochs=3"), tmp_path, listeners=[OnEpoch(act)])
    assert len(seen) == 3 and all(t > time.time() - 60 for t in seen)


@pytest.mark.parametrize("first, second, differ", [
    (("n_seeds=2", "trainer.keep_last=false"), ("optimizer.lr=0.01", "trainer.keep_last=false"),
     "optimizer.lr: 0.001 there, 0.01 here"),
    ((), ("n_seeds=2",), "n_seeds: 1 there, 2 here"),  # a group started where a single run finished
    (("n_seeds=2",), ("seed=2", "n_seeds=2"), "(its seeds differ)"),
    (("threads=1",), ("threads=2",), "threads: 1 there, 2 here"),  # relaunched on another launcher
])
def test_a_folder_refuses_another_config_even_without_last_pt(make_cfg, tmp_path, first, second, differ):
    train(make_cfg(*first), tmp_path)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    with pytest.raises(ConfigError, match="holds a run of another config") as err:
        train(make_cfg(*second), tmp_path)
    assert differ in str(err.value)  # says what differs, not two hashes
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


def test_a_complete_run_is_not_reported_complete_on_other_data_files(make_cfg, tmp_path):
    other = write_dataset(tmp_path / "other", seed=1)
    train(make_cfg(), tmp_path / "run")
    with pytest.raises(ConfigError, match="complete run on other data files"):
        train(make_cfg(f"data.root={other}"), tmp_path / "run")
    moved = shutil.copytree(make_cfg().data.root, tmp_path / "moved")  # the same files elsewhere: still complete
    score = record(tmp_path / "run").metrics.val_acc
    assert train(make_cfg(f"data.root={moved}"), tmp_path / "run") == score
    shutil.rmtree(moved)  # deleted after training: nothing to compare, nothing is downloaded
    assert train(make_cfg(f"data.root={moved}", "data.download=true"), tmp_path / "run") == score
    assert not moved.exists()


def test_resume_refuses_other_data_files(make_cfg, tmp_path):
    other = write_dataset(tmp_path / "other", seed=1)
    with pytest.raises(Interrupted):
        train(make_cfg(), tmp_path / "run", listeners=interrupt_after(1))
    with pytest.raises(CheckpointError, match="trained on other data files"):
        train(make_cfg(f"data.root={other}"), tmp_path / "run")


def test_init_from_a_file_that_is_no_checkpoint_says_what_to_give_and_deletes_nothing(make_cfg, tmp_path):
    train(make_cfg(), tmp_path / "first")
    history_file = tmp_path / "first" / HISTORY
    with pytest.raises(CheckpointError) as err:
        train(make_cfg(f"trainer.init_from={history_file}"), tmp_path / "new")
    assert "Give trainer.init_from the path of a run's best.pt" in str(err.value)
    assert "Delete it" not in str(err.value)  # another run's file: never advise deleting it


def test_init_from_a_groups_last_checkpoint_is_refused(make_cfg, tmp_path):
    train(make_cfg("n_seeds=2"), tmp_path / "group")
    with pytest.raises(CheckpointError, match="holds 2 members' weights"):
        train(make_cfg(f"trainer.init_from={tmp_path / 'group' / LAST}"), tmp_path / "new")


# ---------------------------------------------------------------- real data
@pytest.mark.skipif(not REAL_DATA, reason="NEURALFORGE_DATA is not set: no real MNIST to train on")
def test_one_epoch_on_real_mnist_reaches_95_percent(make_cfg, tmp_path):
    cfg = make_cfg(f"data.root={REAL_DATA}", "model.hidden=[128,64]", "data.val_size=5000", "trainer.epochs=1",
                   "threads=null", "trainer.eval_batch_size=1000")
    train(cfg, tmp_path)
    assert record(tmp_path).metrics.test_acc >= 0.95


@pytest.mark.parametrize("n_seeds", [1, 3])
def test_a_run_says_what_it_starts_and_ends_on_one_line_with_its_choice_accuracies_and_folder(make_cfg, tmp_path,
                                                                                             caplog, n_seeds):
    with caplog.at_level("INFO"):
        train(make_cfg(f"n_seeds={n_seeds}"), tmp_path)
    lines = [r.getMessage() for r in caplog.records if r.name == "neuralforge"]
    seeds = "seed 0" if n_seeds == 1 else "seeds 0..2 together"
    assert lines[0] == f"Training {seeds} for 2 epochs in {tmp_path}"
    done = lines[-1]
    assert done.startswith("Done: ") and str(tmp_path) in done and "chosen on validation" in done
    if n_seeds == 1:
        rec = record(tmp_path)
        m = rec.metrics
        assert (f"epoch {m.best_epoch} of 2" in done and f"val acc {100 * m.val_acc:.2f}%" in done
                and f"test acc {100 * m.test_acc:.2f}%" in done)
    else:
        accs = [100 * record(tmp_path / f"seed={s}").metrics.test_acc for s in range(3)]
        assert f"mean {np.mean(accs):.2f}% [min {min(accs):.2f}, max {max(accs):.2f}]" in done


@pytest.mark.parametrize("argv, line", [
    (["data=cifar"], "data=cifar is not an option of data: use one of cifar10, cifar100, fashion_mnist, kmnist, "
                     "mnist, svhn, tensors"),
    (["-m", "seed=0,1", "model.hiden=[64]"], "model.hiden is not a key of this config: did you mean model.hidden?"),
    (["trainer.batch_size=many"], "trainer.batch_size: Value 'many' of type 'str' could not be converted to Integer"),
    (["seed=1"], None), (["--cfg", "job", "data=cifar"], None),  # composes; Hydra's own flags are Hydra's
])
def test_a_command_line_mistake_is_one_line_naming_the_key(argv, line):
    from neuralforge.commandline import problem
    found = problem(argv, Path(CONF))
    assert (found is None) if line is None else (found.startswith(line) and "\n" not in found)


def test_a_requeued_slurm_job_takes_its_own_lock_over_at_once_from_another_node(make_cfg, tmp_path, monkeypatch):
    lock = tmp_path / LOCK
    job = {"cluster": "test", "job_id": "41", "restart": 0}
    lock.write_text(json.dumps({"pid": 4311, "host": "node1", "since": time.time(), "slurm": job}))
    for key, value in {"SLURM_JOB_ID": "41", "SLURM_CLUSTER_NAME": "test", "SLURM_RESTART_COUNT": "0"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(LockedError, match="in use by pid 4311 on node1"):  # the same restart: that process lives
        train(make_cfg(), tmp_path)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # the job requeued onto this node: its restart 1
    train(make_cfg(), tmp_path)
    rec = record(tmp_path)
    assert rec.status == "complete" and rec.provenance["slurm"] == {**job, "restart": 1}
