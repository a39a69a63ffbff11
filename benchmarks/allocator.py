"""Training steps of K stacked MLPs with glibc's default allocator settings, then after
`hardware.keep_freed_memory()`, in one process: milliseconds and page faults per step.

    python benchmarks/allocator.py [K ...]

mallopt cannot be undone, so the default settings always run first. Synthetic data: the
effect is in the allocator, not in the pixels.
"""

import resource
import sys
import time

import torch
import torch.nn.functional as F

from neuralforge import hardware
from neuralforge.models import MLP


def faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def steps(K: int, n: int = 100, batch: int = 64) -> tuple[float, float]:
    """Milliseconds and minor page faults per step, after 10 warm-up steps."""
    gens = [torch.Generator().manual_seed(k) for k in range(K)]
    model = MLP([128, 64], members=K)
    model.reset_parameters(gens)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    X, Y = torch.randn(55000, 1, 28, 28), torch.randint(0, 10, (55000,))
    idx = torch.randint(0, 55000, (n + 10, K * batch))
    for i in range(n + 10):
        if i == 10:
            tick, f0 = time.perf_counter(), faults()
        x, y = X.index_select(0, idx[i]).view(K, batch, 1, 28, 28), Y.index_select(0, idx[i])
        loss = F.cross_entropy(model(x).flatten(0, 1), y, reduction="none")
        opt.zero_grad(set_to_none=True)
        loss.backward(torch.full_like(loss, 1 / batch))
        opt.step()
    return (time.perf_counter() - tick) / n * 1e3, (faults() - f0) / n


if __name__ == "__main__":
    sizes = [int(k) for k in sys.argv[1:]] or [1, 32, 128]
    torch.set_num_threads(hardware.default_threads())
    torch.set_flush_denormal(True)
    print(f"threads: {torch.get_num_threads()}")
    default = {K: steps(K) for K in sizes}
    print(f"keep_freed_memory: {hardware.keep_freed_memory()}")
    kept = {K: steps(K) for K in sizes}
    print("| K | default ms/step | faults/step | kept ms/step | faults/step | speed-up |")
    print("|---|---|---|---|---|---|")
    for K in sizes:
        (a, fa), (b, fb) = default[K], kept[K]
        print(f"| {K} | {a:.2f} | {fa:.0f} | {b:.2f} | {fb:.0f} | {a / b:.2f}x |")
