"""Which memory layout the CNN's first convolution answers in, and what pooling costs in it.

    python benchmarks/cnn_layout.py [--batch-size 256] [--channels 16]

A 1-channel input is contiguous in both NCHW and channels_last, so the convolution chooses the
layout of its output; on some CPUs it chooses NCHW, where oneDNN's max pooling is slow.
`neuralforge.models.CNN` puts every conv's output in channels_last: this times the step it
guards (max pooling, forward and backward) in the layout the conv returns and in channels_last,
alternating in one process, and prints the ratio. Synthetic data: no dataset needed.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from notebook import configure, machine


def pool_step(h: torch.Tensor) -> float:
    """Seconds for max pooling h and sending a gradient back through it."""
    h = h.detach().requires_grad_()
    tick = time.perf_counter()
    out = F.max_pool2d(h, 2)
    out.backward(torch.ones_like(out))
    return time.perf_counter() - tick


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"threads: {configure()}, cpu: {machine()}")
    x = torch.randn(args.batch_size, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    w = torch.randn(args.channels, 1, 3, 3).contiguous(memory_format=torch.channels_last)
    returned = F.conv2d(x, w, padding=1)
    as_returned = "channels_last" if returned.is_contiguous(memory_format=torch.channels_last) else "NCHW"
    print(f"the first conv's output ({tuple(returned.shape)}) is {as_returned}, strides {returned.stride()}")
    layouts = {f"as returned ({as_returned})": returned,
               "channels_last": returned.contiguous(memory_format=torch.channels_last)}
    seconds = {name: [] for name in layouts}
    for i in range(args.repeats + 1):
        for name in (list(layouts) if i % 2 == 0 else list(layouts)[::-1]):
            seconds[name].append(pool_step(layouts[name]))
    print("| layout | max pooling, forward and backward (ms, median) |")
    print("|---|---|")
    medians = {name: statistics.median(s[1:]) * 1000 for name, s in seconds.items()}
    for name, ms in medians.items():
        print(f"| {name} | {ms:.2f} |")
    slow, fast = medians.values()
    print(f"channels_last is {slow / fast:.2f}x as fast")
