"""What every test module shares: a small MNIST-format dataset in real IDX files, read by
torchvision's own MNIST class, the configs that train on it fast, and the helpers that run
`python run.py` in a process.

Each class of the dataset is a bright 6x6 square at its own place, jittered and noisy: learnable
in a few epochs, far from trivially separable by one pixel.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from servers import postgres_url, slurm_cluster  # noqa: F401  (the slow tier's real servers)

from neuralforge import hardware
from neuralforge.engine import Listener
from neuralforge.record.datasets import IDX_FILES, IMAGE_MAGIC, LABEL_MAGIC
from neuralforge.record.files import HISTORY, MANIFEST, RESULTS
from neuralforge.record.keys import SEED_SOURCES
from neuralforge.record.schema import SCHEMA_VERSION, Group, Metrics, Record, Timing, read_results, write_results

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")
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
        write_idx(raw / IDX_FILES[f"{split}_images"], images)
        write_idx(raw / IDX_FILES[f"{split}_labels"], labels)
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
# One step per epoch (500 training images, batch 500), with every per-step source of
# randomness switched on: dropout masks and shifts.
ONE_STEP = ("trainer.batch_size=500", "trainer.epochs=1", "model.dropout=0.3", "data.augment.shift=2")


@pytest.fixture
def make_cfg(idx_root):
    def make(*overrides: str):
        # choosing another model drops the small MLP's widths, which that model would not have
        fast = [o for o in FAST if not (o.startswith("model.") and any(x.startswith("model=") for x in overrides))]
        with initialize_config_dir(config_dir=CONF):
            return compose("config", overrides=[f"data.root={idx_root}", *fast, *overrides])
    return make


# ---------------------------------------------------------------- in-process runs
class Interrupted(BaseException):
    """Stands in for a kill: like KeyboardInterrupt, the engine does not record it as a failure."""


class InterruptAfter(Listener):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def epoch_done(self, training, outcome) -> bool:
        if training.epoch == self.epoch:
            raise Interrupted
        return False


def interrupt_after(epoch: int) -> list[Listener]:
    """The listeners of a run killed once `epoch` is written."""
    return [InterruptAfter(epoch)]


class OnEpoch(Listener):
    """Calls `act(training)` after each epoch."""

    def __init__(self, act):
        self.act = act

    def epoch_done(self, training, outcome) -> bool:
        self.act(training)
        return False


def history(folder) -> pd.DataFrame:
    return pd.read_csv(Path(folder) / HISTORY)


def record(folder) -> Record:
    rec = read_results(Path(folder))
    assert rec is not None, f"no record in {folder}"
    return rec


# ---------------------------------------------------------------- run.py in a process
def _command(idx_root, args, fast=FAST) -> dict:
    # the fixture's data, also where CI points NEURALFORGE_DATA at the real MNIST
    return {"args": [sys.executable, "run.py", f"data.root={idx_root}", *fast, *args], "cwd": ROOT, "text": True,
            "env": {k: v for k, v in os.environ.items() if k != "NEURALFORGE_DATA"}}


def run(idx_root, *args, check=True, timeout=240, fast=FAST) -> subprocess.CompletedProcess:
    out = subprocess.run(**_command(idx_root, args, fast), capture_output=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"exit {out.returncode}\n{out.stdout}\n{out.stderr}")
    return out


def start(idx_root, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen) -> subprocess.Popen:
    """run.py in the background, to be interrupted or raced."""
    return subprocess.Popen(**_command(idx_root, args), stdout=stdout, stderr=stderr, **popen)


def wait_until(ready, timeout: float) -> bool:
    """Polls `ready` until it holds or `timeout` seconds pass; whether it held."""
    deadline = time.time() + timeout
    while not ready() and time.time() < deadline:
        time.sleep(0.02)
    return bool(ready())


def results(sweep_dir) -> dict[Path, Record]:
    """Every record below a sweep folder, by its folder."""
    return {p.parent: record(p.parent) for p in sorted(Path(sweep_dir).rglob(RESULTS))}


SEARCH = ["-m", "hparams_search=mlp_optuna", "hydra.sweeper.params=null"]  # a search of the command line's keys


def history_epochs(folder) -> list[int]:
    return history(folder)["epoch"].tolist()


def folder_of(sweep_dir, override) -> Path:
    """The job folder the manifest names for the job with this override."""
    jobs = json.loads((Path(sweep_dir) / MANIFEST).read_text())["jobs"]
    return Path(sweep_dir) / next(j["folder"] for j in jobs if override in j["overrides"])


# ---------------------------------------------------------------- records written by hand
def write_record(folder, *, status: str = "complete", test_acc: float = 0.9, seed: int = 0, hidden=(32, 16),
                 lr: float = 1e-3, heartbeat: float | None = None, pid: int = 1, host: str = "elsewhere",
                 error: str | None = None, config: dict | None = None, metrics: Metrics | None = None,
                 overrides: list[str] | None = None, group: Group | None = None, fingerprint: str = "0" * 16,
                 objective: dict[str, float] | None = None) -> Path:
    """A record built from the schema's own classes, for the states the trainer is hard to put a run
    into on purpose, and for sweeps of known spreads."""
    folder = Path(folder)
    seeds = {s: seed for s in SEED_SOURCES}
    now = time.time()
    config = config or {"data": {"name": "mnist", "root": "/nowhere", "val_size": 100},
                        "model": {"hidden": list(hidden)}, "optimizer": {"lr": lr},
                        "seed": seed, "seeds": seeds, "n_seeds": 1, "threads": 1, "device": "cpu"}
    rec = Record(
        schema_version=SCHEMA_VERSION, status=status, error=error,
        metrics=metrics or Metrics(best_epoch=2, epochs_run=2, selection="val_acc", val_acc=test_acc, val_loss=0.5,
                                   test_acc=test_acc, test_loss=0.5, train_acc=test_acc, train_loss=0.5,
                                   last_test_acc=test_acc, max_test_acc=test_acc + 0.01),
        seed=config.get("seed", seed), seeds=config.get("seeds", seeds), config=config, fingerprint=fingerprint,
        overrides=[f"seed={seed}"] if overrides is None else overrides,
        group=group or Group(size=1, member=0, folder=str(folder)), n_params=100,
        timing=Timing(started=now - 60, heartbeat=now if heartbeat is None else heartbeat, wall_seconds=60.0,
                      seconds_per_epoch=30.0),
        provenance={"host": host, "pid": pid}, objective=objective)
    write_results(folder, rec)
    return folder


def dead_pid() -> int:
    """A pid that was this host's a moment ago, and is no process now."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


