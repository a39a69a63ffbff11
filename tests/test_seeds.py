"""K seeded members trained together in one process (n_seeds=K) against the same seeds run alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ONE_STEP, Interrupted, OnEpoch, interrupt_after, record

from neuralforge import checkpoint
from neuralforge.checkpoint import BestState
from neuralforge.engine import settle, train
from neuralforge.record.errors import DivergedError
from neuralforge.record.files import BEST, HISTORY, LAST, PREDICTIONS
from neuralforge.training import Training


def test_group_members_match_single_runs_after_the_first_step(make_cfg, tmp_path):
    train(make_cfg("seed=5", "n_seeds=4", *ONE_STEP), tmp_path / "group")
    group = checkpoint.load(tmp_path / "group" / LAST)["model"]
    cfg = make_cfg("seed=5", "n_seeds=4", *ONE_STEP)
    start = Training(cfg, *settle(cfg))  # the group's weights before any step
    for k in range(4):
        train(make_cfg(f"seed={5 + k}", *ONE_STEP), tmp_path / f"single{k}")
        single = checkpoint.load(tmp_path / f"single{k}" / LAST)["model"]
        for name, tensor in single.items():
            torch.testing.assert_close(group[name][k], tensor[0], rtol=1e-5, atol=1e-7)
            # and the step was taken: equal after it, not merely equal because nothing moved
            assert not torch.allclose(group[name][k], start.model.state_dict()[name][k])


def test_each_member_gets_its_own_folder_and_records(make_cfg, tmp_path):
    score = train(make_cfg("seed=10", "n_seeds=3"), tmp_path)
    recs = [record(tmp_path / f"seed={s}") for s in (10, 11, 12)]
    assert [r.seed for r in recs] == [10, 11, 12]
    assert [r.seeds["order"] for r in recs] == [10, 11, 12]
    assert all(r.status == "complete" and r.group.size == 3 for r in recs)
    assert [r.group.member for r in recs] == [0, 1, 2]
    assert score == pytest.approx(np.mean([r.metrics.val_acc for r in recs]))
    for s in (10, 11, 12):
        folder = tmp_path / f"seed={s}"
        assert (folder / PREDICTIONS).exists() and (folder / HISTORY).exists()
        best = BestState.load(folder / BEST)
        assert best.config["seed"] == s and best.model["weights.0"].shape[0] == 1
    assert (tmp_path / LAST).exists() and not (tmp_path / "seed=10" / LAST).exists()


def test_killed_group_resumes_every_member_bit_for_bit(make_cfg, tmp_path, caplog):
    args = ("n_seeds=3", "trainer.epochs=3", "model.dropout=0.2", "data.augment.shift=1", "scheduler=cosine")
    train(make_cfg(*args), tmp_path / "straight")
    with pytest.raises(Interrupted):
        train(make_cfg(*args), tmp_path / "killed", listeners=interrupt_after(1))
    assert [record(tmp_path / f"killed/seed={s}").status for s in range(3)] == ["running"] * 3
    with caplog.at_level("INFO"):
        train(make_cfg(*args), tmp_path / "killed")
    assert "Resuming from epoch 2" in caplog.text
    for s in range(3):
        a = record(tmp_path / f"straight/seed={s}")
        b = record(tmp_path / f"killed/seed={s}")
        assert a.metrics == b.metrics
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / f"straight/seed={s}/history.csv").drop(columns="seconds"),
                                      pd.read_csv(tmp_path / f"killed/seed={s}/history.csv").drop(columns="seconds"))
        assert np.array_equal(np.load(tmp_path / f"straight/seed={s}/predictions.npy"),
                              np.load(tmp_path / f"killed/seed={s}/predictions.npy"))


def test_one_diverging_member_fails_alone(make_cfg, tmp_path):
    def poison_member_1(training):
        if training.epoch == 1:
            with torch.no_grad():
                training.model.weights[0][1].fill_(float("nan"))

    with pytest.raises(DivergedError, match=r"1 of 3 failed: seed=1"):
        train(make_cfg("n_seeds=3", "trainer.epochs=3"), tmp_path, listeners=[OnEpoch(poison_member_1)])
    states = [record(tmp_path / f"seed={s}") for s in range(3)]
    assert [r.status for r in states] == ["complete", "failed", "complete"]
    assert states[0].metrics.epochs_run == 3 and states[1].metrics.epochs_run == 2
    assert "diverged" in states[1].error


def test_a_group_with_a_failed_member_started_again_reports_it_and_rewrites_nothing(make_cfg, tmp_path):
    def poison_member_1(training):
        if training.epoch == 1:
            with torch.no_grad():
                training.model.weights[0][1].fill_(float("nan"))

    cfg = make_cfg("n_seeds=3", "trainer.epochs=3", "trainer.keep_last=false")
    with pytest.raises(DivergedError):
        train(cfg, tmp_path, listeners=[OnEpoch(poison_member_1)])
    assert (tmp_path / "last.pt").exists()  # kept despite keep_last=false: the group is not all complete
    written = {p: p.read_bytes() for p in tmp_path.glob("seed=*/*") if p.suffix in (".json", ".csv", ".npy")}
    with pytest.raises(DivergedError, match=r"1 of 3 failed: seed=1"):
        train(cfg, tmp_path)  # nothing left to train: no retraining, the same failure
    assert {p: p.read_bytes() for p in written} == written


def test_members_stop_early_on_their_own(make_cfg, tmp_path):
    train(make_cfg("n_seeds=4", "trainer.epochs=6", "trainer.patience=1", "optimizer.lr=3e-3"), tmp_path)
    for s in range(4):
        m = record(tmp_path / f"seed={s}").metrics
        h = pd.read_csv(tmp_path / f"seed={s}/history.csv")
        assert len(h) == m.epochs_run and h.val_acc.idxmax() + 1 == m.best_epoch
        assert m.epochs_run == 6 or m.epochs_run == m.best_epoch + 1
    # members stopped early, each at its own epoch (here 5, 3, 3, 3 of 6)
    epochs_run = [record(tmp_path / f"seed={s}").metrics.epochs_run for s in range(4)]
    assert min(epochs_run) < 6 and len(set(epochs_run)) > 1
