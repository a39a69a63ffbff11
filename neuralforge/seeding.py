"""One torch.Generator per source of randomness and per group member.

Sources that draw once per epoch or once per run (init, order, split) live on the CPU, so a
run starts from the same weights and sees the same data order on any device. Sources that
draw every step (augment, dropout) live on the training device.
"""

from __future__ import annotations

import torch

from neuralforge.record.keys import SEED_SOURCES

CPU_SOURCES = ("init", "order", "split")


def generators(seeds: dict[str, int], device: torch.device) -> dict[str, torch.Generator]:
    out = {}
    for source in SEED_SOURCES:
        g = torch.Generator(device="cpu" if source in CPU_SOURCES else device)
        g.manual_seed(int(seeds[source]))
        out[source] = g
    return out


def group_generators(member_seeds: list[dict[str, int]], device: torch.device) -> dict[str, list[torch.Generator]]:
    """Per source, one generator per member: {"order": [g_0, ..., g_K-1], ...}."""
    per_member = [generators(s, device) for s in member_seeds]
    return {source: [m[source] for m in per_member] for source in SEED_SOURCES}