# ---------------------------------------------------------------- a search in this process
def search_config(sweep_dir, *overrides: str):
    """The config `python run.py -m hparams_search=mlp_optuna ...` gives the sweeper, Hydra's included."""
    with initialize_config_dir(config_dir=CONF):
        return compose("config", overrides=["hparams_search=mlp_optuna", f"hydra.sweep.dir={sweep_dir}", *overrides],
                       return_hydra_config=True)


def sweeper_for(cfg, launcher=None):
    """nf_optuna as Hydra builds it, with `launcher` in place of the one Hydra's setup() would build."""
    from hydra.utils import instantiate
    sweeper = instantiate(cfg.hydra.sweeper, _recursive_=False,
                          _execution_whitelist_=["neuralforge.search.sweeper.NFOptunaSweeper"])
    sweeper.config, sweeper.launcher = cfg, launcher
    return sweeper


class FakeLauncher:
    """Hydra's Launcher interface, launching no process: each job 'trains' for the seconds
    `duration(trial)` gives, writes a complete record with the objective `value(trial)`, and
    returns. It notes when each trial was launched and ended."""

    def __init__(self, sweep_dir, duration=lambda n: 0.0, value=lambda n: 0.5):
        self.sweep_dir, self.duration, self.value = Path(sweep_dir), duration, value
        self.launched: dict[int, float] = {}
        self.ended: dict[int, float] = {}

    def launch(self, job_overrides, initial_job_idx):
        from hydra.core.utils import JobReturn, JobStatus
        (overrides,) = job_overrides
        n = initial_job_idx
        self.launched[n] = time.time()
        time.sleep(self.duration(n))
        folder = next(o.split("=", 1)[1] for o in overrides if o.startswith("hydra.sweep.subdir="))
        write_record(self.sweep_dir / folder, objective={"val_acc": self.value(n)}, test_acc=self.value(n))
        ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
        ret.return_value = self.value(n)
        self.ended[n] = time.time()
        return [ret]
