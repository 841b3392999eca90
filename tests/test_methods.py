from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from kd.errors import KdError
from kd.methods import StepInputs, create_method, get_method, list_methods, loss_weights
from kd.methods.pairing import body_stages, depth_positions, pair_by_depth
from kd.models import capture


class Stack(nn.Module):
    """A toy SR network with `stages` numbered body modules of `width` channels."""

    def __init__(self, stages: int, width: int, scale: int = 2) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, width, 3, padding=1)
        self.body = nn.Sequential(*[nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
                                    for _ in range(stages)])
        self.tail = nn.Sequential(nn.Conv2d(width, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x):
        return self.tail(self.body(self.head(x)))


def test_registry_lists_methods_and_suggests():
    names = [name for name, _ in list_methods()]
    assert {"none", "logits", "fitnet"} <= set(names)
    with pytest.raises(KdError, match="Did you mean 'fitnet'"):
        get_method("fitnt")
    assert not get_method("none").needs_teacher and get_method("logits").needs_teacher


def test_loss_weights_and_options_are_checked():
    assert loss_weights("logits", {"kd": 0.5}) == {"rec": 1.0, "kd": 0.5}
    with pytest.raises(KdError, match="no loss term 'fd'.*rec, kd"):
        loss_weights("logits", {"fd": 1.0})
    with pytest.raises(KdError, match="method.options.distanse"):
        create_method("fitnet", Stack(3, 4), Stack(3, 6), {"distanse": "l1"})
    with pytest.raises(KdError, match="needs a teacher"):
        create_method("logits", Stack(3, 4), None)


def test_depth_pairing_matches_reference_suggestion():
    # ARCHITECTURES.md section 7: full RCAN (10 groups + body tail = 11 stages) pairs body.2/6/10 and
    # SwinIR-M (6 layers) layers.1/3/5 with ASID's three blocks.
    assert depth_positions(11, 3) == [2, 6, 10]
    assert depth_positions(6, 3) == [1, 3, 5]
    assert depth_positions(3, 3) == [0, 1, 2]
    student, teacher = Stack(3, 4), Stack(5, 6)
    assert body_stages(teacher) == [f"body.{i}" for i in range(4)]  # body.4, the last stage, is the tail
    assert pair_by_depth(student, teacher, 3) == (["body.0", "body.1", "body.2"], ["body.0", "body.2", "body.4"])


def test_pairing_on_registered_networks():
    from kd.models import create

    asid, rcan = create("asid", 4, "paper"), create("rcan", 4, "paper")
    assert body_stages(asid) == ["block0", "block1", "block2"]
    # ARCHITECTURES.md section 7 for RCAN; the body tail (body.10) meets ASID's body output, its analogue
    assert pair_by_depth(asid, rcan, 3) == (["block0", "block1", "output"], ["body.2", "body.6", "body.10"])
    swinir, han = create("swinir", 4, "paper"), create("han", 4, "mini")
    assert pair_by_depth(asid, swinir, 3)[1] == ["layers.1", "layers.3", "conv_after_body"]
    assert pair_by_depth(asid, han, 3)[1][-1] == "last"
    tiny = create("asid", 4, "tiny")  # 2 blocks: the sequence block0, block1, output still gives 3 pairs
    assert pair_by_depth(tiny, rcan, 3)[0] == ["block0", "block1", "output"]


def test_logits_terms_match_their_definition():
    torch.manual_seed(0)
    method = create_method("logits", Stack(1, 4), Stack(1, 4))
    s, t, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    terms = method.losses(StepInputs(torch.rand(2, 3, 4, 4), y, s, t))
    assert torch.allclose(terms["rec"], (s - y).abs().mean())
    assert torch.allclose(terms["kd"], (s - t).abs().mean())


def _fitnet_terms(method, student, teacher, lr, hr):
    with capture(student, method.student_taps) as s_feats:
        out = student(lr)
    with torch.no_grad(), capture(teacher, method.teacher_taps) as t_feats:
        t_out = teacher(lr)
    return method.losses(StepInputs(lr, hr, out, t_out, dict(s_feats), dict(t_feats))), s_feats, t_feats


def test_fitnet_adapters_gradients_and_state():
    torch.manual_seed(0)
    student, teacher = Stack(3, 4), Stack(6, 6)
    method = create_method("fitnet", student, teacher, {"normalize": False, "distance": "l1"})
    assert method.teacher_taps == ["body.1", "body.3", "body.5"]
    assert all(a.weight.shape == (6, 4, 1, 1) for a in method.adapters.values())
    # the method's state is its adapters only: never the student's or the teacher's weights
    assert set(method.state_dict()) == {f"adapters.body_{i}.{p}" for i in range(3) for p in ("weight", "bias")}

    lr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)
    terms, s_feats, t_feats = _fitnet_terms(method, student, teacher, lr, hr)
    expected = torch.stack([
        F.l1_loss(method.adapters[s.replace(".", "_")](s_feats[s]), t_feats[t])
        for s, t in zip(method.student_taps, method.teacher_taps)
    ]).mean()
    assert torch.allclose(terms["fd"], expected)
    terms["fd"].backward()
    assert student.body[0][0].weight.grad.abs().sum() > 0
    assert all(a.weight.grad.abs().sum() > 0 for a in method.adapters.values())
    assert teacher.body[0][0].weight.grad is None


def test_fitnet_adapters_are_learned_even_when_channel_counts_match():
    # two networks' channel c never correspond: no identity shortcut at equal widths
    method = create_method("fitnet", Stack(3, 5), Stack(3, 5))
    assert all(isinstance(a, nn.Conv2d) and a.weight.shape == (5, 5, 1, 1) for a in method.adapters.values())


def test_fitnet_normalisation_uses_each_sides_own_statistics():
    torch.manual_seed(0)
    method = create_method("fitnet", Stack(1, 4), Stack(1, 4), {"count": 1})
    teacher_feat = torch.randn(2, 4, 5, 5) * 25 + 50  # RCAN-like units
    student_feat = (torch.randn(2, 4, 5, 5) * 0.15).requires_grad_(True)  # ASID-like units
    distance = method.feature_distance(student_feat, teacher_feat)
    # unit-free on both sides: the student is not asked to reach the teacher's magnitude ...
    assert torch.allclose(method.feature_distance(student_feat * 40, teacher_feat / 255), distance, rtol=1e-5)
    # ... so the gradient along the student's own scale is zero (its statistics are not detached)
    distance.backward()
    assert abs(float((student_feat.grad * student_feat.detach()).sum())) < 1e-5
    # a student equal to the teacher up to a per-channel offset and a positive scale matches it exactly
    shifted = teacher_feat * 0.01 + torch.arange(4.0).view(1, 4, 1, 1)
    assert method.feature_distance(shifted, teacher_feat).item() == pytest.approx(0.0, abs=1e-5)


def test_cli_lists_methods(capsys):
    from kd.cli import main

    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    for name, _ in list_methods():
        assert name in out
