"""A model of one's own: any nn.Module named by _target_ in a YAML file outside the package,
trained as K seeded members in one process through torch.func."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from conftest import CONF, FAST, ROOT, Interrupted, interrupt_after, record
from hydra import compose, initialize_config_dir

from neuralforge import checkpoint, functional
from neuralforge.checkpoint import BestState
from neuralforge.engine import settle, train
from neuralforge.record.errors import ConfigError
from neuralforge.record.files import BEST, LAST, PREDICTIONS
from neuralforge.training import Training

ALLOW = "allow_targets=[nf_user_nets.*]"

USER_MODULE = '''
import math
from torch import nn


class SmallNet(nn.Module):
    def __init__(self, hidden, input_shape, num_classes, dropout=0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), nn.ReLU(),
                                 nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.net(x)


class ConvBN(nn.Module):
    def __init__(self, input_shape, num_classes, channels=4):
        super().__init__()
        c, h, w = input_shape
        self.body = nn.Sequential(nn.Conv2d(c, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
                                  nn.MaxPool2d(2), nn.Flatten(), nn.Linear(channels * (h // 2) * (w // 2), num_classes))

    def forward(self, x):
        return self.body(x)


def seven_classes(input_shape):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 7))
'''

MODELS = {  # the user's config folder: one YAML file per model
    "smallnet": "_target_: nf_user_nets.SmallNet\nhidden: 32\ndropout: 0.2\n",
    "convbn": "_target_: nf_user_nets.ConvBN\nchannels: 4\n",
    "seven": "_target_: nf_user_nets.seven_classes\n",
    # no Python file at all: torch.nn's layers, composed in YAML
    "sequential": textwrap.dedent("""\
        _target_: torch.nn.Sequential
        _args_:
          - _target_: torch.nn.Flatten
          - _target_: torch.nn.Linear
            in_features: 784
            out_features: 16
          - _target_: torch.nn.ReLU
          - _target_: torch.nn.Linear
            in_features: 16
            out_features: 10
        """),
}


@pytest.fixture(scope="session")
def user_dir(tmp_path_factory) -> Path:
    """A researcher's own folder, outside the package: a module and a config folder."""
    root = tmp_path_factory.mktemp("user")
    (root / "nf_user_nets.py").write_text(USER_MODULE)
    (root / "conf" / "model").mkdir(parents=True)
    for name, text in MODELS.items():
        (root / "conf" / "model" / f"{name}.yaml").write_text(text)
    return root


@pytest.fixture
def user_cfg(idx_root, user_dir, monkeypatch):
    """Compose as `python run.py hydra.searchpath=[file://<user>/conf]` does, with the user's module importable."""
    monkeypatch.syspath_prepend(str(user_dir))

    def make(*overrides: str):
        fast = [o for o in FAST if not o.startswith("model.")]
        with initialize_config_dir(config_dir=CONF):
            return compose("config", overrides=[f"hydra.searchpath=[file://{user_dir / 'conf'}]",
                                                f"data.root={idx_root}", *fast, ALLOW, *overrides])
    return make


def test_a_user_module_from_its_own_config_folder_trains_resumes_bit_exactly_and_writes_the_same_records(
        user_cfg, make_cfg, tmp_path, caplog):
    args = ("model=smallnet", "n_seeds=2", "trainer.epochs=3", "data.augment.shift=1", "data.augment.flip=true",
            "scheduler=cosine")
    train(user_cfg(*args), tmp_path / "straight")
    with pytest.raises(Interrupted):
        train(user_cfg(*args), tmp_path / "killed", listeners=interrupt_after(1))
    with caplog.at_level("INFO"):
        train(user_cfg(*args), tmp_path / "killed")
    assert "Resuming from epoch 2" in caplog.text
    train(make_cfg("n_seeds=2", "trainer.epochs=1"), tmp_path / "builtin")
    for s in range(2):
        a, b = (record(tmp_path / f"{run}/seed={s}") for run in ("straight", "killed"))
        assert a.status == "complete" and a.metrics.test_acc > 0.5  # chance is 0.1
        assert a.metrics == b.metrics
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / f"straight/seed={s}/history.csv").drop(columns="seconds"),
                                      pd.read_csv(tmp_path / f"killed/seed={s}/history.csv").drop(columns="seconds"),
                                      check_exact=True)
        assert np.array_equal(np.load(tmp_path / f"straight/seed={s}/predictions.npy"),
                              np.load(tmp_path / f"killed/seed={s}/predictions.npy"))
        # the records of a built-in model's group, field for field, and the files beside them
        builtin = record(tmp_path / f"builtin/seed={s}")
        assert a.to_json().keys() == builtin.to_json().keys()
        assert {p.name for p in (tmp_path / f"straight/seed={s}").iterdir()} == \
            {p.name for p in (tmp_path / f"builtin/seed={s}").iterdir()}
        assert a.config["model"]["_target_"] == "nf_user_nets.SmallNet" and a.seed == s
        assert a.dropout_masks.startswith("shared") and builtin.dropout_masks.startswith("own")



def test_an_own_models_best_pt_loads_into_a_fresh_module_and_predicts_what_the_run_recorded(user_cfg, user_dir,
                                                                                              idx_root, tmp_path):
    train(user_cfg("model=smallnet", "n_seeds=2", "trainer.epochs=2"), tmp_path)
    import nf_user_nets  # the user's own module, on the path user_cfg put it on

    from neuralforge import data
    for s in range(2):
        rec = record(tmp_path / f"seed={s}")
        net = nf_user_nets.SmallNet(hidden=32, input_shape=[1, 28, 28], num_classes=10, dropout=0.2)
        net.load_state_dict(BestState.load(tmp_path / f"seed={s}" / BEST).model)  # the documented one line
        net.eval()
        d = data.load(rec.config["data"], torch.device("cpu"))
        with torch.no_grad():
            pred = net(d.test_x).argmax(1).numpy()
        assert np.array_equal(pred, np.load(tmp_path / f"seed={s}" / PREDICTIONS))


