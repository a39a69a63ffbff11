"""One source of truth for the contracts (key roles, the record, defaults, provenance), and the
defects found by trying to break a run folder: a corrupt record, a read-only folder, a full
disk, leftover temporaries, a job stopped before its first record."""

from __future__ import annotations

import copy
import errno
import json
import subprocess
import sys
from dataclasses import fields

import pytest
import torch
from conftest import ROOT, record
from omegaconf import OmegaConf

from analysis import collect
from neuralforge import checkpoint, sweeps
from neuralforge.config import SCHEMAS
from neuralforge.engine import train
from neuralforge.record import keys
from neuralforge.record.errors import DiskFullError, RecordError
from neuralforge.record.files import HISTORY, LAST, RESULTS, TEMP_SUFFIX
from neuralforge.record.provenance import keep_source_diff
from neuralforge.record.schema import FAILED


def test_job_folder_names_leave_out_exactly_the_keys_the_role_table_says():
    excluded = OmegaConf.load(ROOT / "conf" / "config.yaml").hydra.job.config.override_dirname.exclude_keys
    assert sorted(excluded) == sorted(keys.NOT_IN_FOLDER_NAMES)


def test_no_yaml_option_restates_a_default_of_its_schema():
    restated = []
    for group, name, schema in SCHEMAS:
        defaults = {f.name: f.default for f in fields(schema)}
        for path in (ROOT / "conf" / group).glob("*.yaml"):
            node = OmegaConf.load(path)
            target = f"/schema/{group}/{name}@_here_"
            if target not in node.get("defaults", []):
                continue
            restated += [f"{path.name}: {k}" for k, v in node.items() if k != "defaults" and defaults.get(k) == v]
    assert not restated


def test_the_fingerprint_skips_exactly_the_keys_the_role_table_says(make_cfg):
    from neuralforge.config import fingerprint, resolve
    base = resolve(make_cfg(), threads=1, device="cpu")

    def changed(dotted: str) -> dict:
        spec = copy.deepcopy(base)
        *parents, key = dotted.split(".")
        node = spec
        for name in parents:
            node = node[name]
        node[key] = ["changed"] if isinstance(node.get(key), list) else "changed"
        return spec
    assert keys.NOT_FINGERPRINTED
    for dotted in keys.NOT_FINGERPRINTED:
        assert fingerprint(changed(dotted)) == fingerprint(base), dotted
    for dotted in ("threads", "model.hidden", "optimizer.lr", "seeds.init", "trainer.eval_batch_size"):
        assert fingerprint(changed(dotted)) != fingerprint(base), dotted


def test_a_corrupt_record_is_one_line_naming_the_file_wherever_it_is_read(make_cfg, tmp_path):
    train(make_cfg(), tmp_path)
    path = tmp_path / RESULTS
    path.write_text(path.read_text()[:50])  # cut short
    with pytest.raises(RecordError, match=str(path)):
        train(make_cfg(), tmp_path)
    assert collect(tmp_path)["status"].tolist() == ["unreadable"]
    assert sweeps.job_states(tmp_path)[FAILED] == [tmp_path]


def test_an_output_folder_that_cannot_be_written_stops_in_one_line(tmp_path, monkeypatch, capsys):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(sweeps.tempfile, "TemporaryFile", read_only)
    config = OmegaConf.create({"hydra": {"run": {"dir": str(tmp_path / "run")}}})
    with pytest.raises(SystemExit) as stop:
        sweeps.SweepCallback().on_run_start(config)
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 1 and len(err.splitlines()) == 1
    assert str(tmp_path / "run") in err and "Read-only file system" in err and "hydra.run.dir" in err


def test_a_full_disk_is_named_in_the_error_and_the_record_and_the_relaunch_resumes_bit_exactly(make_cfg, tmp_path,
                                                                                              monkeypatch):
    overrides = ("trainer.epochs=3",)
    train(make_cfg(*overrides), tmp_path / "straight")
    save, saves = torch.save, []

    def fills_at_second_last(obj, f):  # torch's zip writer on a full disk: ENOSPC, then "unexpected pos"
        saves.append("members" in obj)  # last.pt holds the members' state; best.pt does not
        if saves.count(True) == 2 and saves[-1]:
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError as err:  # how torch.save reports a full disk: a RuntimeError from its OSError
                torn = "[enforce fail at inline_container.cc:672] . unexpected pos 409024 vs 408976"
                raise RuntimeError(torn) from err
        save(obj, f)
    monkeypatch.setattr(checkpoint.torch, "save", fills_at_second_last)
    with pytest.raises(DiskFullError, match=r"no space left on the device while writing .*last\.pt"):
        train(make_cfg(*overrides), tmp_path / "full")
    rec = record(tmp_path / "full")
    assert rec.status == FAILED and "no space left" in rec.error
    assert not list((tmp_path / "full").glob(f".*{TEMP_SUFFIX}"))
    monkeypatch.setattr(checkpoint.torch, "save", save)
    train(make_cfg(*overrides), tmp_path / "full")
    assert record(tmp_path / "full").metrics == record(tmp_path / "straight").metrics


def test_a_relaunch_clears_the_temporaries_a_kill_left(make_cfg, tmp_path):
    train(make_cfg("n_seeds=2"), tmp_path)
    left = [tmp_path / f".{LAST}.k1l2.tmp", tmp_path / "seed=1" / f".{HISTORY}.x9.tmp"]
    for path in left:
        path.write_bytes(b"")
    train(make_cfg("n_seeds=2"), tmp_path)
    assert not any(p.exists() for p in left)


def test_a_run_from_a_modified_tree_keeps_the_diff_that_rebuilds_it(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    (repo / "code.py").write_text("lr = 1\n")
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "code.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    (repo / "code.py").write_text("lr = 2\n")
    prov = {"git_dirty": True}
    keep_source_diff(tmp_path / "run", prov, repo=repo)
    subprocess.run([*git, "checkout", "-q", "code.py"], check=True)  # the commit alone
    subprocess.run([*git, "apply", prov["source_diff"]], check=True)
    assert (repo / "code.py").read_text() == "lr = 2\n"
    keep_source_diff(tmp_path / "clean", {"git_dirty": False}, repo=repo)
    assert not (tmp_path / "clean").exists()


def test_analysis_shows_which_runs_came_from_a_modified_tree(make_cfg, tmp_path, capsys):
    from analysis.__main__ import main
    train(make_cfg(), tmp_path / "a")
    path = tmp_path / "a" / RESULTS
    rec = json.loads(path.read_text())
    rec["provenance"]["git_dirty"] = True
    path.write_text(json.dumps(rec))
    assert main(["summary", str(tmp_path)]) == 0
    assert "1 runs came from a modified tree" in capsys.readouterr().err
    assert collect(tmp_path)["modified_tree"].tolist() == [True]


def test_the_dataset_table_names_torchvisions_own_classes():
    from torchvision import datasets

    from neuralforge.record.datasets import DATASETS
    for ds in DATASETS.values():
        assert ds.files == "file" or hasattr(datasets, ds.source), ds.name


def test_analysis_and_the_record_package_load_no_torch():
    code = "import sys, analysis, analysis.__main__; sys.exit('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr or "import analysis loaded torch"
