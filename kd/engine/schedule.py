"""Optimizer and learning-rate schedule from a `TrainConfig`.

The learning rate is a pure function of the step (`lr_at`), set on the optimizer before every step, so the
schedule needs no state of its own beyond the step counter and resumes exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from kd.config import TrainConfig


def milestone_steps(train: TrainConfig) -> list[int]:
    """Milestones in steps: values below 1 are fractions of `train.steps`."""
    return sorted(int(round(m * train.steps)) if m < 1 else int(m) for m in train.milestones)


def lr_at(train: TrainConfig, step: int) -> float:
    """Learning rate used for step `step` (0-based)."""
    if train.schedule == "constant":
        return train.lr
    if train.schedule == "multistep":
        passed = sum(1 for m in milestone_steps(train) if step >= m)
        return train.lr * train.gamma**passed
    if train.schedule == "cosine":
        progress = min(step / max(train.steps, 1), 1.0)
        return train.min_lr + (train.lr - train.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {train.schedule}")


def make_optimizer(train: TrainConfig, groups: Iterable[dict[str, Any]]) -> torch.optim.Optimizer:
    groups = [g for g in groups if g["params"]]
    kwargs = {"lr": train.lr, "betas": tuple(train.betas), "weight_decay": train.weight_decay}
    cls = torch.optim.AdamW if train.optimizer == "adamw" else torch.optim.Adam
    # The fused kernel is ~7x faster than the per-tensor loop on CPU for a network of many small tensors (ASID:
    # 366 tensors, 14 ms -> 2 ms per step), which is most of a distillation step's overhead.
    params = [p for g in groups for p in g["params"]]
    if all(p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for p in params):
        try:
            return cls(groups, fused=True, **kwargs)
        except (RuntimeError, ValueError, TypeError):
            pass
    return cls(groups, **kwargs)


def set_lr(optimizer: torch.optim.Optimizer, lr: float, base_lr: float) -> None:
    """Scale every group by lr / base_lr (groups may carry their own base lr in `initial_lr`)."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = group["initial_lr"] * (lr / base_lr) if base_lr else lr