def test_member_k_of_a_group_starts_with_the_weights_of_the_single_run_seed_s_plus_k(user_cfg, tmp_path):
    def training(*overrides):
        cfg = user_cfg(*overrides)
        return Training(cfg, *settle(cfg))

    group = training("model=smallnet", "seed=5", "n_seeds=3")
    weights = group.model.state_dict()
    for k in range(3):
        single = training("model=smallnet", f"seed={5 + k}")
        for name, tensor in single.model.state_dict().items():
            assert torch.equal(weights[name][k], tensor[0]), name
        # and the single run's weights are nn.Linear's own default init under torch.manual_seed(5 + k)
        torch.manual_seed(5 + k)
        alone = torch.nn.Linear(784, 32)
        assert torch.equal(single.model.state_dict()["net.net.1.weight"][0], alone.weight)
    assert not torch.equal(weights["net.net.1.weight"][0], weights["net.net.1.weight"][1])
    # one member's weights, as best.pt holds them, start a new group through trainer.init_from
    checkpoint.save({"model": group.model.member_state(1)}, tmp_path / "best.pt")
    again = training("model=smallnet", "n_seeds=2", f"trainer.init_from={tmp_path / 'best.pt'}")
    for name, tensor in again.model.state_dict().items():
        assert torch.equal(tensor[0], weights[name][1]) and torch.equal(tensor[1], weights[name][1])


def test_batch_norm_statistics_and_steps_are_per_member(user_cfg, tmp_path):
    # one SGD step with every per-member source on (order, split, shifts): member k of the group
    # equals the single run seed=k, running statistics included
    args = ("model=convbn", "trainer.batch_size=500", "trainer.epochs=1", "data.augment.shift=2",
            "optimizer=sgd", "optimizer.lr=0.05")
    train(user_cfg("n_seeds=3", *args), tmp_path / "group")
    group = checkpoint.load(tmp_path / "group" / LAST)["model"]
    for k in range(3):
        train(user_cfg(f"seed={k}", *args), tmp_path / f"single{k}")
        single = checkpoint.load(tmp_path / f"single{k}" / LAST)["model"]
        assert set(single) >= {"net.body.1.running_mean", "net.body.1.num_batches_tracked"}
        for name, tensor in single.items():
            # a conv's weight gradient sums 500 x 28 x 28 products, in another order under vmap:
            # float32 rounding of such a sum reaches 1e-4 (as for the built-in CNN)
            torch.testing.assert_close(group[name][k], tensor[0], rtol=1e-3, atol=1e-5)
    assert not torch.equal(group["net.body.1.running_mean"][0], group["net.body.1.running_mean"][1])


def test_a_module_with_the_wrong_output_shape_is_refused_in_one_line_before_training(user_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"nf_user_nets.seven_classes maps a batch of shape \(2, 1, 28, 28\) "
                                          r"to \(2, 7\), not \(2, 10\)") as err:
        train(user_cfg("model=seven"), tmp_path)
    assert "\n" not in str(err.value)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing trained, nothing written


def test_a_target_outside_the_whitelist_is_refused_in_one_line_naming_allow_targets(user_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"nf_user_nets.SmallNet is not among .* allow_targets='\[nf_user_nets.\*\]'"):
        train(user_cfg("model=smallnet", "allow_targets=[]"), tmp_path)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_torch_nn_layers_composed_in_yaml_train_as_a_group(user_cfg, tmp_path):
    train(user_cfg("model=sequential", "n_seeds=2", "trainer.epochs=2", "allow_targets=[]"), tmp_path)
    assert all(record(tmp_path / f"seed={s}").metrics.test_acc > 0.5 for s in range(2))


@pytest.mark.slow
def test_the_command_line_takes_a_config_dir_and_searches_a_user_module_with_seeds_per_trial(
        idx_root, user_dir, tmp_path):
    fast = [o for o in FAST if not o.startswith("model.")]
    env = {"PYTHONPATH": f"{ROOT}:{user_dir}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "run.py", "--config-dir", str(user_dir / "conf"), "-m", "model=smallnet",
                          ALLOW, f"data.root={idx_root}", *fast, "hparams_search=mlp_optuna", "seeds_per_trial=2",
                          "model.hidden=16",  # fixed on the command line: out of the preset's search space
                          "trainer.epochs=1", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={tmp_path}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    study = optuna.load_study(study_name="mlp_optuna", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2
    for t in study.trials:
        assert t.user_attrs["seeds"] == [0, 1]
        recs = [record(tmp_path / f"trial_{t.number:04d}/seed={s}") for s in (0, 1)]
        assert all(r.config["model"]["_target_"] == "nf_user_nets.SmallNet" for r in recs)
        assert t.value == pytest.approx(np.mean([r.metrics.val_acc for r in recs]))


def test_dropout_draws_from_the_first_members_generator_and_leaves_the_global_one_alone():
    net = functional.build(lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5)), [0, 1], (1, 2, 2))
    x = torch.ones(2, 3, 1, 2, 2)
    before = torch.get_rng_state()
    a = net(x, [torch.Generator().manual_seed(7), torch.Generator()])
    b = net(x, [torch.Generator().manual_seed(7), torch.Generator()])
    assert torch.equal(a, b) and not torch.equal(a[0], a[1])  # seeded, and each member its own masks
    assert torch.equal(torch.get_rng_state(), before)
