"""Models that hold K independent members in stacked parameters, written by hand.

A single run is K = 1. Every parameter has a leading member axis, so K members train as
batched matrix products, and an element-wise optimizer (Adam, AdamW, SGD) on the stacked
tensors updates each member exactly as it would update that member alone. Any other
nn.Module gets the same form through torch.func (neuralforge.functional).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from neuralforge.record.errors import CheckpointError

# init_perturb=k flips a bit of the element at place k - 1 of one fixed permutation of a member's
# parameter elements: the same element whatever the seeds, a different one for each k
PERTURB_SEED = 0
SAME_WIDTH_INT = {torch.float32: torch.int32, torch.float64: torch.int64, torch.float16: torch.int16,
                  torch.bfloat16: torch.int16}
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh}
POOLS: dict[str, Callable[..., torch.Tensor]] = {"max": F.max_pool2d, "avg": F.avg_pool2d}


def member_dropout(h: torch.Tensor, p: float, generators: Sequence[torch.Generator] | None) -> torch.Tensor:
    """Inverted dropout on (K, B, ...) with member k's mask drawn from generators[k] (from
    torch's global generator without them, for a model used outside the harness).

    F.dropout takes no generator; drawing per member keeps a group member's masks equal to
    those of the same seed trained alone.
    """
    # uniform draws compared to p: 2.5x faster on CPU than bernoulli_ with a generator
    draws = generators if generators is not None else [None] * h.shape[0]
    u = torch.stack([torch.rand(h.shape[1:], device=h.device, generator=g) for g in draws])
    return h * (u >= p).to(h.dtype).div_(1.0 - p)


@torch.no_grad()
def flip_lowest_bit(model: nn.Module, member: int, k: int) -> None:
    """Flip the lowest mantissa bit of one of member `member`'s parameter elements, chosen by
    k >= 1: a change of one unit in the last place (Summers & Dinneen 2021, "Nondeterminism and
    Instability in Neural Network Optimization", perturb one weight of the initialisation)."""
    params = [p[member] for p in model.parameters()]  # views of the member's slices
    sizes = [p.numel() for p in params]
    order = torch.randperm(sum(sizes), generator=torch.Generator().manual_seed(PERTURB_SEED))
    i = int(order[(k - 1) % len(order)])
    for p, n in zip(params, sizes):
        if i < n:
            element = p.reshape(-1)[i:i + 1]  # a view: the member's slice is contiguous
            element.view(SAME_WIDTH_INT[p.dtype]).bitwise_xor_(1)
            return
        i -= n




class Stacked(nn.Module):
    """The form the engine trains: `members` copies in parameters stacked on a leading axis,
    initialised by reset_parameters (member k from generators[k]); forward(x, dropout_generators)
    maps (K, B, *in_shape), one batch per member, or (B, *in_shape) shared by all, to (K, B, C).
    A class of this form is built with in_shape, num_classes and members."""

    dropout_masks = "own: member k draws from its seeds.dropout, as the same seed trained alone"

    def reset_parameters(self, generators: list[torch.Generator]) -> None:
        raise NotImplementedError

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's weights as a model with one member holds them (what best.pt keeps)."""
        return {name: t[k:k + 1].detach().clone() for name, t in self.state_dict().items()}

    @torch.no_grad()
    def start_from(self, weights: dict[str, torch.Tensor], where: str) -> None:
        """Every member from one member's weights (trainer.init_from)."""
        own = self.state_dict()
        if set(weights) != set(own) or any(weights[n].shape[1:] != own[n].shape[1:] for n in own):
            raise CheckpointError(f"{where} does not hold weights of this model's shape.")
        if any(weights[n].shape[0] != 1 for n in own):  # a group's last.pt: which member would it be?
            raise CheckpointError(f"{where} holds {next(iter(weights.values())).shape[0]} members' weights: give "
                                  f"one member's best.pt (its seed=N/ folder)")
        for name, tensor in own.items():
            tensor.copy_(weights[name].expand_as(tensor))


class MLP(Stacked):
    def __init__(self, hidden: list[int], activation: str = "relu", dropout: float = 0.0, *,
                 in_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10, members: int = 1):
        super().__init__()
        self.in_shape, self.members, self.p = tuple(in_shape), members, dropout
        self.act = ACTIVATIONS[activation]
        sizes = [math.prod(in_shape), *hidden, num_classes]
        # (K, in, out) so that a layer is baddbmm(bias, h, weight)
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(members, i, o)) for i, o in itertools.pairwise(sizes))
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
                    h = member_dropout(h, self.p, dropout_generators)
        return h


