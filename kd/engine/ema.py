"""Exponential moving average of a network's weights (evaluated instead of the raw weights when enabled)."""

from __future__ import annotations

import copy

import torch
from torch import nn


@torch.no_grad()
def blend_(target: nn.Module, source: nn.Module, keep: float) -> None:
    """In place: target = keep * target + (1 - keep) * source over the floating-point state; other state
    (integer buffers) is copied. The two networks must share one architecture."""
    values = source.state_dict()
    for name, value in target.state_dict().items():
        if value.dtype.is_floating_point:
            value.mul_(keep).add_(values[name].detach(), alpha=1 - keep)
        else:
            value.copy_(values[name])


class ModelEma:
    """`ema = d * ema + (1 - d) * weights` after each step, with d warmed up as min(decay, (1 + n) / (10 + n))
    so the average is not dominated by the random initialisation in short runs. Buffers are copied."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def update(self, model: nn.Module) -> None:
        self.updates += 1
        blend_(self.module, model, min(self.decay, (1 + self.updates) / (10 + self.updates)))

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
