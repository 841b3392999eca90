"""The accel options: bf16 autocast checked against fp32 on the CPU, fallbacks and refusals, channels_last and
compile wiring. Real networks (ASID and RCAN tiny presets) through the real trainer."""

from __future__ import annotations

import pytest
import torch

from kd.config import AccelConfig, resolve
from kd.engine import Trainer
from kd.engine.accel import plan_accel
from kd.engine.batches import FixedBatch
from kd.errors import KdError
from kd.methods import create_method, loss_weights
from kd.models import create
from kd.profiles import profile_layer


def _trainer(tmp_path, accel: AccelConfig, method: str = "fitnet", steps: int = 1) -> Trainer:
    torch.manual_seed(0)
    student = create("asid", 2, "tiny")
    teacher = create("rcan", 2, "tiny")
    distiller = create_method(method, student, teacher)
    plan = plan_accel(accel, "cpu", taps=bool(distiller.student_taps or distiller.teacher_taps))
    plan.network(student)
    plan.network(teacher, frozen_teacher=True)
    generator = torch.Generator().manual_seed(1)
    lr = torch.rand(2, 3, 16, 16, generator=generator)
    hr = torch.nn.functional.interpolate(lr, scale_factor=2, mode="bicubic").clamp(0, 1)
    train = resolve([profile_layer("smoke"), ("test", {"train": {"steps": steps}})]).train
    return Trainer(train, student=student, teacher=teacher, method=distiller, weights=loss_weights(method),
                   batches=FixedBatch(lr, hr), run_dir=tmp_path, seed=0, accel=plan)


def test_bf16_autocast_step_agrees_with_fp32_on_cpu(tmp_path):
    fp32 = _trainer(tmp_path / "a", AccelConfig())
    bf16 = _trainer(tmp_path / "b", AccelConfig(precision="bf16"))
    lr, hr = fp32.batches.batch(0)
    values32, values16 = fp32.train_step(lr, hr), bf16.train_step(lr, hr)
    assert values16["loss"] != values32["loss"]  # bf16 arithmetic really ran
    for term in ("rec", "fd", "loss"):
        assert values16[term] == pytest.approx(values32[term], rel=3e-2)
    grads32 = torch.cat([p.grad.flatten() for p in fp32.student.parameters() if p.grad is not None])
    grads16 = torch.cat([p.grad.flatten() for p in bf16.student.parameters() if p.grad is not None])
    assert grads16.dtype == torch.float32  # autocast leaves parameters and their gradients in fp32
    assert torch.nn.functional.cosine_similarity(grads32, grads16, dim=0) > 0.98


def test_bf16_training_reduces_the_loss_like_fp32(tmp_path):
    finals = {}
    for precision in ("fp32", "bf16"):
        trainer = _trainer(tmp_path / precision, AccelConfig(precision=precision), method="logits", steps=25)
        lr, hr = trainer.batches.batch(0)
        first = trainer.train_step(lr, hr)["loss"]
        for _ in range(24):
            last = trainer.train_step(lr, hr)["loss"]
        assert last < 0.9 * first
        finals[precision] = last
    assert finals["bf16"] == pytest.approx(finals["fp32"], rel=0.1)


def test_half_precision_teacher_and_channels_last(tmp_path):
    reference = _trainer(tmp_path / "ref", AccelConfig())
    trainer = _trainer(tmp_path / "half", AccelConfig(teacher_dtype="bf16", channels_last=True))
    assert all(p.dtype == torch.bfloat16 for p in trainer.teacher.parameters())
    assert all(p.dtype == torch.float32 for p in trainer.student.parameters())
    conv = next(m for m in trainer.student.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    lr, hr = trainer.batches.batch(0)
    values, expected = trainer.train_step(lr, hr), reference.train_step(lr, hr)
    assert values["rec"] == pytest.approx(expected["rec"], rel=1e-4)  # the student is unchanged by either option
    assert values["fd"] == pytest.approx(expected["fd"], rel=5e-2)  # the teacher's features, in bf16


def test_gpu_only_options_fall_back_on_cpu_with_a_warning():
    plan = plan_accel(AccelConfig(teacher_dtype="fp16", pin_memory=True), "cpu")
    assert plan.teacher_dtype == torch.float32 and not plan.pin_memory
    assert any("fp16 needs a GPU" in w for w in plan.warnings)
    assert any("pin_memory" in w for w in plan.warnings)
    assert plan_accel(AccelConfig(), "cpu").warnings == []


def test_refused_options():
    with pytest.raises(KdError, match="accel.compile.*taps features"):
        plan_accel(AccelConfig(compile="eager"), "cpu", taps=True)
    with pytest.raises(KdError, match="accel.precision must be fp32 or bf16.*use bf16"):
        resolve([profile_layer("smoke"), ("test", {"accel": {"precision": "fp16"}})])


def test_compile_wraps_the_forward(tmp_path):
    trainer = _trainer(tmp_path, AccelConfig(compile="eager"), method="logits")
    assert trainer.student._compiled_call_impl is not None
    lr, hr = trainer.batches.batch(0)
    reference = _trainer(tmp_path / "ref", AccelConfig(), method="logits")
    assert trainer.train_step(lr, hr)["loss"] == pytest.approx(reference.train_step(lr, hr)["loss"], rel=1e-5)


def test_taps_features_flag_matches_each_method():
    from kd.methods import get_method, list_methods

    student, teacher = create("asid", 2, "tiny"), create("rcan", 2, "tiny")
    for name, _ in list_methods():
        method = create_method(name, student, teacher if get_method(name).needs_teacher else None)
        assert bool(method.student_taps or method.teacher_taps) == get_method(name).taps_features, name


def test_channels_last_applies_to_networks_with_other_ranks_too():
    han = create("han", 2, "tiny")  # its layer attention holds a Conv3d (5-d weight)
    plan_accel(AccelConfig(channels_last=True), "cpu").network(han)
    weights = [p for p in han.parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    assert any(p.dim() == 5 for p in han.parameters())
    assert han(torch.rand(1, 3, 12, 12)).shape == (1, 3, 24, 24)
