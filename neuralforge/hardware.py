"""Which device and how many threads a run uses, and what they are called."""

from __future__ import annotations

import ctypes
import os
import platform

import torch

from neuralforge.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} was asked for but this machine has no CUDA GPU: use device=cpu or device=auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device=mps was asked for but MPS is not available here: use device=cpu or device=auto")
    return torch.device(name)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_threads(parallel_jobs: int | None = 1) -> int:
    """All cores, shared evenly among the jobs that run at once on this machine.

    `parallel_jobs` follows joblib's n_jobs: -1 means one job per core, -2 all but one, ...
    """
    cores = available_cores()
    jobs = parallel_jobs or 1
    if jobs < 0:
        jobs = max(1, cores + 1 + jobs)
    return max(1, cores // jobs)


def configure_cpu(threads: int) -> int:
    """Set the intra-op thread count; return the count torch actually uses."""
    torch.set_num_threads(threads)
    # Adam's second moments decay into denormal floats, which x86 computes with slowly:
    # flushing them to zero made the optimizer step 3x faster here.
    torch.set_flush_denormal(True)
    keep_freed_memory()
    return torch.get_num_threads()


def keep_freed_memory() -> bool:
    """Make glibc serve large tensors from its heap and keep what is freed for reuse.

    By default glibc maps each allocation above its threshold afresh and unmaps it on free,
    so a group's batch and gradients, re-allocated every step, were page-faulted in anew:
    1,100 to 1,500 faults a step at K=32 and 11,000 to 13,500 at K=128, a quarter of K=128's
    step time. This is the reuse that PyTorch's CPU tuning guide gets from jemalloc or
    tcmalloc, without LD_PRELOAD.
    One arena, because memory freed in one thread's arena cannot serve another's: with mapping
    off and glibc's several arenas, one of four K=64 runs peaked at 6.6 GB of RSS instead of
    1.3-1.4 GB; with one arena, five runs stayed within 1.3-1.8 GB.
    Returns False where the C library has no mallopt (macOS, Windows).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
    return all(mallopt(option, value) for option, value in
               ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 1 << 30)))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
