"""Learning-rate schedules, all stepped once per batch and built as ``f(optimizer, total_steps)``.

The engine knows only the total step count; each factory turns it into its torch scheduler,
or into None for a constant rate (a scheduler step that changes nothing still costs 30 us).
"""

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from neuralforge.record.errors import ConfigError


def constant(optimizer: Optimizer, total_steps: int) -> None:
    return None


def cosine(optimizer: Optimizer, total_steps: int, warmup: float = 0.0, final_lr_ratio: float = 0.0) -> LRScheduler:
    return LambdaLR(optimizer, _Cosine(total_steps, round(warmup * total_steps), final_lr_ratio))


def one_cycle(optimizer: Optimizer, total_steps: int, max_lr: float, pct_start: float = 0.25,
              div_factor: float = 25.0, final_div_factor: float = 1e4) -> LRScheduler:
    if pct_start * total_steps <= 1:  # OneCycleLR would divide by its empty warm-up phase
        raise ConfigError(f"scheduler=one_cycle warms up over pct_start={pct_start} of {total_steps} steps, less "
                          f"than two: train more steps (more epochs, a smaller batch) or raise pct_start")
    return OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=pct_start,
                      div_factor=div_factor, final_div_factor=final_div_factor,
                      cycle_momentum=False)


# A callable object rather than a lambda: LambdaLR saves its __dict__ in its state_dict,
# which keeps checkpoints loadable with weights_only=True.
class _Cosine:
    def __init__(self, total: int, warmup: int, final: float):
        self.total, self.warmup, self.final = total, warmup, final

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.final + (1 - self.final) * 0.5 * (1 + math.cos(math.pi * progress))
