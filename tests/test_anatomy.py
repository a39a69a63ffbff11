"""The anatomy of run-to-run randomness: groups whose members vary one source only, the one-bit
init perturbation, `analysis anatomy` on a synthetic anatomy of known spreads, and the preset's
sweep killed and relaunched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONF, folder_of, results, run, start, wait_until, write_idx, write_record
from hydra import compose, initialize_config_dir

from analysis import collect, report
from analysis.__main__ import main
from analysis.anatomy import anatomy, has_anatomy
from neuralforge import sweeps
from neuralforge.config import SEED_SOURCES, fingerprint, resolve
from neuralforge.engine import settle
from neuralforge.record.anatomy import CONDITIONS
from neuralforge.record.errors import ConfigError
from neuralforge.record.files import MANIFEST, RESULTS
from neuralforge.record.schema import Epoch, Group, Metrics, write_predictions
from neuralforge.runfolder import member_folders
from neuralforge.training import Training

# every per-step source drawing: dropout masks and shifts
DRAWING = ("model.dropout=0.3", "data.augment.shift=2")


def set_up(make_cfg, *overrides: str) -> Training:
    """The members' initial weights, split and generators, before any step."""
    cfg = make_cfg("n_seeds=3", *DRAWING, *overrides)
    return Training(cfg, *settle(cfg))


def folder_names(run: Training) -> list[str]:
    return [f.name for f in member_folders(Path("group"), run.spec)]


def same_across_members(run: Training) -> dict[str, bool]:
    """Per source, whether every member holds what member 0 holds: the generator's state, and
    what the source has already decided (weights, split) compared directly."""
    out = {s: all(torch.equal(g.get_state(), run.gens[s][0].get_state()) for g in run.gens[s]) for s in SEED_SOURCES}
    out["weights"] = all(torch.equal(p[k], p[0]) for p in run.model.parameters() for k in range(run.K))
    out["train_idx"] = all(torch.equal(run.train_idx[k], run.train_idx[0]) for k in range(run.K))
    # the first epoch's data order, drawn from each member's own generator
    orders = [torch.randperm(run.train_idx.shape[1], generator=g) for g in run.gens["order"]]
    out["first_order"] = all(torch.equal(o, orders[0]) for o in orders)
    return out


@pytest.mark.parametrize("source", SEED_SOURCES)
def test_a_group_varying_one_seed_source_differs_in_that_source_only(make_cfg, tmp_path, source):
    run = set_up(make_cfg, f"vary={source}")
    assert [s["seeds"][source] for s in run.specs] == [0, 1, 2]
    assert all(s["seeds"][o] == 0 for s in run.specs for o in SEED_SOURCES if o != source)
    assert all(s["seed"] == 0 and s["init_perturb"] == 0 for s in run.specs)
    same = same_across_members(run)
    decided = {"init": ["weights"], "split": ["train_idx"], "order": ["first_order"]}.get(source, [])
    assert {k for k, v in same.items() if not v} == {source, *decided}
    assert folder_names(run) == [f"{source}=0", f"{source}=1", f"{source}=2"]


def test_vary_all_is_the_plain_seed_group_and_keeps_its_fingerprint(make_cfg, tmp_path):
    run = set_up(make_cfg)  # vary=all, the default
    assert not any(same_across_members(run).values())
    assert [s["seed"] for s in run.specs] == [0, 1, 2]
    assert folder_names(run) == ["seed=0", "seed=1", "seed=2"]
    spec = resolve(make_cfg(), threads=1, device="cpu")
    before = {k: v for k, v in spec.items() if k not in ("vary", "init_perturb")}  # a folder from before the keys
    assert fingerprint(before) == fingerprint(spec)
    for other in ("vary=init", "init_perturb=3"):
        assert fingerprint(resolve(make_cfg(other), threads=1, device="cpu")) != fingerprint(spec)


