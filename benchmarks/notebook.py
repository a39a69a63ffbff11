"""The notebook's original pipeline, kept as the baseline every benchmark compares against:
torchvision MNIST with a per-sample ToTensor + Normalize, a DataLoader of batch 64,
nn.Sequential 784-128-64-10 with ReLU, Adam lr 1e-3, cross-entropy."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from neuralforge import hardware

REPO = Path(__file__).resolve().parents[1]


def data_root() -> str:
    root = os.environ.get("NEURALFORGE_DATA")
    if not root:
        sys.exit("Set NEURALFORGE_DATA to the folder that holds MNIST/raw/ (for example ../shared/data).")
    return str(Path(root).resolve())


def notebook_epoch(root: str, epochs: int = 1) -> list[float]:
    """Seconds for each training epoch of the notebook's pipeline."""
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    loader = DataLoader(datasets.MNIST(root, train=True, download=False, transform=tf), batch_size=64, shuffle=True)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                          nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    seconds = []
    for _ in range(epochs):
        tick = time.perf_counter()
        for x, y in loader:
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
        seconds.append(time.perf_counter() - tick)
    return seconds


def harness_config(root: str, *overrides: str):
    """The project's composed config, on the CPU unless an override says otherwise."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf")):
        return compose("config", overrides=[f"data.root={root}", "device=cpu", *overrides])


@contextlib.contextmanager
def harness_run(root: str, *overrides: str):
    """The harness's run of the composed config, set up (data on the device, model built) in
    a scratch folder, nothing trained yet."""
    from neuralforge.engine import settle
    from neuralforge.training import Training

    cfg = harness_config(root, *overrides)
    yield Training(cfg, *settle(cfg))


def harness_epoch(root: str, *overrides: str, epochs: int = 1) -> list[float]:
    """Seconds for each training epoch of the harness's loop (the data already on the device)."""
    with harness_run(root, *overrides) as run:
        seconds = []
        for _ in range(epochs):
            tick = time.perf_counter()
            run.train_epoch()
            seconds.append(time.perf_counter() - tick)
        return seconds


def machine() -> str:
    """The CPU and the features its matmul kernels depend on: figures from different CPUs differ."""
    flags = hardware.cpu_flags()
    features = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags] or ["no AVX-512"]
    return f"{hardware.device_name(torch.device('cpu'))} ({', '.join(features)})"


def configure(threads: int | None = None) -> int:
    # The notebook ran with torch's defaults; both sides get the same thread count.
    return hardware.configure_cpu(threads or hardware.default_threads())
