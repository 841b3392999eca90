"""ASID / ASIDd8 student: parity with the official implementation, official key layout, taps, input checks."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from kd.errors import KdError
from kd.models import capture, create
from students.asid import ASID, describe_state_dict, official_checkpoint_info, relative_position_index

# ARCHITECTURES.md, section 2.4 (counts of the official code).
PAPER_PARAMS = {
    ("asid", 2): 297_516,
    ("asid", 3): 304_011,
    ("asid", 4): 313_104,
    ("asid_d8", 2): 732_146,
    ("asid_d8", 3): 738_641,
    ("asid_d8", 4): 747_734,
}


def _load_fixture(parity_dir, name):
    path = parity_dir / f"{name}.pt"
    if not path.exists():
        pytest.skip(f"fixture {path} missing")
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("arch,scale", sorted(PAPER_PARAMS))
def test_full_size_matches_official_manifest(parity_dir, arch, scale):
    manifest = json.loads((parity_dir / "official_state_dict_shapes.json").read_text())[f"{arch}_x{scale}"]
    with torch.device("meta"):
        model = create(arch, scale)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert shapes == manifest
    assert sum(p.numel() for p in model.parameters()) == PAPER_PARAMS[(arch, scale)]


def test_relative_position_index_matches_brute_force():
    window = 8
    index = relative_position_index(window)
    coords = [(r, c) for r in range(window) for c in range(window)]
    for i, (ri, ci) in enumerate(coords):
        for j, (rj, cj) in enumerate(coords):
            assert index[i, j] == (ri - rj + window - 1) * (2 * window - 1) + (ci - cj + window - 1)
    assert index.min() == 0 and index.max() == (2 * window - 1) ** 2 - 1


def test_later_blocks_share_block0_attention():
    model = create("asid", 2, preset="tiny")
    later = dict(model.block1.named_parameters())
    assert not any("to_qkv" in k or "rel_pos_bias" in k for k in later)
    assert any(k.endswith("SLA1.attn.to_v.weight") for k in later)
    # Changing block0's position bias must change what block1 computes (it consumes block0's maps).
    x = torch.rand(1, 3, 16, 16)
    with capture(model, ["block1"]) as before:
        model(x)
    with torch.no_grad():
        model.block0.residual_layer[0].SLA1.attn.rel_pos_bias.weight.add_(1.0 + torch.arange(225.0)[:, None])
    with capture(model, ["block1"]) as after:
        model(x)
    assert not torch.allclose(before["block1"], after["block1"])


def test_taps_shapes_and_semantics():
    torch.manual_seed(0)
    model = create("asid", 3, preset="tiny").eval()
    c = model.num_feat
    x = torch.rand(2, 3, 20, 28)  # padded to 24 x 32: 3 x 4 windows
    patterns = list(ASID.TAPS)
    with torch.no_grad(), capture(model, patterns) as feats:
        y = model(x)
    assert y.shape == (2, 3, 60, 84)
    for name in ("input", "block0", "block1", "output"):
        assert feats[name].shape == (2, c, 24, 32), name
    for k in range(1, 7):
        a = feats[f"shared_attn.a{k}"]
        assert a.shape == (2 * 3 * 4, 1, 64, 64)
        assert torch.allclose(a.sum(-1), torch.ones(()), atol=1e-5)  # post-softmax rows
    for blk in ("block0.residual_layer.0", "block1.residual_layer"):
        assert feats[f"{blk}.BlockC.cttn1.attn_logits"].shape == (2, 12, c, c)
        assert feats[f"{blk}.BlockC.cttn2.attn_logits"].shape == (2, 64, c, c)
    # Nothing is listening after the context: taps are inactive again.
    assert not model.shared_attn["a1"].active
    assert not model.block0.residual_layer[0].BlockC.cttn1.attn_logits.active


@pytest.mark.parametrize("grid", [False, True])
def test_channel_attention_logits_match_brute_force(grid):
    torch.manual_seed(1)
    model = create("asid", 2, preset="tiny").eval()
    cttn_name = "cttn2" if grid else "cttn1"
    block_c = model.block0.residual_layer[0].BlockC
    cttn = getattr(block_c, cttn_name)
    with torch.no_grad():
        cttn.temperature.fill_(1.7)
    norm_name = "block0.residual_layer.0.BlockC." + ("canorm2" if grid else "canorm1")
    tap_name = f"block0.residual_layer.0.BlockC.{cttn_name}.attn_logits"
    with torch.no_grad(), capture(model, [norm_name, tap_name]) as feats:
        model(torch.rand(1, 3, 16, 24))
    q, k, _ = cttn.qkv_dwconv(cttn.qkv(feats[norm_name])).detach().chunk(3, dim=1)
    logits = feats[tap_name]
    _, c, h, w = q.shape
    groups = []
    for r0 in range(8):
        for c0 in range(8):
            if grid:  # pixels at the same offset (r0, c0) inside every 8x8 window
                groups.append((slice(r0, h, 8), slice(c0, w, 8)))
    if not grid:
        groups = [(slice(r, r + 8), slice(s, s + 8)) for r in range(0, h, 8) for s in range(0, w, 8)]
    assert logits.shape == (1, len(groups), c, c)
    for g, (rows, cols) in enumerate(groups):
        qg = F.normalize(q[0, :, rows, cols].reshape(c, -1), dim=-1)
        kg = F.normalize(k[0, :, rows, cols].reshape(c, -1), dim=-1)
        assert torch.allclose(logits[0, g], 1.7 * qg @ kg.T, atol=1e-5)


def test_bad_input_raises_kd_error():
    model = create("asid", 2, preset="tiny")
    with pytest.raises(KdError, match=r"\(B, 3, h, w\)"):
        model(torch.rand(3, 16, 16))
    with pytest.raises(KdError, match="got shape"):
        model(torch.rand(1, 1, 16, 16))
    with pytest.raises(KdError, match="at least 9x9"):
        model(torch.rand(1, 3, 8, 20))
    assert model(torch.rand(1, 3, 9, 9)).shape == (1, 3, 18, 18)


def test_bad_config_raises_kd_error():
    with pytest.raises(KdError, match="multiple of 4"):
        create("asid", 2, num_feat=30)


def test_tiny_trains_and_is_deterministic_in_eval():
    torch.manual_seed(0)
    model = create("asid_d8", 4, preset="tiny")
    x = torch.rand(2, 3, 16, 16)
    out = model(x)
    assert out.shape == (2, 3, 64, 64) and out.is_contiguous()
    out.abs().mean().backward()
    bias_grad = model.block0.residual_layer[0].SLA1.attn.rel_pos_bias.weight.grad
    assert bias_grad is not None and bias_grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_alias_and_presets():
    assert create("asidd8", 2, preset="tiny").num_blocks == 2
    assert create("asid", 2, preset="mini").kd_spec["num_feat"] == 48


def test_describe_state_dict(parity_dir):
    d = _load_fixture(parity_dir, "asid_x2")
    info = describe_state_dict(d["state_dict"])
    assert info["scale"] == 2 and info["blocks"] == 3 and info["num_feat"] == 48 and info["arch"] == "asid"
    with torch.device("meta"):
        x4 = create("asid", 4)
        d8 = create("asid_d8", 3)
    assert describe_state_dict(d8.state_dict())["arch"] == "asid_d8"
    assert describe_state_dict(d8.state_dict())["scale"] == 3
    text = official_checkpoint_info(d["state_dict"], x4)
    assert "x2" in text and "12 output channels" in text and "scale 4" in text
    assert "model has" not in official_checkpoint_info(x4.state_dict(), x4)
    with pytest.raises(KdError, match="up.0.weight"):
        describe_state_dict({"input.weight": torch.zeros(48, 3, 3, 3)})


def test_conv1x1_equals_convolution_in_value_and_gradient():
    from students.asid import Conv1x1

    torch.manual_seed(2)
    conv = Conv1x1(12, 20)
    x = torch.randn(2, 12, 9, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    grad = torch.randn(2, 20, 9, 7)
    conv(x).backward(grad)
    F.conv2d(x_ref, conv.weight.detach(), conv.bias.detach()).backward(grad)
    assert torch.allclose(conv(x), F.conv2d(x, conv.weight, conv.bias), atol=1e-5)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-5)
    w_ref = conv.weight.detach().clone().requires_grad_()
    F.conv2d(x.detach(), w_ref).backward(grad)
    assert torch.allclose(conv.weight.grad, w_ref.grad, atol=1e-4)
