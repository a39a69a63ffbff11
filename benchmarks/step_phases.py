"""Where a training step's time goes: the phases of `Training.train_epoch`'s loop, timed with a clock
around each (CPU work is synchronous, so no profiler and none of its distortion is needed).

    NEURALFORGE_DATA=$PWD/../shared/data python benchmarks/step_phases.py [K ...]

It replays the loop's steps for the default MLP (no augmentation, no scheduler) after one
warm-up epoch, and prints microseconds per step for each phase.
"""

import sys
import time

import torch
from notebook import configure, data_root, harness_run, machine

from neuralforge.training import gather, member_loss

PHASES = ("gather", "forward", "loss", "clear grads", "backward", "optimizer", "accounting")


def phases(root: str, K: int, steps: int = 400) -> dict[str, float]:
    with harness_run(root, f"n_seeds={K}") as run:
        run.train_epoch()
        X, Y, order, B = run.data.train_x, run.data.train_y, run.train_idx, run.cfg.trainer.batch_size
        total = dict.fromkeys(PHASES, 0.0)
        for s in range(steps):
            t = [time.perf_counter()]
            x, y = gather(X, Y, order[:, s * B:(s + 1) * B])
            t.append(time.perf_counter())
            logits = run.model(x)
            t.append(time.perf_counter())
            loss = member_loss(logits, y)
            t.append(time.perf_counter())
            for p in run.params:
                p.grad = None
            t.append(time.perf_counter())
            loss.backward(torch.full_like(loss, 1 / B))
            t.append(time.perf_counter())
            run.optimizer.step()
            t.append(time.perf_counter())
            loss.detach(), logits.detach().argmax(-1)
            t.append(time.perf_counter())
            for name, a, b in zip(PHASES, t, t[1:]):
                total[name] += (b - a) / steps * 1e6
        return total


if __name__ == "__main__":
    root = data_root()
    sizes = [int(k) for k in sys.argv[1:]] or [1, 32]
    print(f"threads: {configure()}, cpu: {machine()}")
    print("| K | " + " | ".join(PHASES) + " | step | per model |")
    print("|---" * (len(PHASES) + 3) + "|")
    for K in sizes:
        us = phases(root, K)
        step = sum(us.values())
        print(f"| {K} | " + " | ".join(f"{v:.0f}" for v in us.values()) + f" | {step:.0f} | {step / K:.0f} |")
