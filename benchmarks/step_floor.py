"""A lower bound on the training step of the default MLP, from what PyTorch's own kernels cost
on this machine, next to the goals of issues 2 and 5 (0.5 s for a single run's epoch, 0.15 s
per model-epoch at K >= 32).

    NEURALFORGE_DATA=$PWD/../shared/data python benchmarks/step_floor.py [K ...]

For each K (1 and 32 unless given), in microseconds per step:
- loop: a step of the real loop, from its second epoch;
- no arithmetic: the same loop with `model.hidden=[1,1]`, whose products cost next to nothing.
  What remains is the part no model size changes: gathering the batch, dispatching each
  op, autograd, the optimizer's Python;
- the three heaviest kernels, the first layer's product, its weight gradient and the fused
  Adam step, each repeated alone on warm caches, less the same kernel of the no-arithmetic model.

The loop cannot cost less than the no-arithmetic loop plus the extra those three kernels need
even when warm: that sum is the bound.
"""

import sys
import time

import torch
from notebook import configure, data_root, harness_epoch, harness_run, machine

from neuralforge.training import gather

BARE = "model.hidden=[1,1]"
KERNELS = ("layer 1", "its weight gradient", "fused Adam")


def repeat(fn, n: int = 200) -> float:
    """Microseconds per call of fn, after a warm-up."""
    for _ in range(n // 10):
        fn()
    tick = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - tick) / n * 1e6


def kernels(root: str, K: int, *overrides: str) -> tuple[list[float], int]:
    """Microseconds of each of KERNELS alone, on the tensors of a run that has trained one
    epoch; and the number of steps in an epoch."""
    with harness_run(root, f"n_seeds={K}", *overrides) as run:
        run.train_epoch()
        w, b = run.model.weights[0].detach(), run.model.biases[0].detach()
        x = gather(run.data.train_x, run.data.train_y, run.train_idx[:, :run.cfg.trainer.batch_size])[0].flatten(2)
        g = torch.randn(K, x.shape[1], w.shape[2]) * 1e-3  # the gradient at the first layer's output
        for p in run.params:
            p.grad = torch.randn_like(p) * 1e-3
        us = [repeat(lambda: torch.baddbmm(b, x, w)), repeat(lambda: torch.bmm(x.transpose(1, 2), g)),
              repeat(run.optimizer.step)]
        return us, run.steps


if __name__ == "__main__":
    root = data_root()
    sizes = [int(k) for k in sys.argv[1:]] or [1, 32]
    print(f"threads: {configure()}, cpu: {machine()}")
    print("| K | loop | no arithmetic | " + " | ".join(KERNELS) + " | bound | s/model-epoch: loop | bound |")
    print("|---" * (len(KERNELS) + 6) + "|")
    for K in sizes:
        real, steps = kernels(root, K)
        bare_kernels, _ = kernels(root, K, BARE)
        extra = [r - b for r, b in zip(real, bare_kernels)]
        loop = harness_epoch(root, f"n_seeds={K}", epochs=2)[-1] / steps * 1e6
        bare = harness_epoch(root, f"n_seeds={K}", BARE, epochs=2)[-1] / steps * 1e6
        bound = bare + sum(extra)
        print(f"| {K} | {loop:.0f} | {bare:.0f} | " + " | ".join(f"{e:.0f}" for e in extra)
              + f" | {bound:.0f} | {loop * steps / 1e6 / K:.3f} | {bound * steps / 1e6 / K:.3f} |", flush=True)
