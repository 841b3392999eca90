"""LSFD, FACD, attention KD (and every other registered method) on the real networks, tiny presets.

Generic checks run over every registered method (picked up from the registry, so methods added later, such as
`krnet`, are covered): finite and decreasing loss on a fixed batch, gradients reach the student and the method and
never the teacher, the exported student is a plain ASID, taps resolve for RCAN / HAN / SwinIR at x2, x3, x4.
Formula checks compare each method's pieces against brute-force loops written independently here.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from kd.config import TrainConfig
from kd.engine import Trainer
from kd.engine.batches import FixedBatch
from kd.errors import KdError
from kd.methods import StepInputs, create_method, get_method, list_methods, loss_weights
from kd.models import capture, create, read_checkpoint
from seed_steps import STEP_OPTIONS

METHODS = [name for name, _ in list_methods()]
TEACHER_METHODS = [name for name in METHODS if get_method(name).needs_teacher]
NEW_METHODS = ("lsfd", "facd", "attention")
DISTILL_TERM = {"lsfd": "lsfd", "facd": "facd", "attention": "att", "fakd": "fakd", "dukd": "up_in", "dckd": "dcl",
                "mipkd": "feat", "dct": "dct", "tas": "fd"}
LR_PATCH = 16


def smooth_batch(scale: int, batch: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(batch, 3, LR_PATCH * scale, LR_PATCH * scale, generator=g)
    hr = F.avg_pool2d(F.pad(hr, (2, 2, 2, 2), mode="replicate"), 5, stride=1)  # smooth: learnable in a few steps
    return F.avg_pool2d(hr, scale), hr


def make_trainer(tmp_path, method_name: str, teacher_arch: str = "rcan", scale: int = 2, lr: float = 2e-3):
    torch.manual_seed(0)
    teacher = create(teacher_arch, scale, "tiny")
    student = create("asid", scale, "tiny")
    method = create_method(method_name, student, teacher if get_method(method_name).needs_teacher else None,
                           STEP_OPTIONS.get(method_name))
    lr_batch, hr_batch = smooth_batch(scale)
    recipe = TrainConfig(steps=100, batch_size=lr_batch.shape[0], lr_patch=LR_PATCH, lr=lr, schedule="constant",
                         log_every=1, ckpt_every=100, val_every=0)
    trainer = Trainer(recipe, student=student, teacher=teacher, method=method,
                      weights=loss_weights(method_name, method=method),
                      batches=FixedBatch(lr_batch, hr_batch), holdout=FixedBatch(*smooth_batch(scale, seed=1)),
                      run_dir=tmp_path, seed=0)
    return trainer, lr_batch, hr_batch


# ------------------------------------------------------------------------------------------------ every method


@pytest.mark.parametrize("method_name", METHODS)
def test_loss_finite_decreasing_and_export_is_plain_asid(tmp_path, method_name):
    trainer, lr, hr = make_trainer(tmp_path, method_name)
    history = [trainer.train_step(lr, hr) for _ in range(12)]
    for values in history:
        assert all(math.isfinite(v) for v in values.values()), values
    assert history[-1]["loss"] < history[0]["loss"]
    term = DISTILL_TERM.get(method_name)
    if term:
        assert history[-1][term] < history[0][term], [h[term] for h in history]

    exported = trainer.eval_model().state_dict()
    plain = create("asid", 2, "tiny")
    assert list(exported) == list(plain.state_dict())
    plain.load_state_dict(exported, strict=True)
    assert not set(trainer.method.state_dict()) & set(exported)
    assert [n for n, _ in trainer.student.named_modules()] == [n for n, _ in plain.named_modules()]


@pytest.mark.parametrize("method_name", TEACHER_METHODS)
def test_gradients_reach_student_and_method_never_teacher(tmp_path, method_name):
    trainer, lr, hr = make_trainer(tmp_path, method_name)
    method_before = {k: v.detach().clone() for k, v in trainer.method.named_parameters()}
    teacher_before = {k: v.clone() for k, v in trainer.teacher.state_dict().items()}
    trainer.train_step(lr, hr)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.student.parameters())
    for name, param in trainer.method.named_parameters():
        if not param.requires_grad:
            continue
        got_gradient = param.grad is not None and param.grad.abs().sum() > 0
        assert got_gradient or not torch.equal(param.detach(), method_before[name]), name
    assert all(p.grad is None and not p.requires_grad for p in trainer.teacher.parameters())
    assert all(torch.equal(v, teacher_before[k]) for k, v in trainer.teacher.state_dict().items())


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("teacher_arch", ["rcan", "han", "swinir"])
@pytest.mark.parametrize("method_name", TEACHER_METHODS)
def test_taps_resolve_for_every_teacher_and_scale(method_name, teacher_arch, scale):
    torch.manual_seed(0)
    teacher = create(teacher_arch, scale, "tiny").eval()
    student = create("asid", scale, "tiny")
    method = create_method(method_name, student, teacher, STEP_OPTIONS.get(method_name))
    lr, hr = smooth_batch(scale, batch=2)
    with capture(student, method.student_taps) as s_feats:
        out = student(lr)
    with torch.no_grad(), capture(teacher, method.teacher_taps, detach=True) as t_feats:
        t_out = teacher(lr)
    assert set(s_feats) == set(method.student_taps) and set(t_feats) == set(method.teacher_taps)
    terms = method.losses(StepInputs(lr, hr, out, t_out, dict(s_feats), dict(t_feats)))
    assert all(torch.isfinite(v) for v in terms.values())


# ------------------------------------------------------------------------------------------------ LSFD


def test_lsfd_attention_weighted_loss_matches_brute_force():
    from kd.methods.lsfd import difference_attention

    torch.manual_seed(0)
    method = create_method("lsfd", create("asid", 2, "tiny"), create("rcan", 2, "tiny"),
                           {"normalize": False, "temperature": 0.5})
    s = torch.randn(2, 3, 4, 5, requires_grad=True)
    t = torch.randn(2, 3, 4, 5)
    loss = method.tap_loss(s, t)
    expected = 0.0
    for b in range(2):
        d = [[sum((s[b, c, i, j].item() - t[b, c, i, j].item()) ** 2 for c in range(3)) / 3 for j in range(5)]
             for i in range(4)]
        mean_d = sum(map(sum, d)) / 20
        weights = [[math.exp(d[i][j] / mean_d / 0.5) for j in range(5)] for i in range(4)]
        total = sum(map(sum, weights))
        expected += sum(20 * weights[i][j] / total * d[i][j] for i in range(4) for j in range(5)) / 20
    assert loss.item() == pytest.approx(expected / 2, rel=1e-5)
    # the attention is detached: the gradient is that of sum A * D with A held constant
    loss.backward()
    d = (s - t).pow(2).mean(1)
    a = difference_attention(d, 0.5)
    assert a.mean().item() == pytest.approx(1.0, rel=1e-6)
    s2 = s.detach().clone().requires_grad_(True)
    (a * (s2 - t).pow(2).mean(1)).mean().backward()
    assert torch.allclose(s.grad, s2.grad, atol=1e-7)


def test_lsfd_selects_pixels_where_student_is_far():
    from kd.methods.lsfd import difference_attention

    d = torch.ones(1, 4, 4)
    d[0, 1, 2] = 5.0
    a = difference_attention(d, 1.0)
    assert a[0, 1, 2] == a.max() and a[0, 0, 0] < 1.0
    sharper = difference_attention(d, 0.25)
    assert sharper[0, 1, 2] > a[0, 1, 2]


def test_lsfd_regressor_is_local_and_options_are_checked():
    method = create_method("lsfd", create("asid", 2, "tiny"), create("rcan", 2, "tiny"), {"regressor_layers": 2})
    convs = [m for m in method.regressors.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2 * len(method.student_taps) and all(c.kernel_size == (3, 3) for c in convs)
    for bad in ({"regressor_layers": 3}, {"temperature": 0}, {"neighbourhood": 2}):
        with pytest.raises(KdError, match="method.options"):
            create_method("lsfd", create("asid", 2, "tiny"), create("rcan", 2, "tiny"), bad)


# ------------------------------------------------------------------------------------------------ FACD


@pytest.mark.parametrize("form", ["ratio", "infonce"])
def test_facd_contrastive_terms_match_brute_force(form):
    from kd.methods.facd import contrastive_terms

    torch.manual_seed(0)
    b, k, tau = 5, 3, 0.2
    anchor, positive, negatives = torch.randn(b, 2, 3, 3), torch.randn(b, 2, 3, 3), torch.randn(b, 2, 3, 3)
    got = contrastive_terms(anchor, positive, negatives, k, form, tau, 1e-6)

    def l1(x, y):
        return (x - y).abs().mean().item()

    for i in range(b):
        others = [(i + j) % b for j in range(1, k + 1)]
        assert i not in others
        d_pos = l1(anchor[i], positive[i])
        d_neg = [l1(anchor[i], negatives[o]) for o in others]
        if form == "ratio":
            expected = d_pos / (sum(d_neg) / k + 1e-6)
        else:
            expected = -math.log(math.exp(-d_pos / tau) / sum(math.exp(-d / tau) for d in [d_pos, *d_neg]))
        assert got[i].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("gate", ["soft", "teacher_better"])
def test_facd_gate_weighs_samples_by_whether_the_teacher_beats_the_student(gate):
    torch.manual_seed(0)
    student, teacher = create("asid", 2, "tiny"), create("rcan", 2, "tiny")
    method = create_method("facd", student, teacher, {"gate": gate})
    lr, hr = smooth_batch(2, batch=3)
    with capture(student, method.student_taps) as s_feats:
        out = student(lr)
    with torch.no_grad(), capture(teacher, method.teacher_taps, detach=True) as t_feats:
        teacher(lr)
    ungated = method.contrastive_loss(StepInputs(lr, hr, out, hr, dict(s_feats), dict(t_feats)))
    perfect_teacher = hr.clone()  # beats the student on every sample
    useless_teacher = hr.clone()
    useless_teacher[1] = out[1].detach() + 0.5  # worse than the student on sample 1 only
    # hard gate: sample 1 is left out; soft gate: it keeps weight e_S / e_T = L1(S, y) / L1(T, y)
    e_student = (out[1].detach() - hr[1]).abs().mean()
    e_teacher = (useless_teacher[1] - hr[1]).abs().mean()
    weight = 0.0 if gate == "teacher_better" else float(e_student / e_teacher)
    assert 0 < float(e_student / e_teacher) < 1
    for teacher_out, expected in ((perfect_teacher, ungated.mean()),
                                  (useless_teacher, (ungated[[0, 2]].sum() + weight * ungated[1]) / 3)):
        terms = method.losses(StepInputs(lr, hr, out, teacher_out, dict(s_feats), dict(t_feats)))
        assert torch.allclose(terms["facd"], expected, rtol=1e-5)
    terms = method.losses(StepInputs(lr, hr, out, perfect_teacher, dict(s_feats), dict(t_feats)))
    assert torch.allclose(terms["kd"], (out - hr).abs().mean()) and torch.allclose(terms["rec"], terms["kd"])
    with pytest.raises(KdError, match="batch_size >= 2"):
        method.losses(StepInputs(lr[:1], hr[:1], out[:1], hr[:1], {k: v[:1] for k, v in s_feats.items()},
                                 {k: v[:1] for k, v in t_feats.items()}))


def test_facd_remaps_every_tap_and_checks_options():
    method = create_method("facd", create("asid", 2, "tiny"), create("swinir", 2, "tiny"))
    assert len(method.remap) == len(method.student_taps) and all(c.kernel_size == (1, 1) for c in method.remap.values())
    for bad in ({"form": "triplet"}, {"gate": "always"}, {"negatives": 0}, {"negative_source": "both"}):
        with pytest.raises(KdError, match="method.options"):
            create_method("facd", create("asid", 2, "tiny"), create("rcan", 2, "tiny"), bad)


# ------------------------------------------------------------------------------------------------ attention


def test_window_logits_are_recovered_from_softmax_maps():
    from kd.methods.attention import window_map_vectors

    torch.manual_seed(0)
    logits = torch.randn(6, 3, 64, 64) * 3
    recovered = window_map_vectors(logits.softmax(-1), "logits", 1e-30)
    expected = (logits - logits.mean(-1, keepdim=True)).mean(1).flatten(1)
    assert torch.allclose(recovered, expected, atol=1e-4)
    assert torch.allclose(window_map_vectors(logits.softmax(-1), "probs", 1e-8),
                          logits.softmax(-1).mean(1).flatten(1))


def test_asid_and_swinir_windows_are_the_same_pixels():
    from students.asid import _partition
    from teachers.swinir import window_partition

    x = torch.arange(2 * 16 * 24 * 3, dtype=torch.float32).view(2, 16, 24, 3)
    assert torch.equal(_partition(x, grid=False), window_partition(x, 8))


def test_channel_vector_matches_brute_force_and_is_shift_invariant():
    from kd.methods.attention import channel_vector

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4)
    got = channel_vector(logits)
    for b in range(2):
        for j in range(4):
            total = 0.0
            for g in range(3):
                for i in range(4):
                    row_mean = sum(logits[b, g, i, k].item() for k in range(4)) / 4
                    total += logits[b, g, i, j].item() - row_mean
            assert got[b, j].item() == pytest.approx(total / 12, abs=1e-6)
    # adding a constant to a row (which the softmax ignores) changes nothing
    assert torch.allclose(channel_vector(logits + torch.randn(2, 3, 4, 1)), got, atol=1e-6)


@pytest.mark.parametrize("teacher_arch,mode", [("rcan", "channel"), ("han", "channel"), ("swinir", "window")])
def test_attention_pairs_the_documented_maps(teacher_arch, mode):
    student, teacher = create("asid", 4, "paper"), create(teacher_arch, 4, "paper" if teacher_arch != "swinir" else "tiny")
    method = create_method("attention", student, teacher)
    assert method.mode == mode
    if mode == "channel":
        assert len(method.student_taps) == 6 and all(t.endswith("attn_logits") for t in method.student_taps)
        assert all(t.endswith("body.3.conv_du.2") for t in method.teacher_taps)
        assert method.teacher_taps[-1] == "body.9.body.19.body.3.conv_du.2"  # deepest RCAB pairs the deepest site
        assert all(a.weight.shape == (64, 48) for a in method.adapters.values())
    else:
        assert method.student_taps == ["shared_attn.a5"]  # the tiny SwinIR has one unshifted block
        assert method.teacher_taps == ["layers.0.residual_group.blocks.0.attn.attn_map"]
        assert len(method.adapters) == 0


def test_attention_window_mode_moves_block0_attention(tmp_path):
    trainer, lr, hr = make_trainer(tmp_path, "attention", teacher_arch="swinir")
    trainer.train_step(lr, hr)
    qkv = trainer.student.block0.residual_layer[0].SLA1.attn.to_qkv.weight
    assert qkv.grad is not None and qkv.grad.abs().sum() > 0


def test_attention_identical_maps_give_zero():
    from kd.methods.attention import cosine_distance, window_map_vectors

    maps = torch.rand(4, 1, 64, 64).softmax(-1)
    v = window_map_vectors(maps, "logits", 1e-8)
    assert cosine_distance(v, v).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_distance(v, -v).item() == pytest.approx(2.0, abs=1e-6)


# ------------------------------------------------------------------------------------------------ bad input


def test_unpairable_combinations_explain_what_works():
    asid = create("asid", 2, "tiny")
    rcan = create("rcan", 2, "tiny")
    with pytest.raises(KdError, match=r"student 'rcan' has no channel-attention tap.*works with students asid"):
        create_method("attention", rcan, create("han", 2, "tiny"))
    with pytest.raises(KdError, match=r"teacher 'Sequential' exposes no attention map.*works with"):
        create_method("attention", asid, torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1)))
    with pytest.raises(KdError, match=r"window maps do not align.*64x64"):
        create_method("attention", asid, create("swinir", 2, "tiny", window_size=4))
    with pytest.raises(KdError, match=r"teacher 'rcan' has no window-attention tap"):
        create_method("attention", asid, rcan, {"mode": "window"})
    for name in ("lsfd", "facd"):
        with pytest.raises(KdError, match=rf"method '{name}' cannot pair feature taps with teacher.*students asid"):
            create_method(name, asid, torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1)))
        with pytest.raises(KdError, match=rf"method '{name}': student 'asid' tap failed.*nonexistent"):
            create_method(name, asid, rcan, {"student_taps": ["nonexistent"], "teacher_taps": ["body.0"]})


# ------------------------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize("teacher_arch,method_name,module_prefix", [
    ("rcan", "lsfd", "regressors."),
    ("han", "facd", "remap."),
    ("swinir", "attention", None),  # window maps: nothing to train besides the student
])
def test_cli_smoke_run(tmp_path, monkeypatch, teacher_arch, method_name, module_prefix):
    import json

    from kd.cli import main
    from kd.engine.checkpoint import load_checkpoint

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    argv = ["run", "--student", "asid", "--teacher", teacher_arch, "--method", method_name, "--profile", "smoke",
            "--threads", "1", "--out-dir", str(tmp_path / "runs"), "--no-progress"]
    assert main(argv) == 0
    (run_dir,) = list((tmp_path / "runs").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == method_name and summary["steps"] == 6
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    values = [r["terms"][DISTILL_TERM[method_name]] for r in records if "terms" in r]
    assert len(values) == 6 and all(math.isfinite(v) for v in values)
    plain = create("asid", summary["scale"], "tiny")
    plain.load_state_dict(read_checkpoint(run_dir / "student.pt"))  # strict: a plain ASID
    method_state = load_checkpoint(run_dir / "checkpoints" / "last.pt")["method"]
    if module_prefix:
        assert method_state and all(k.startswith(module_prefix) for k in method_state)
    else:
        assert not method_state


def test_feature_statistics_are_those_of_the_global_batch_under_data_parallelism():
    """Two simulated ranks, each holding half the batch, standardise exactly as one process with the whole batch
    (MiPKD un-standardises its mixed features with the same `map_stats`)."""
    import threading

    from kd.methods.pairing import standardize

    feat = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0)) * 2 + 1
    halves, results, slots = (feat[:2], feat[2:]), [None, None], [None, None]
    barrier = threading.Barrier(2)

    def averager(rank):
        def average(tensors):
            for t in tensors:
                slots[rank] = t.clone()
                barrier.wait()
                t.copy_((slots[0] + slots[1]) / 2)
                barrier.wait()
        return average

    def rank_run(rank):
        results[rank] = standardize(halves[rank], averager(rank))

    threads = [threading.Thread(target=rank_run, args=(rank,)) for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert torch.allclose(torch.cat(results), standardize(feat), atol=1e-6)
    assert not torch.allclose(torch.cat([standardize(h) for h in halves]), standardize(feat), atol=1e-3)
