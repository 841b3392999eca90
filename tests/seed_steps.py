"""Shared by the seed-network tests: parameter counts on the meta device and one training step of a method."""

from __future__ import annotations

import math
from pathlib import Path

import torch
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


def parameters(arch: str, scale: int, preset: str = "paper") -> int:
    """Parameters as kdbench counts them (shared tensors once), without allocating weights."""
    with torch.device("meta"):
        return count_parameters(create(arch, scale, preset))


def smooth_batch(scale: int, batch: int = 2, size: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(batch, 3, size * scale, size * scale, generator=g)
    hr = F.avg_pool2d(F.pad(hr, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    return F.avg_pool2d(hr, scale), hr


def training_step(run_dir: Path, method_name: str, student_arch: str, teacher_arch: str = "rcan",
                  scale: int = 4) -> tuple[dict[str, float], Trainer]:
    """One optimizer step of `method_name` distilling tiny `student_arch` from tiny `teacher_arch`: the logged
    values (every one finite) and the trainer."""
    torch.manual_seed(0)
    student, teacher = create(student_arch, scale, "tiny"), create(teacher_arch, scale, "tiny")
    method = create_method(method_name, student, teacher if get_method(method_name).needs_teacher else None,
                           STEP_OPTIONS.get(method_name))
    lr, hr = smooth_batch(scale)
    recipe = TrainConfig(steps=1, batch_size=lr.shape[0], lr_patch=lr.shape[-1], lr=1e-3, schedule="constant",
                         log_every=1, ckpt_every=100, val_every=0)
    trainer = Trainer(recipe, student=student, teacher=teacher, method=method,
                      weights=loss_weights(method_name, None, method), batches=FixedBatch(lr, hr),
                      holdout=FixedBatch(*smooth_batch(scale, seed=1)), run_dir=run_dir, seed=0)
    before = {k: v.detach().clone() for k, v in student.named_parameters()}
    values = trainer.train_step(lr, hr)
    assert all(math.isfinite(v) for v in values.values()), values
    moved = [k for k, v in trainer.student.named_parameters() if not torch.equal(v.detach(), before[k])]
    assert moved, f"{method_name}: no student weight changed"
    return values, trainer
