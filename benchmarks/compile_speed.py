"""Does torch.compile pay for the MLP's training step on this CPU? Eager against compiled
forward + loss (the optimizer step stays eager), one process, on random data of MNIST's shape.

    python benchmarks/compile_speed.py
"""

import time

import torch
import torch.nn.functional as F
from notebook import machine

from neuralforge import hardware
from neuralforge.models import MLP

STEPS, BATCH = 800, 64


def timed(loss_fn, model, x_all, y_all, order):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)

    def step(s):
        idx = order[s * BATCH:(s + 1) * BATCH]
        loss = loss_fn(x_all.index_select(0, idx)[None], y_all.index_select(0, idx)[None])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    tick = time.perf_counter()
    step(0)  # compiles, for the compiled one
    warmup = time.perf_counter() - tick
    tick = time.perf_counter()
    for s in range(1, STEPS + 1):
        step(s)
    return warmup, (time.perf_counter() - tick) / STEPS


if __name__ == "__main__":
    print(f"threads: {hardware.configure_cpu(hardware.default_threads())}, cpu: {machine()}")
    x_all, y_all = torch.randn(60000, 1, 28, 28), torch.randint(0, 10, (60000,))
    order = torch.randperm(55000)
    model = MLP([128, 64])
    model.reset_parameters([torch.Generator().manual_seed(0)])

    def loss_fn(x, y):
        return F.cross_entropy(model(x).flatten(0, 1), y.flatten())

    eager = timed(loss_fn, model, x_all, y_all, order)
    compiled = timed(torch.compile(loss_fn), model, x_all, y_all, order)
    for name, (warmup, per_step) in (("eager", eager), ("compiled", compiled)):
        print(f"{name:9s} first step {warmup:6.1f} s, then {per_step * 1e6:5.0f} us/step")
    print(f"compiled / eager per step: {compiled[1] / eager[1]:.2f}x")