def test_perturb_members_differ_from_the_base_in_one_element_by_one_ulp(make_cfg, tmp_path):
    run = set_up(make_cfg, "vary=init_perturb", "n_seeds=4")
    cfg = make_cfg(*DRAWING)
    base = Training(cfg, *settle(cfg))  # the unperturbed run, alone
    assert [s["init_perturb"] for s in run.specs] == [0, 1, 2, 3]
    assert folder_names(run) == [f"init_perturb={k}" for k in range(4)]
    same = same_across_members(run)
    assert all(same[s] for s in SEED_SOURCES) and same["train_idx"] and not same["weights"]
    flipped = set()
    for k in range(4):
        member = torch.cat([p[k].flatten() for p in run.model.parameters()])
        alone = torch.cat([p[0].flatten() for p in base.model.parameters()])
        where = (member != alone).nonzero().flatten()
        if k == 0:
            assert len(where) == 0  # member 0 is the base run itself
            continue
        assert len(where) == 1
        i = int(where[0])
        one_ulp = {torch.nextafter(alone[i], torch.tensor(d)).item() for d in (float("inf"), float("-inf"))}
        assert member[i].item() in one_ulp
        flipped.add(i)
    assert len(flipped) == 3  # each k its own element


def test_bad_anatomy_keys_name_the_key(make_cfg, tmp_path):
    for overrides, message in [(("vary=inti",), "vary='inti' is unknown"),
                               (("vary=augment", "n_seeds=2"), "vary=augment but data.augment.shift=0"),
                               (("vary=dropout", "n_seeds=2"), "vary=dropout but model.dropout=0"),
                               (("init_perturb=-1",), "init_perturb must be >= 0")]:
        with pytest.raises(ConfigError, match=message):
            settle(make_cfg(*overrides))


def test_init_perturb_past_the_last_weight_is_refused(make_cfg):
    cfg = make_cfg("init_perturb=99999", "n_seeds=2", "vary=init_perturb")
    n_params = 784 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    with pytest.raises(ConfigError, match=f"init_perturb=99999 with n_seeds=2 reaches element 100000, but a member "
                                          f"has {n_params} weights"):
        Training(cfg, *settle(cfg))


# --------------------------------------------------------------------------- analysis anatomy

N_TEST = 2000
SPREADS = {"init": 0.004, "order": 0.002, "split": 0.001, "all": 0.005, "perturb": 0.0045,
           "threads_1": 0.005, "threads_2": 0.005}  # std of test accuracy set by construction


def exact(std: float, n: int, rng) -> np.ndarray:
    z = rng.standard_normal(n)
    return (z - z.mean()) / z.std(ddof=1) * std


