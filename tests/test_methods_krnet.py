"""Meta-KD with KRNets on the real tiny networks: loss, gradients, meta step, taps, export, CLI run, resume."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from kd.config import TrainConfig
from kd.engine import Trainer
from kd.engine.checkpoint import load_checkpoint
from kd.errors import KdError
from kd.methods import StepInputs, create_method, loss_weights
from kd.methods.base import StepContext
from kd.models import capture, create, read_checkpoint

SCALE = 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pair(teacher_arch: str = "rcan", scale: int = SCALE, **teacher_fields):
    torch.manual_seed(0)
    student = create("asid", scale, "tiny")
    teacher = create(teacher_arch, scale, "tiny", **teacher_fields).eval().requires_grad_(False)
    return student, teacher


def _batch(seed: int, scale: int = SCALE, size: int = 16, batch: int = 2):
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(batch, 3, size * scale, size * scale, generator=g)
    hr = F.avg_pool2d(F.pad(hr, (1, 1, 1, 1), mode="replicate"), 3, stride=1)  # smooth: learnable
    return F.avg_pool2d(hr, scale), hr


class FixedBatches:
    """The same batch at every step (or, with `stop_after`, a crash once that step is reached)."""

    def __init__(self, seed: int, stop_after: int | None = None) -> None:
        self.lr, self.hr = _batch(seed)
        self.batch_size, self.stop_after = self.lr.shape[0], stop_after

    def batch(self, step: int):
        return self.lr, self.hr

    def iterate(self, start: int, end: int):
        for step in range(start, end):
            if self.stop_after is not None and step >= self.stop_after:
                raise RuntimeError("simulated crash")
            yield self.lr, self.hr


def _trainer(tmp_path, steps=8, stop_after=None, init_seed=0, weights=None, **train):
    student, teacher = _pair(n_feats=12)  # 8 -> 12 channels: real 1x1 adapters
    torch.manual_seed(init_seed)
    student = create("asid", SCALE, "tiny") if init_seed else student
    method = create_method("krnet", student, teacher)
    recipe = TrainConfig(**{"steps": steps, "batch_size": 2, "lr": 2e-3, "log_every": 1, "ckpt_every": 2,
                            "val_every": 0, **train})
    return Trainer(recipe, student=student, teacher=teacher, method=method, weights=loss_weights("krnet", weights),
                   batches=FixedBatches(1, stop_after), holdout=FixedBatches(2), run_dir=tmp_path, seed=0)


def _step_terms(method, student, teacher, lr, hr):
    with capture(student, method.student_taps) as s_feats:
        out = student(lr)
    with torch.no_grad(), capture(teacher, method.teacher_taps, detach=True) as t_feats:
        t_out = teacher(lr)
    return method.losses(StepInputs(lr, hr, out, t_out, dict(s_feats), dict(t_feats)))


def _flat(tensors):
    return torch.cat([t.detach().flatten() for t in tensors])


def test_loss_is_finite_and_decreases_on_a_fixed_batch(tmp_path):
    # kr weighted 1 (default 0.1) so that 16 steps visibly lower it too
    trainer = _trainer(tmp_path, steps=16, ckpt_every=16, weights={"kr": 1.0})
    krnets_before = [p.detach().clone() for p in trainer.method.krnets.parameters()]
    trainer.fit()
    records = [r for r in trainer.log.records() if "loss" in r]
    assert len(records) == 16
    for record in records:
        assert all(torch.isfinite(torch.tensor(v)) for v in [record["loss"], *record["terms"].values()])
    assert set(records[0]["terms"]) == {"rec", "kr", "meta_val_rec"}
    mean = lambda rs, key: sum(r["terms"][key] for r in rs) / len(rs)  # noqa: E731
    assert sum(r["loss"] for r in records[-4:]) < sum(r["loss"] for r in records[:4])
    assert mean(records[-4:], "kr") < mean(records[:4], "kr")
    assert mean(records[-4:], "rec") < mean(records[:4], "rec")
    # the KRNets moved (meta optimizer), the teacher did not
    after = list(trainer.method.krnets.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(krnets_before, after))


def test_gradients_reach_student_and_krnet_never_teacher():
    student, teacher = _pair(n_feats=12)
    method = create_method("krnet", student, teacher)
    assert all(isinstance(a, torch.nn.Conv2d) for a in method.adapters.values())
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    krnets_before = [p.detach().clone() for p in method.krnets.parameters()]
    lr, hr = _batch(0)
    terms = _step_terms(method, student, teacher, lr, hr)
    terms["kr"].backward()
    assert sum(float(p.grad.abs().sum()) for p in student.parameters() if p.grad is not None) > 0
    assert all(a.weight.grad.abs().sum() > 0 for a in method.adapters.values())
    assert all(p.grad is None for p in teacher.parameters())

    optimizer = torch.optim.SGD(student.parameters(), lr=1e-2)
    ctx = StepContext(0, student, teacher, optimizer, 1e-2, lambda: _batch(5), loss_weights("krnet"))
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    logged = method.before_optimizer_step(ctx)
    assert "meta_val_rec" in logged and logged["meta_val_rec"] > 0
    moved = [not torch.equal(a, b) for a, b in zip(krnets_before, method.krnets.parameters())]
    assert all(moved), "every KRNet tensor receives a meta update"
    assert method.meta_optimizer.state, "the meta optimizer took a step"
    # the meta step leaves the student exactly as it was (the virtual steps are undone) and the teacher untouched
    assert all(torch.equal(student_before[k], v) for k, v in student.state_dict().items())
    assert all(torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())


def _double_setup(meta_order: str, **options):
    student, teacher = _pair(n_feats=12)
    method = create_method("krnet", student, teacher, {"meta_order": meta_order, **options})
    student.double(), teacher.double(), method.double()
    lr, hr = (t.double() for t in _batch(0))
    holdout = tuple(t.double() for t in _batch(7))
    return student, teacher, method, lr, hr, holdout


def _train_grad(method, student, teacher, lr, hr, weight):
    student.zero_grad(set_to_none=True)
    terms = _step_terms(method, student, teacher, lr, hr)
    (terms["rec"] + weight * terms["kr"]).backward()


def _bilevel_objective(method, student, teacher, lr, hr, holdout, alpha, weight):
    """L_val(theta - alpha * grad_theta L_train(theta, phi)) computed from scratch (student restored after)."""
    saved = {k: v.clone() for k, v in student.state_dict().items()}
    _train_grad(method, student, teacher, lr, hr, weight)
    with torch.no_grad():
        for p in student.parameters():
            if p.grad is not None:
                p.sub_(alpha * p.grad)
        value = F.l1_loss(student(holdout[0]), holdout[1]).item()
    student.load_state_dict(saved)
    return value


def _hypergradient(order, alpha, weight, **options):
    student, teacher, method, lr, hr, holdout = _double_setup(order, **options)
    _train_grad(method, student, teacher, lr, hr, weight)
    batch_lr, teacher_feats, student_feats = method._step_batch
    return _flat(method.hypergradient(student, batch_lr, teacher_feats, *holdout, alpha, weight, student_feats)[0])


def test_hypergradient_both_orders_run_with_plain_l1():
    for order in ("first", "second"):
        hyper = _hypergradient(order, 0.05, 0.1)
        assert torch.isfinite(hyper).all() and hyper.norm() > 0


def test_hypergradient_first_and_second_order_agree_with_brute_force():
    # Smooth distance (Charbonnier): with plain L1 the orders differ by the sign-flip terms (module docstring).
    alpha, weight, h, smooth = 0.05, 0.1, 1e-4, 0.05
    results = {}
    for order in ("first", "second"):
        student, teacher, method, lr, hr, holdout = _double_setup(order, smooth=smooth, fd_epsilon=1e-5)
        _train_grad(method, student, teacher, lr, hr, weight)
        batch_lr, teacher_feats, _ = method._step_batch
        hyper, _ = method.hypergradient(student, batch_lr, teacher_feats, *holdout, alpha, weight)
        results[order] = _flat(hyper)
    first, second = results["first"], results["second"]
    assert second.norm() > 0
    assert F.cosine_similarity(first, second, dim=0) > 0.999
    assert torch.allclose(first, second, rtol=0, atol=1e-3 * float(second.abs().max()))

    # independent check: central difference of the bilevel objective along a random direction of phi
    student, teacher, method, lr, hr, holdout = _double_setup("second", smooth=smooth)
    phi = list(method.krnets.parameters())
    g = torch.Generator().manual_seed(3)
    direction = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in phi]
    base = [p.detach().clone() for p in phi]
    values = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for p, b, d in zip(phi, base, direction):
                p.copy_(b + sign * h * d)
        values.append(_bilevel_objective(method, student, teacher, lr, hr, holdout, alpha, weight))
    brute = (values[0] - values[1]) / (2 * h)
    predicted = float(second @ _flat(direction))
    assert brute == pytest.approx(predicted, rel=1e-2)  # measured: 0.14% apart (O(h^2) and L1 kinks of L_val)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("teacher_arch", ["rcan", "han", "swinir"])
def test_taps_resolve_for_every_teacher(teacher_arch, scale):
    student, teacher = _pair(teacher_arch, scale)
    method = create_method("krnet", student, teacher)
    assert method.student_taps and len(method.student_taps) == len(method.teacher_taps)
    lr, hr = _batch(0, scale=scale)
    terms = _step_terms(method, student, teacher, lr, hr)
    assert torch.isfinite(terms["kr"]) and terms["kr"] > 0
    terms["kr"].backward()
    assert student.block0.parameters().__next__().grad is not None


def test_options_are_checked():
    student, teacher = _pair()
    with pytest.raises(KdError, match="method.options.meta_order"):
        create_method("krnet", student, teacher, {"meta_order": "third"})
    with pytest.raises(KdError, match="method.options.kernel_size"):
        create_method("krnet", student, teacher, {"kernel_size": 4})
    with pytest.raises(KdError, match="method.options.meta_lrr"):
        create_method("krnet", student, teacher, {"meta_lrr": 1.0})


def test_crash_and_resume_restores_krnets_and_meta_optimizer(tmp_path):
    reference = _trainer(tmp_path / "a")
    reference.fit()
    crashed = _trainer(tmp_path / "b", stop_after=5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit()
    state = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert state["step"] == 4 and state["method"]["_extra_state"]["meta_optimizer"]["state"]
    resumed = _trainer(tmp_path / "b", init_seed=123)  # fresh objects, other init: all state comes from disk
    assert resumed.fit().resumed_from == 4
    for name, value in reference.student.state_dict().items():
        assert torch.equal(value, resumed.student.state_dict()[name]), name
    for name, value in reference.method.state_dict().items():
        if name != "_extra_state":
            assert torch.equal(value, resumed.method.state_dict()[name]), name
    ref_meta = reference.method.meta_optimizer.state_dict()["state"]
    res_meta = resumed.method.meta_optimizer.state_dict()["state"]
    assert ref_meta.keys() == res_meta.keys()
    assert all(torch.equal(ref_meta[i][k], res_meta[i][k]) for i in ref_meta for k in ref_meta[i])
    strip = lambda log: [{k: v for k, v in r.items() if not k.endswith("_time")} for r in log.records()]  # noqa: E731
    assert strip(resumed.log) == strip(reference.log)


def test_cli_smoke_run_exports_a_plain_asid(tmp_path, monkeypatch):
    from kd.cli import main

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    argv = ["run", "--student", "asid", "--teacher", "rcan", "--method", "krnet", "--profile", "smoke",
            "--threads", "1", "--out-dir", str(tmp_path / "runs"), "--no-progress"]
    assert main(argv) == 0
    (run_dir,) = list((tmp_path / "runs").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == "krnet" and summary["steps"] == 6
    exported = read_checkpoint(run_dir / "student.pt")
    plain = create("asid", SCALE, "tiny")
    plain.load_state_dict(exported)  # strict: exactly ASID's keys, no KRNet or adapter
    assert not any("krnet" in k or "adapter" in k for k in exported)
    method_state = load_checkpoint(run_dir / "checkpoints" / "last.pt")["method"]
    assert any(k.startswith("krnets.") for k in method_state) and method_state["_extra_state"]["meta_optimizer"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all("meta_val_rec" in r["terms"] for r in records if "terms" in r)


@pytest.mark.parametrize("optimizer_name", ["adam", "adamw"])
def test_virtual_step_is_the_optimizers_own_update(optimizer_name):
    from kd.engine.schedule import make_optimizer
    from kd.methods.krnet import optimizer_virtual_step

    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(4))]
    recipe = TrainConfig(optimizer=optimizer_name, lr=1e-3, weight_decay=0.1 if optimizer_name == "adamw" else 0.01)
    optimizer = make_optimizer(recipe, [{"params": params, "lr": recipe.lr}])
    for _ in range(3):  # with moments already built up, as mid-training
        for p in params:
            p.grad = torch.randn_like(p)
        grads = [p.grad.clone() for p in params]
        before = [p.detach().clone() for p in params]
        step = optimizer_virtual_step(optimizer, params, grads, recipe.lr)
        optimizer.step()
        for p, b, u in zip(params, before, step.update):
            assert torch.allclose(b - u, p.detach(), atol=1e-7, rtol=1e-5)
    # the SGD form at the same lr is orders of magnitude smaller than Adam's step for small gradients
    assert all(j.shape == p.shape and (j > 0).all() for j, p in zip(step.jacobian, params))


def test_kernel_generator_reads_detached_student_features():
    student, teacher = _pair(n_feats=12)
    method = create_method("krnet", student, teacher)
    krnet = next(iter(method.krnets.values()))
    s = torch.randn(2, 12, 6, 6, requires_grad=True)
    t = torch.randn(2, 12, 6, 6)
    krnet.kernels(s, t).sum().backward()
    assert s.grad is None  # the student cannot lower L_KR by steering which textures are compared


def test_meta_step_reuses_the_training_steps_student_features():
    alpha, weight = 0.05, 0.1
    student, teacher, method, lr, hr, holdout = _double_setup("first")
    _train_grad(method, student, teacher, lr, hr, weight)
    batch_lr, teacher_feats, student_feats = method._step_batch
    reused, _ = method.hypergradient(student, batch_lr, teacher_feats, *holdout, alpha, weight, student_feats)
    recomputed, _ = method.hypergradient(student, batch_lr, teacher_feats, *holdout, alpha, weight)
    assert _flat(recomputed).norm() > 0
    assert torch.allclose(_flat(reused), _flat(recomputed), rtol=1e-9, atol=1e-12)


def test_finite_difference_sides_draw_the_same_drop_path_masks():
    # A stochastic student: with a zero direction both sides are the same network, so their difference must be
    # exactly zero; differently masked forwards would leave noise divided by 2r.
    torch.manual_seed(0)
    student = create("swinir", SCALE, "tiny").train()  # drop-path rate up to 0.1 (the official default)
    teacher = create("rcan", SCALE, "tiny", n_feats=12).eval().requires_grad_(False)
    method = create_method("krnet", student, teacher)
    lr, _ = _batch(0)
    with torch.no_grad(), capture(teacher, method.teacher_taps, detach=True) as t_feats:
        teacher(lr)
    params = [p for p in student.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    zero = [torch.zeros_like(p) for p in params]
    mixed = method._mixed_finite_difference(student, params, saved, zero, lr, dict(t_feats))
    assert all(torch.equal(m, torch.zeros_like(m)) for m in mixed)
