"""A search's space from Hydra's sweep overrides: choice(...), range(...) and interval(...)
(tag(log, ...) for a log scale) as Optuna's distributions, and the grid GridSampler walks."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, Transformer
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from neuralforge.record.errors import ConfigError


def search_space(arguments: list[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """The sweep overrides as Optuna distributions, and the other overrides as they are."""
    space: dict[str, BaseDistribution] = {}
    fixed: list[str] = []
    for override in OverridesParser.create().parse_overrides(arguments):
        if override.is_sweep_override():
            space[override.get_key_element()] = distribution(override)
        else:
            fixed.append(override.input_line or f"{override.get_key_element()}={override.get_value_element_as_str()}")
    return space, fixed


def distribution(override: Override) -> BaseDistribution:
    """choice(...) and range(...) of values, and interval(...) (tag(log, ...) for a log scale)."""
    key = override.get_key_element()
    if override.is_interval_sweep():
        value = override.value()
        assert isinstance(value, IntervalSweep)
        log_scale = "log" in value.tags
        if value.start is None or value.end is None:
            raise ConfigError(f"hydra.sweeper.params.{key}: {override.input_line} needs both ends: interval(low, high)")
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    values = list(override.sweep_iterator(transformer=Transformer.encode))
    if not values:
        raise ConfigError(f"hydra.sweeper.params.{key}: {override.input_line} holds no value")
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if override.is_range_sweep() and len(numbers) == len(values):
        steps = {Decimal(str(b)) - Decimal(str(a)) for a, b in itertools.pairwise(numbers)}
        if len(steps) <= 1 and all(s > 0 for s in steps):
            step = steps.pop() if steps else 1
            if all(isinstance(v, int) for v in numbers):
                return IntDistribution(int(numbers[0]), int(numbers[-1]), step=int(step))
            return FloatDistribution(float(numbers[0]), float(numbers[-1]), step=float(step))
    choices = [v for v in values if isinstance(v, (bool, int, float, str))]
    if len(choices) < len(values):  # encode() writes lists as text; anything else Optuna cannot store
        raise ConfigError(f"hydra.sweeper.params.{key}: {override.input_line} holds a value Optuna cannot store: "
                          f"give numbers, strings or lists")
    return CategoricalDistribution(choices)


def grid_of(space: dict[str, BaseDistribution]) -> dict[str, list[Any]]:
    """The points GridSampler searches: each parameter's values."""
    grid = {}
    for name, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            grid[name] = list(dist.choices)
        elif isinstance(dist, IntDistribution) and not dist.log:
            grid[name] = list(range(dist.low, dist.high + 1, dist.step))
        elif isinstance(dist, FloatDistribution) and dist.step is not None:
            n = round((dist.high - dist.low) / dist.step)
            grid[name] = [float(Decimal(str(dist.low)) + k * Decimal(str(dist.step))) for k in range(n + 1)]
        else:
            raise ConfigError(f"hydra/sweeper/sampler=grid searches values: hydra.sweeper.params.{name} is an "
                              f"interval; give it as choice(...) or range(...)")
    return grid


def compatible(a: BaseDistribution, b: BaseDistribution) -> bool:
    if isinstance(a, CategoricalDistribution) or isinstance(b, CategoricalDistribution):
        return a == b
    return type(a) is type(b) and a.log == b.log  # type: ignore[attr-defined]


def suggest(trial: optuna.trial.Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    assert isinstance(dist, FloatDistribution)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