@pytest.fixture
def synthetic_anatomy(tmp_path):
    """An anatomy of hand-written records: in each condition, run i is right on the first
    round(acc_i * N_TEST) test examples of a shuffled order, so its accuracy's std is set; in
    `order`, each example is an independent coin instead, all of its spread test-set noise. The
    threads groups give the same predictions, but for one seed."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, N_TEST).astype(np.uint8)
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "t10k-labels-idx1-ubyte", labels)
    sweep, n = tmp_path / "anatomy", 16
    acc = {c: 0.97 + exact(s, n, rng) for c, s in SPREADS.items()}
    acc["threads_2"] = acc["threads_1"].copy()
    order = rng.permutation(N_TEST)
    for c in SPREADS:
        for k in range(n):
            right = np.zeros(N_TEST, dtype=bool)
            if c == "order":
                right = rng.random(N_TEST) < 0.97
            else:
                right[order[:round(acc[c][k] * N_TEST)]] = True
            preds = np.where(right, labels, (labels + 1) % 10)
            if c == "threads_2" and k == 5:
                preds[order[0]] = (labels[order[0]] + 2) % 10  # one example moves; accuracy one 1/N_TEST lower
            key = {"perturb": "init_perturb", "init": "seeds.init", "order": "seeds.order", "split": "seeds.split"}
            folder = sweep / f"anatomy={c}" / f"member={k}"
            seeds = {s: k if (c in ("all", "threads_1", "threads_2") or key.get(c) == f"seeds.{s}") else 0
                     for s in SEED_SOURCES}
            config = {"data": {"name": "mnist", "root": str(tmp_path / "data"), "augment": {"shift": 0}},
                      "model": {"dropout": 0.0}, "seed": k if c.startswith(("all", "threads")) else 0, "seeds": seeds,
                      "vary": {"perturb": "init_perturb", "threads_1": "all", "threads_2": "all"}.get(c, c),
                      "init_perturb": k if c == "perturb" else 0, "n_seeds": n,
                      "threads": 2 if c == "threads_2" else 1}
            test_acc = float((preds == labels).mean())
            write_predictions(folder, preds)
            row = Epoch(epoch=1, train_loss=0.0, train_acc=1.0, val_loss=0.1, val_acc=test_acc, test_loss=0.1,
                        test_acc=test_acc, lr=1e-3, seconds=1.0)
            write_record(folder, config=config, metrics=Metrics.of([row], 1, "val_acc"), fingerprint=c,
                         overrides=[f"anatomy={c}", "+experiment=anatomy"], group=Group(size=n, member=k, folder=""))
    return sweep, acc


def test_analysis_anatomy_recovers_the_spreads_set_by_construction(synthetic_anatomy, tmp_path, capsys):
    sweep, acc = synthetic_anatomy
    found = anatomy(collect(sweep))
    table = found.table.set_index("condition")
    assert list(table.index) == [c for c in CONDITIONS if c in SPREADS]
    for c, std in SPREADS.items():
        if c == "order":
            continue
        # accuracies are whole counts of N_TEST examples: within half an example of the target
        assert table.at[c, "std"] == pytest.approx(np.std(acc[c], ddof=1), abs=1 / N_TEST)
        assert table.at[c, "std"] == pytest.approx(std, abs=1 / N_TEST)
        assert table.at[c, "std_low"] <= table.at[c, "std"] <= table.at[c, "std_high"]
    assert table.at["init", "share_of_all"] == pytest.approx(0.8, abs=0.05)
    assert table.at["all", "share_of_all"] == 1
    # independent coins: the observed spread is the floor's, nothing remains above it
    coin_std = np.sqrt(0.97 * 0.03 / N_TEST)
    assert table.at["order", "std"] == pytest.approx(coin_std, rel=0.5)
    assert table.at["order", "floor_std"] == pytest.approx(coin_std, rel=0.1)
    assert table.at["order", "floor_std"] > 0.7 * table.at["order", "std"]
    # nested correct sets: runs differ on few examples, far more spread than coins would give
    assert table.at["all", "floor_std"] < 0.5 * table.at["all", "std"]
    assert table.at["all", "remainder_std"] > 0.85 * table.at["all", "std"]

    pairs = found.pairs.set_index("pair")
    threads = pairs.loc["threads_1 vs threads_2, same seeds"]
    assert threads["pairs"] == 16 and threads["identical"] == 15
    assert threads["max_abs_diff"] == pytest.approx(1 / N_TEST)
    assert threads["churn"] == pytest.approx(1 / N_TEST / 16)
    base = pairs.loc["perturb vs its base (init_perturb=0)"]
    assert base["pairs"] == 15
    assert base["mean_abs_diff"] == pytest.approx(np.abs(acc["perturb"][1:] - acc["perturb"][0]).mean(), abs=1 / N_TEST)
    assert any("augment: left out, data.augment.shift=0" in n for n in found.notes)

    png = tmp_path / "anatomy.png"
    assert main(["anatomy", str(sweep), "-o", str(png)]) == 0
    out = capsys.readouterr()
    assert png.stat().st_size > 0 and "| threads_1 vs threads_2, same seeds" in out.out
    assert "note: dropout: left out, model.dropout=0" in out.out and "repeat" not in out.err
    written = report(sweep, tmp_path / "report")
    assert {"anatomy.md", "anatomy.csv", "anatomy.png"} <= set(written["file"])
    assert "| perturb" in (tmp_path / "report" / "anatomy.md").read_text()


def test_analysis_anatomy_of_a_folder_without_one_says_so(tmp_path, synthetic_anatomy, capsys):
    sweep, _ = synthetic_anatomy
    for path in sweep.rglob(RESULTS):  # the same runs, launched without the preset
        rec = json.loads(path.read_text())
        rec["overrides"] = []
        path.write_text(json.dumps(rec))
    assert main(["anatomy", str(sweep), "-o", str(tmp_path / "a.png")]) == 1
    assert "no anatomy runs under" in capsys.readouterr().err
    assert not has_anatomy(collect(sweep))  # and a report leaves the anatomy out


# --------------------------------------------------------------------------- the preset's sweep

def compose_anatomy(*overrides: str):
    with initialize_config_dir(config_dir=CONF):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("condition, expected", [
    ("init", {"vary": "init", "n_seeds": 32, "threads": None}),
    ("perturb", {"vary": "init_perturb", "n_seeds": 32, "init_perturb": 0}),
    ("threads_1", {"vary": "all", "n_seeds": 1, "threads": 1}),  # the base run alone
    ("threads_2", {"vary": "all", "n_seeds": 1, "threads": 2}),
])
def test_each_anatomy_condition_composes_to_its_group(condition, expected):
    cfg = compose_anatomy("+experiment=anatomy", f"anatomy={condition}")
    assert {k: cfg[k] for k in expected} == expected


def test_the_anatomy_sweeps_what_the_recipe_can_vary():
    notebook = compose_anatomy("+experiment=anatomy")
    assert notebook.hydra.sweeper.params.anatomy == "init,order,split,all,perturb,threads_1,threads_2"
    assert notebook.hydra.sweep.dir == "multirun/anatomy"
    # the searched recipe has shifts and dropout; this CNN has dropout only
    for recipe, left_out in ((["+experiment=[mlp_recipe,anatomy]"], set()),
                             (["+experiment=anatomy", "model=cnn", "model.dropout=0.1"], {"augment"})):
        cfg = compose_anatomy(*recipe)
        assert cfg.hydra.sweeper.params.anatomy == ",".join(c for c in CONDITIONS if c not in left_out)


@pytest.mark.slow
def test_a_killed_anatomy_sweep_resumes(idx_root, tmp_path):
    # three of the conditions, two seeds each, are enough to be killed in the middle
    args = ["-m", "+experiment=anatomy", "anatomy=init,order,perturb", "n_seeds=2", "trainer.epochs=3",
            f"hydra.sweep.dir={tmp_path}"]
    proc = start(idx_root, *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_until(lambda: (tmp_path / MANIFEST).exists()
               and (folder_of(tmp_path, "anatomy=order") / "last.pt").exists(), timeout=120)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert sorted(manifest["left_out"]) == ["augment", "dropout"] and len(manifest["jobs"]) == 3
    assert sweeps.job_states(tmp_path)["missing"] == [folder_of(tmp_path, "anatomy=perturb")]

    out = run(idx_root, *args)
    log = out.stdout + out.stderr
    assert "Skipped: run already complete" in log and "Anatomy: augment left out" in log
    assert "6 complete, 0 failed, 0 stale, 0 running, 0 missing" in log
    members = {folder.relative_to(tmp_path).parts[0].split(",")[0] + "/" + folder.name: rec
               for folder, rec in results(tmp_path).items()}
    assert sorted(members) == ["anatomy=init/init=0", "anatomy=init/init=1", "anatomy=order/order=0",
                               "anatomy=order/order=1", "anatomy=perturb/init_perturb=0",
                               "anatomy=perturb/init_perturb=1"]
    assert all(rec.status == "complete" and rec.metrics.epochs_run == 3 for rec in members.values())
    assert members["anatomy=perturb/init_perturb=1"].config["vary"] == "init_perturb"
