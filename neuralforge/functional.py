"""Any nn.Module as a group of K seeded members that train together, through torch.func.

Member k is the module built while torch's CPU generator holds its seeds.init, so it starts
with the weights of the single run seed=s+k. The members' parameters and buffers are stacked
on a leading member axis (torch.func.stack_module_state) and held in one copy of the module
under their own names, so optimizers, state_dict, best.pt per member and trainer.init_from
work as for the built-in stacked models. A forward is one torch.func.vmap over
torch.func.functional_call: batch-norm statistics stay per member.

Random operations inside the module (dropout) take no generator under vmap: they draw from
torch's global generator, each member its own masks (randomness="different"). Around each
training forward the global generator is loaded from the first member's dropout generator
and saved back into it, so the masks follow seeds.dropout and a resumed run draws what an
uninterrupted one draws (last.pt holds that generator); but member k's masks are not those
of the same seed trained alone.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from neuralforge.record.errors import CheckpointError, ConfigError

DROPOUT_MASKS = ("shared: drawn under torch.func.vmap from torch's global generator, seeded by the group's "
                 "first seeds.dropout; a member's masks differ from those of the same seed trained alone")


class Members(nn.Module):
    """K copies of one nn.Module, stacked, with the engine's model interface: forward maps
    (K, B, *in_shape), one batch per member, or (B, *in_shape) shared by all, to (K, B, C)."""

    dropout_masks = DROPOUT_MASKS

    def __init__(self, modules: Sequence[nn.Module], in_shape: Sequence[int]):
        super().__init__()
        self.members, self.in_shape = len(modules), tuple(in_shape)
        params, buffers = stack_module_state(list(modules))
        # the first copy keeps the structure; its tensors are swapped for the stacked ones,
        # which functional_call swaps for one member's slice inside vmap
        self.net = modules[0]
        for name, tensor in params.items():
            _assign(self.net, name, nn.Parameter(tensor))
        for name, tensor in buffers.items():
            _assign(self.net, name, tensor)

    def forward(self, x: torch.Tensor, dropout_generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
        shared = x.dim() == len(self.in_shape) + 1
        group = vmap(self._member, in_dims=(0, 0, None if shared else 0), randomness="different")
        params: dict[str, torch.Tensor] = dict(self.net.named_parameters())
        buffers = dict(self.net.named_buffers())
        if not (self.training and dropout_generators):
            return group(params, buffers, x)
        with drawing_from(dropout_generators[0]):
            return group(params, buffers, x)

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's weights and buffers under the module's own names, without the member axis:
        `module.load_state_dict(...)` loads them into a fresh copy of the user's module."""
        return {name: t[k].detach().clone() for name, t in self.net.state_dict().items()}

    @torch.no_grad()
    def start_from(self, weights: dict[str, torch.Tensor], where: str) -> None:
        """Every member from one member's weights, as member_state gives them (trainer.init_from)."""
        own = self.net.state_dict()
        if set(weights) != set(own) or any(weights[n].shape != own[n].shape[1:] for n in own):
            raise CheckpointError(f"{where} does not hold weights of this model's names and shapes "
                                  f"(one member's, as its best.pt holds them).")
        for name, tensor in own.items():
            tensor.copy_(weights[name].expand_as(tensor))

    def _member(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor):
        return functional_call(self.net, (params, buffers), (x,))


def _assign(root: nn.Module, name: str, tensor: torch.Tensor) -> None:
    owner, _, attr = name.rpartition(".")
    setattr(root.get_submodule(owner), attr, tensor)


@contextlib.contextmanager
def drawing_from(generator: torch.Generator) -> Iterator[None]:
    """Let torch's global generator on `generator`'s device draw `generator`'s stream, which then
    goes on from where the global one stopped; the global one is left as it was."""
    device = generator.device
    get: Callable[[], torch.Tensor]
    put: Callable[[torch.Tensor], object]
    if device.type == "cpu":
        get, put, forked = torch.get_rng_state, torch.set_rng_state, []
    else:
        module = torch.get_device_module(device.type)
        get, put, forked = (lambda: module.get_rng_state(device)), (lambda s: module.set_rng_state(s, device)), [device]
    with torch.random.fork_rng(devices=forked, device_type=device.type):
        put(generator.get_state())
        try:
            yield
        finally:
            generator.set_state(get())


def shape_args(factory: Callable[..., Any], given: Sequence[str], input_shape: Sequence[int],
               num_classes: int) -> dict[str, Any]:
    """input_shape and num_classes, for those the factory names and the config does not set."""
    try:
        names = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin without a signature: it takes neither
        return {}
    offered = {"input_shape": list(input_shape), "num_classes": num_classes}
    return {k: v for k, v in offered.items() if k in names and k not in given}


def build(make: Callable[[], nn.Module], init_seeds: Sequence[int], in_shape: Sequence[int]) -> Members:
    """Member k made by `make()` while torch's CPU generator holds init_seeds[k]."""
    modules = []
    for seed in init_seeds:
        with torch.random.fork_rng(devices=[]):  # the global generator is left as it was
            torch.default_generator.manual_seed(int(seed))
            module = make()
        if not isinstance(module, nn.Module):
            raise ConfigError(f"model._target_ made a {type(module).__name__}, not a torch.nn.Module: name a module "
                              f"class or a function that returns one")
        modules.append(module)
    return Members(modules, in_shape)


@torch.no_grad()
def check(model: Members, x: torch.Tensor, num_classes: int, target: str) -> None:
    """Run the group once, in eval mode, on a batch x (B, *in_shape): refuse in one line a module
    that fails on it or does not return (B, num_classes)."""
    model.eval()
    want = (x.shape[0], num_classes)
    try:
        out = model(x)
    except Exception as err:  # the user's forward, or vmap refusing what it does
        first = (str(err).strip().splitlines() or [""])[0]
        raise ConfigError(f"model {target} fails on a batch of shape {tuple(x.shape)} (batch, *input_shape): "
                          f"{type(err).__name__}: {first}") from None
    finally:
        model.train()
    if not isinstance(out, torch.Tensor) or tuple(out.shape[1:]) != want:
        got = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"model {target} maps a batch of shape {tuple(x.shape)} to {got}, not {want}: its forward "
                          f"must return (batch, num_classes) logits, with num_classes={num_classes} for this data")
