"""Shared by the network and method tests: parameter counts on the meta device and one training step of a method."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from kd.config import TrainConfig
from kd.engine import Trainer
from kd.engine.batches import FixedBatch
from kd.methods import create_method, get_method, loss_weights
from kd.metrics.cost import count_parameters
from kd.models import create

# Options for one-step method tests with untrained tiny networks: FACD's gates would weaken its term (they are tested
# on their own); DCKD's history network is refreshed from step 1000 by default, here every step; TAS teaches from an
# assistant at the student's scale in mode size (tests/test_methods_tas.py covers mode input).
STEP_OPTIONS = {"facd": {"gate": "none"}, "dckd": {"history_every": [1]},
                "tas": {"mode": "size", "assistant_arch": "rcan", "stage_method": "fitnet"}}


def parameters(arch: str, scale: int, preset: str = "paper", *, trainable: bool = False, **fields) -> int:
    """Parameters as kdbench counts them (shared tensors once), without allocating weights; `fields` override the
    preset's; `trainable`: only the parameters that train (frozen ones, such as a fixed MeanShift, left out)."""
    with torch.device("meta"):
        model = create(arch, scale, preset, **fields)
    return sum(p.numel() for p in model.parameters() if p.requires_grad) if trainable else count_parameters(model)


def smooth_batch(scale: int, batch: int = 2, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(batch, 3, size * scale, size * scale, generator=g)
    hr = F.avg_pool2d(F.pad(hr, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    return F.avg_pool2d(hr, scale), hr


@dataclass
class Step:
    values: dict[str, float]  # what the step logs (loss terms, loss), every one finite
    health: dict[str, float]  # step-0 gradient-norm ratio of each weighted KD term to the reconstruction term
    changed: set[str]  # the student's state-dict entries the step changed (never empty)
    trainer: Trainer


def training_step(run_dir: Path, method_name: str, student: str | nn.Module, teacher: str | nn.Module = "rcan",
                  *, scale: int = 4, options: dict | None = None) -> Step:
    """One optimizer step of `method_name` distilling `student` from `teacher` (an architecture's tiny preset, or a
    network) on a smooth 2 x 16 px LR batch, after the step-0 health check. Asserts that every logged value is
    finite and that the step moved the student."""
    torch.manual_seed(0)
    if isinstance(student, str):
        student = create(student, scale, "tiny")
    if isinstance(teacher, str):
        teacher = create(teacher, scale, "tiny")
    scale = student.scale
    method = create_method(method_name, student, teacher if get_method(method_name).needs_teacher else None,
                           options or STEP_OPTIONS.get(method_name))
    lr, hr = smooth_batch(scale)
    recipe = TrainConfig(steps=1, batch_size=lr.shape[0], lr_patch=lr.shape[-1], lr=1e-3, schedule="constant",
                         log_every=1, ckpt_every=100, val_every=0)
    trainer = Trainer(recipe, student=student, teacher=teacher, method=method,
                      weights=loss_weights(method_name, None, method), batches=FixedBatch(lr, hr),
                      holdout=FixedBatch(*smooth_batch(scale, seed=1)), run_dir=run_dir, seed=0)
    before = {k: v.detach().clone() for k, v in trainer.student.state_dict().items()}
    health = trainer.health(lr, hr)
    values = trainer.train_step(lr, hr)
    assert all(math.isfinite(v) for v in values.values()), values
    changed = {k for k, v in trainer.student.state_dict().items() if not torch.equal(v, before[k])}
    assert changed, f"{method_name}: no student weight changed"
    return Step(values, health, changed, trainer)