class CNN(Stacked):
    """Conv blocks (conv, 2x2 pool or stride 2, batch norm, activation), then a hidden layer and the classifier.

    Members are the groups of one grouped convolution: the input is laid out (B, K*C, H, W),
    member k owning channels k*C..(k+1)*C, which is what torch.func.vmap makes of a conv.
    Batch norm over K*C channels keeps per-member statistics for free.
    """

    def __init__(self, channels: list[int], kernel: int = 3, pool: str = "max", hidden: int = 128,
                 activation: str = "relu", dropout: float = 0.0, *, in_shape: tuple[int, ...] = (1, 28, 28),
                 num_classes: int = 10, members: int = 1):
        super().__init__()
        self.in_shape, self.members, self.p, self.kernel = tuple(in_shape), members, dropout, kernel
        self.act = ACTIVATIONS[activation]
        self.pool = pool
        c_in, side = in_shape[0], in_shape[1]
        self.convs, self.bn_weights, self.bn_biases = nn.ParameterList(), nn.ParameterList(), nn.ParameterList()
        for i, c in enumerate(channels):
            self.convs.append(nn.Parameter(torch.empty(members, c, c_in, kernel, kernel)))
            self.bn_weights.append(nn.Parameter(torch.empty(members, c)))
            self.bn_biases.append(nn.Parameter(torch.empty(members, c)))
            self.register_buffer(f"bn_mean{i}", torch.zeros(members, c))
            self.register_buffer(f"bn_var{i}", torch.ones(members, c))
            c_in, side = c, (side + 1) // 2 if pool == "stride" else side // 2
        self.head = MLP([hidden] if hidden else [], activation, dropout, in_shape=(c_in * side * side,),
                        num_classes=num_classes, members=members)

    @torch.no_grad()
    def reset_parameters(self, generators: list[torch.Generator]) -> None:
        """nn.Conv2d's default init (U(+-1/sqrt(fan_in))), unit batch-norm scales, then the head."""
        for k, g in enumerate(generators):
            for i, w in enumerate(self.convs):
                bound = 1 / math.sqrt(w[0].numel() // w.shape[1])
                w[k] = torch.empty(w.shape[1:]).uniform_(-bound, bound, generator=g)
                self.bn_weights[i][k] = 1.0
                self.bn_biases[i][k] = 0.0
                getattr(self, f"bn_mean{i}")[k] = 0.0
                getattr(self, f"bn_var{i}")[k] = 1.0
        self.head.reset_parameters(generators)

    def forward(self, x: torch.Tensor, dropout_generators: list[torch.Generator] | None = None) -> torch.Tensor:
        K = self.members
        shared = x.dim() == len(self.in_shape) + 1
        if shared:  # (B, C, H, W): the first conv reads the one input for every member
            B, h = x.shape[0], x
        else:  # (K, B, C, H, W) -> (B, K*C, H, W)
            B, h = x.shape[1], x.transpose(0, 1).reshape(x.shape[1], -1, *x.shape[3:])
        # channels_last is oneDNN's fast layout on the CPU. A 1-channel input cannot say which
        # layout it is in, and on some CPUs (an AVX2-only EPYC) the first conv then answers in
        # NCHW, where max pooling a 256x16x28x28 map took 30 ms against 3 ms: so every conv's
        # output is put in channels_last (free where it already is)
        h = h.contiguous(memory_format=torch.channels_last)
        for i, w in enumerate(self.convs):
            groups = 1 if shared and i == 0 else K
            w = w.flatten(0, 1).contiguous(memory_format=torch.channels_last)
            stride = 2 if self.pool == "stride" else 1  # a stride of 2 halves the image itself
            h = F.conv2d(h, w, stride=stride, padding=self.kernel // 2, groups=groups)
            h = h.contiguous(memory_format=torch.channels_last)
            # pooled before normalising: the element-wise work runs on a quarter of the pixels
            if self.pool != "stride":
                h = POOLS[self.pool](h, 2)
            h = F.batch_norm(h, getattr(self, f"bn_mean{i}").view(-1), getattr(self, f"bn_var{i}").view(-1),
                             self.bn_weights[i].flatten(), self.bn_biases[i].flatten(), self.training)
            h = self.act(h)
        h = h.contiguous().view(B, K, -1).transpose(0, 1)  # (K, B, features) in (C, H, W) order
        return self.head(h, dropout_generators)
