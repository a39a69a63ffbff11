"""The CNN: shapes for several settings, learning on the fixture, and K members in one process."""

from __future__ import annotations

import pytest
import torch
from conftest import ONE_STEP, record

from neuralforge import checkpoint
from neuralforge.engine import settle, train
from neuralforge.models import CNN
from neuralforge.record.files import LAST
from neuralforge.training import Training

SMALL = ("model=cnn", "model.channels=[4,8]", "model.hidden=16")


@pytest.mark.parametrize("channels, kernel, pool", [([4], 3, "max"), ([4, 8], 5, "avg"), ([8, 16, 32], 3, "stride")])
def test_cnn_shapes_for_several_settings(channels, kernel, pool):
    model = CNN(channels, kernel=kernel, pool=pool, hidden=16, members=2)
    model.reset_parameters([torch.Generator().manual_seed(k) for k in range(2)])
    assert model(torch.randn(2, 3, 1, 28, 28)).shape == (2, 3, 10)
    assert model(torch.randn(5, 1, 28, 28)).shape == (2, 5, 10)
    side = 28
    for _ in channels:
        side = (side + 1) // 2 if pool == "stride" else side // 2
    convs = sum(c_out * c_in * kernel ** 2 + 2 * c_out for c_in, c_out in zip([1, *channels], channels))
    head = channels[-1] * side * side * 16 + 16 + 16 * 10 + 10
    assert sum(p[0].numel() for p in model.parameters()) == convs + head


def test_member_of_a_group_equals_the_model_alone():
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    group, alone = CNN([4, 8], members=3), CNN([4, 8], members=1)
    group.reset_parameters(gens([0, 1, 2]))
    alone.reset_parameters(gens([2]))
    x = torch.randn(3, 6, 1, 28, 28)
    torch.testing.assert_close(group(x)[2], alone(x[2:3])[0])  # train mode: batch statistics per member
    group.eval(), alone.eval()
    torch.testing.assert_close(group(x)[2], alone(x[2:3])[0])  # eval mode: running statistics per member


def test_cnn_trains_above_chance(make_cfg, tmp_path):
    train(make_cfg(*SMALL, "trainer.epochs=4", "optimizer.lr=3e-3"), tmp_path)
    assert record(tmp_path).metrics.test_acc > 0.5


def test_cnn_groups_match_single_runs_after_the_first_step(make_cfg, tmp_path):
    # SGD, not Adam: Adam's first step is lr * g / (|g| + eps), which turns float32 rounding in
    # a near-zero gradient into a visible difference; SGD keeps rounding at rounding size.
    sgd = ("optimizer=sgd", "optimizer.lr=0.05")
    train(make_cfg(*SMALL, "seed=0", "n_seeds=3", *ONE_STEP, *sgd), tmp_path / "group")
    group = checkpoint.load(tmp_path / "group" / LAST)["model"]
    cfg = make_cfg(*SMALL, "seed=0", "n_seeds=3", *ONE_STEP, *sgd)
    start = Training(cfg, *settle(cfg))  # the group's weights before any step
    for k in range(3):
        train(make_cfg(*SMALL, f"seed={k}", *ONE_STEP, *sgd), tmp_path / f"single{k}")
        single = checkpoint.load(tmp_path / f"single{k}" / LAST)["model"]
        for name, tensor in single.items():
            # a conv's weight gradient sums 500 x 28 x 28 products, and a grouped conv sums them
            # in another order than a plain one: float32 rounding of such a sum reaches 1e-4
            torch.testing.assert_close(group[name][k], tensor[0], rtol=1e-3, atol=1e-5)
            assert not torch.equal(group[name][k], start.model.state_dict()[name][k])  # the step moved it
