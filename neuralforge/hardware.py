"""Which device, how many threads and what matmul precision a run uses, and what they are called."""

from __future__ import annotations

import os
import platform

import torch

from neuralforge.record.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} was asked for but this machine has no CUDA GPU: use device=cpu or "
                          f"device=auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device=mps was asked for but MPS is not available here: use device=cpu or device=auto")
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device={name}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                          f"numbered from 0: use device=cuda or device=cuda:0")
    return device


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def jobs_at_once(n_jobs: int | None = 1, batch: int | None = None) -> int:
    """How many jobs run at once on this machine: the launcher's `n_jobs`, in joblib's
    spelling (-1 one per core, -2 all but one, ...), capped by `batch`, the jobs the sweeper
    hands the launcher at a time (the Optuna sweeper's n_jobs)."""
    jobs = n_jobs or 1
    if jobs < 0:
        jobs = max(1, available_cores() + 1 + jobs)
    return min(jobs, batch) if batch else jobs


def default_threads(parallel_jobs: int | None = 1) -> int:
    """All cores, shared evenly among the jobs that run at once on this machine."""
    return max(1, available_cores() // jobs_at_once(parallel_jobs))


def configure_cpu(threads: int) -> int:
    """Set the intra-op thread count; return the count torch actually uses."""
    torch.set_num_threads(threads)
    # Adam's second moments decay into denormal floats, which x86 computes with slowly:
    # flushing them to zero made the optimizer step 3x faster here.
    torch.set_flush_denormal(True)
    return torch.get_num_threads()


def configure_matmul(precision: str) -> str:
    """Set torch's float32 matmul precision; return the setting torch reports.

    Set by every run, also to the default: the setting is process-wide, and a joblib worker
    runs job after job in one process.
    """
    torch.set_float32_matmul_precision(precision)
    return torch.get_float32_matmul_precision()


def configure_cuda(device: torch.device) -> None:
    """On a GPU, cuDNN's deterministic algorithms and no autotuning: a resumed run repeats the
    uninterrupted one bit for bit only if each convolution runs the same algorithm each time
    (autotuning picks by timing, which varies). The record says whether it held."""
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (avx512f, amx_bf16, ...): what `medium` does depends on them."""
    return set(_cpuinfo("flags").split())


def _cpuinfo(field: str) -> str:
    """The first CPU's `field` in /proc/cpuinfo; "" where there is none (not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith(field)), "")
    except OSError:
        return ""
