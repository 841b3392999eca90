"""The CUDA code paths: device placement, half-precision teachers, channels_last, torch.compile, pinned memory and
NCCL. Marked `cuda`; each skips without a GPU (the CPU equivalents are in test_accel.py and test_distributed.py).
`benchmarks/gpu_check.py` runs them first thing when a GPU is lent and records the outcome."""

from __future__ import annotations

import json
import socket

import pytest
import torch

from kd.config import AccelConfig, resolve
from kd.engine import Trainer
from kd.engine.accel import plan_accel
from kd.engine.batches import FixedBatch
from kd.methods import create_method, get_method, loss_weights
from kd.models import create
from kd.profiles import profile_layer

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run by benchmarks/gpu_check.py)"),
]
DEVICE = "cuda"


def _trainer(tmp_path, accel: AccelConfig, method: str = "fitnet") -> Trainer:
    torch.manual_seed(0)
    student = create("asid", 2, "tiny").to(DEVICE)
    teacher = create("rcan", 2, "tiny").to(DEVICE)
    distiller = create_method(method, student, teacher).to(DEVICE)
    plan = plan_accel(accel, DEVICE, taps=get_method(method).taps_features)
    plan.network(student)
    plan.network(teacher, frozen_teacher=True)
    generator = torch.Generator().manual_seed(1)
    lr = torch.rand(2, 3, 16, 16, generator=generator)
    hr = torch.nn.functional.interpolate(lr, scale_factor=2, mode="bicubic").clamp(0, 1)
    lr, hr = lr.to(DEVICE), hr.to(DEVICE)
    train = resolve([profile_layer("smoke"), ("test", {"train": {"steps": 4}})]).train
    tmp_path.mkdir(parents=True, exist_ok=True)  # the first step records method health in metrics.jsonl
    return Trainer(train, student=student, teacher=teacher, method=distiller, weights=loss_weights(method),
                   batches=FixedBatch(lr, hr), run_dir=tmp_path, seed=0, device=DEVICE, accel=plan)


def _step(trainer: Trainer) -> dict[str, float]:
    return trainer.train_step(*trainer.batches.batch(0))


def test_a_run_trains_and_evaluates_on_the_gpu(tmp_path, monkeypatch):
    from kd.cli import main

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "runs"
    assert main(["run", "--profile", "smoke", "--method", "fitnet", "--no-progress", "--out-dir", str(out),
                 "--set", "device=cuda"]) == 0
    summary = json.loads(next(out.glob("*/summary.json")).read_text())
    assert summary["device"] == "cuda"
    assert all(0 < row["psnr_y"] < 100 for row in summary["datasets"].values())


def test_trainer_keeps_everything_on_the_gpu(tmp_path):
    trainer = _trainer(tmp_path, AccelConfig())
    values = _step(trainer)
    assert all(p.device.type == "cuda" for p in trainer.student.parameters())
    assert all(p.grad is None or p.grad.device.type == "cuda" for p in trainer.trained_params)
    assert all(state["exp_avg"].device.type == "cuda" for state in trainer.optimizer.state.values())
    assert values["loss"] > 0


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_teacher_agrees_with_fp32(tmp_path, dtype):
    reference = _step(_trainer(tmp_path / "ref", AccelConfig()))
    trainer = _trainer(tmp_path / dtype, AccelConfig(teacher_dtype=dtype))
    wanted = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    assert all(p.dtype == wanted for p in trainer.teacher.parameters())
    values = _step(trainer)
    assert values["rec"] == pytest.approx(reference["rec"], rel=1e-3)
    assert values["fd"] == pytest.approx(reference["fd"], rel=5e-2)


def test_bf16_autocast_and_channels_last_agree_with_fp32(tmp_path):
    reference = _step(_trainer(tmp_path / "ref", AccelConfig()))
    trainer = _trainer(tmp_path / "fast", AccelConfig(precision="bf16", channels_last=True, teacher_dtype="bf16"))
    conv = next(m for m in trainer.student.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    values = _step(trainer)
    for term in ("rec", "fd", "loss"):
        assert values[term] == pytest.approx(reference[term], rel=5e-2)


@pytest.mark.parametrize("method", ["none", "logits"])
def test_compiled_student_matches_eager(tmp_path, method):
    eager = _trainer(tmp_path / "eager", AccelConfig(), method=method)
    compiled = _trainer(tmp_path / "compiled", AccelConfig(compile="inductor"), method=method)
    for _ in range(3):
        expected, got = _step(eager), _step(compiled)
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-3)


def test_pinned_batches_reach_the_gpu(tmp_path):
    from kd.engine.batches import patch_batches

    batches = patch_batches("default", 2, 16, 2, 2, seed=0, pin_memory=True)
    lr, hr = next(iter(batches.iterate(0, 1)))
    assert lr.is_pinned() and hr.is_pinned()
    assert lr.to(DEVICE, non_blocking=True).device.type == "cuda"


def test_nccl_with_one_rank_runs_ddp(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        value = torch.arange(4.0, device=DEVICE)
        dist.all_reduce(value)
        assert value.tolist() == [0.0, 1.0, 2.0, 3.0]
        torch.manual_seed(0)
        plain = create("asid", 2, "tiny").to(DEVICE)
        wrapped = DistributedDataParallel(create("asid", 2, "tiny").to(DEVICE))
        wrapped.module.load_state_dict(plain.state_dict())
        lr = torch.rand(2, 3, 16, 16, device=DEVICE)
        plain(lr).mean().backward()
        wrapped(lr).mean().backward()
        for a, b in zip(plain.parameters(), wrapped.module.parameters()):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)
    finally:
        dist.destroy_process_group()
