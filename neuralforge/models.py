"""Models that hold K independent members in stacked parameters.

A single run is K = 1. Every parameter has a leading member axis, so K members train as
batched matrix products, and an element-wise optimizer (Adam, AdamW, SGD) on the stacked
tensors updates each member exactly as it would update that member alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh}


def dropout(h: torch.Tensor, p: float, generators: list[torch.Generator]) -> torch.Tensor:
    """Inverted dropout on (K, B, ...) with member k's mask drawn from generators[k].

    F.dropout takes no generator; drawing per member keeps a group member's masks equal to
    those of the same seed trained alone.
    """
    # uniform draws compared to p: 2.5x faster on CPU than bernoulli_ with a generator
    u = torch.stack([torch.rand(h.shape[1:], device=h.device, generator=g) for g in generators])
    return h * (u >= p).to(h.dtype).div_(1.0 - p)


class MLP(nn.Module):
    def __init__(self, hidden: list[int], activation: str = "relu", dropout: float = 0.0, *,
                 in_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10, members: int = 1):
        super().__init__()
        self.in_shape, self.members, self.p = tuple(in_shape), members, dropout
        self.act = ACTIVATIONS[activation]
        sizes = [math.prod(in_shape), *hidden, num_classes]
        # (K, in, out) so that a layer is baddbmm(bias, h, weight)
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(members, i, o)) for i, o in zip(sizes, sizes[1:]))
        self.biases = nn.ParameterList(nn.Parameter(torch.empty(members, 1, o)) for o in sizes[1:])

    @torch.no_grad()
    def reset_parameters(self, generators: list[torch.Generator]) -> None:
        """nn.Linear's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), member k from generators[k]."""
        for k, g in enumerate(generators):
            for w, b in zip(self.weights, self.biases):
                fan_in, fan_out = w.shape[1:]
                bound = 1 / math.sqrt(fan_in)
                w[k] = torch.empty(fan_out, fan_in).uniform_(-bound, bound, generator=g).T
                b[k, 0] = torch.empty(fan_out).uniform_(-bound, bound, generator=g)

    def forward(self, x: torch.Tensor, dropout_generators: list[torch.Generator] | None = None) -> torch.Tensor:
        """x is (K, B, *in_shape), one batch per member, or (B, *in_shape) shared by all.

        Returns logits (K, B, num_classes).
        """
        shared = x.dim() == len(self.in_shape) + 1
        h = x.flatten(-len(self.in_shape))
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if shared and i == 0:
                # one (B, in) x (in, K*out) product instead of K copies of the input
                B, K = h.shape[0], self.members
                h = (h @ w.transpose(0, 1).reshape(w.shape[1], -1)).view(B, K, -1).transpose(0, 1) + b
            else:
                h = torch.baddbmm(b, h, w)
            if i < last:
                h = self.act(h)
                if self.training and self.p > 0:
                    h = dropout(h, self.p, dropout_generators)
        return h
