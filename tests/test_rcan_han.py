"""RCAN and HAN teachers: official parity, official key layout, taps, checkpoint description, input checks."""

from __future__ import annotations

import json

import pytest
import torch

from kd.errors import KdError
from kd.models import capture, create, resolve_taps
from kd.models.loading import load_official
from teachers.han import LayerAttention
from teachers.rcan import describe_state_dict, official_checkpoint_info

FIXTURES = ["rcan_g2b3f32_x3.pt", "rcan_g2b3f32_x4.pt", "han_g10b1f16_x4.pt"]

# ARCHITECTURES.md sections 3.3 and 4.3 (counted from the official code).
PAPER_PARAMS = {
    ("rcan", 2): 15_444_667, ("rcan", 3): 15_629_307, ("rcan", 4): 15_592_379,
    ("han", 2): 15_924_057, ("han", 3): 16_108_697, ("han", 4): 16_071_769,
}
DIV2K_MEAN_255 = torch.tensor([114.444, 111.4605, 103.02])  # ARCHITECTURES.md 3.2


@pytest.mark.parametrize("name", FIXTURES)
def test_describe_fixture_state_dict(parity_dir, name):
    d = torch.load(parity_dir / name, weights_only=True)
    facts = describe_state_dict(d["state_dict"])
    for key, value in d["config"].items():
        assert facts[key] == value, key
    assert create(**d["config"]).checkpoint_mismatch(d["state_dict"]) is None
    # The official MeanShift constants survive in the fixtures unperturbed; a fresh model must hold the same ones.
    fresh = create(**d["config"]).state_dict()
    for key in ("sub_mean.weight", "sub_mean.bias", "add_mean.weight", "add_mean.bias"):
        assert torch.allclose(fresh[key], d["state_dict"][key], atol=1e-4), key
    assert torch.allclose(fresh["sub_mean.bias"], -DIV2K_MEAN_255, atol=1e-3)


@pytest.mark.parametrize("arch", ["rcan", "han"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_paper_config_matches_official_manifest(parity_dir, arch, scale):
    manifest = json.loads((parity_dir / "official_state_dict_shapes.json").read_text())[f"{arch}_x{scale}"]
    with torch.device("meta"):
        model = create(arch, scale)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(shapes) == list(manifest)  # same keys, in the official registration order
    assert shapes == manifest
    assert sum(p.numel() for p in model.parameters()) == PAPER_PARAMS[arch, scale]
    assert describe_state_dict(model.state_dict())["scale"] == scale


def test_meanshift_trainability_follows_official_code():
    # ARCHITECTURES.md: RCAN's MeanShift is not frozen (all 15,592,379 trainable), HAN's is (16,071,745 trainable).
    with torch.device("meta"):
        rcan, han = create("rcan", 4), create("han", 4)
    assert sum(p.numel() for p in rcan.parameters() if p.requires_grad) == 15_592_379
    assert sum(p.numel() for p in han.parameters() if p.requires_grad) == 16_071_745


def test_presets_build_and_tiny_is_small():
    for arch in ("rcan", "han"):
        tiny = create(arch, 4, preset="tiny")
        assert 1_000 < sum(p.numel() for p in tiny.parameters()) < 20_000
        mini = create(arch, 2, preset="mini")
        y = mini(torch.rand(1, 3, 6, 5))
        assert y.shape == (1, 3, 12, 10)


@pytest.mark.parametrize("arch", ["rcan", "han"])
def test_taps_shapes_and_channel_attention_logits(arch):
    torch.manual_seed(0)
    model = create(arch, 3, preset="tiny", n_resgroups=2, n_resblocks=2, n_feats=8, reduction=4).eval()
    x = torch.rand(2, 3, 7, 9)
    ca = "body.1.body.0.body.3.conv_du"
    patterns = ["head.0", "body.[0-9]", f"{ca}.2", f"{ca}.3"]
    with torch.no_grad(), capture(model, patterns) as feats:
        model(x)
    assert model.feature_taps() == ["body.0", "body.1", "body.2"]
    for name in model.feature_taps():
        assert feats[name].shape == (2, 8, 7, 9)
    assert feats[f"{ca}.2"].shape == (2, 8, 1, 1)
    # conv_du.2 is the pre-sigmoid logit: its sigmoid is exactly the attention the block applies.
    assert torch.allclose(torch.sigmoid(feats[f"{ca}.2"]), feats[f"{ca}.3"])
    assert not torch.allclose(feats[f"{ca}.2"], feats[f"{ca}.3"])


def test_documented_tap_patterns_resolve_on_the_paper_config():
    for arch in ("rcan", "han"):
        with torch.device("meta"):
            model = create(arch, 4)
        for pattern in model.TAPS:
            assert resolve_taps(model, [pattern])
        assert resolve_taps(model, ["body.[0-9]", "body.[0-9][0-9]"]) == [f"body.{g}" for g in range(11)]
        assert len(resolve_taps(model, ["body.*.body.*.body.3.conv_du.2"])) == 200


def test_han_attention_taps():
    torch.manual_seed(0)
    model = create("han", 2, preset="tiny", n_resgroups=3, n_feats=8, reduction=4).eval()
    with torch.no_grad():
        model.la.gamma.fill_(0.5)
        model.csa.gamma.fill_(0.5)
    x = torch.rand(2, 3, 6, 5)
    with torch.no_grad(), capture(model, ["la", "la.attention", "last_conv", "csa", "last"]) as feats:
        model(x)
    assert feats["la"].shape == (2, 4 * 8, 6, 5)  # n_resgroups + 1 layers
    assert feats["la.attention"].shape == (2, 4, 4)
    assert torch.allclose(feats["la.attention"].sum(-1), torch.ones(2, 4))
    for name in ("last_conv", "csa", "last"):
        assert feats[name].shape == (2, 8, 6, 5)


def test_layer_attention_against_brute_force():
    torch.manual_seed(1)
    lam = LayerAttention()
    with torch.no_grad():
        lam.gamma.fill_(0.7)
    layers = torch.randn(2, 4, 3, 5, 6, dtype=torch.float64)
    lam = lam.double()
    out = lam(layers)
    expected = torch.empty(2, 4 * 3, 5, 6, dtype=torch.float64)
    for b in range(2):
        vecs = [layers[b, i].flatten() for i in range(4)]
        for i in range(4):
            energy = torch.stack([torch.dot(vecs[i], vecs[j]) for j in range(4)])
            weights = torch.softmax(energy.max() - energy, dim=0)
            attended = sum(weights[j] * layers[b, j] for j in range(4))
            expected[b, 3 * i:3 * (i + 1)] = 0.7 * attended + layers[b, i]
    assert torch.allclose(out, expected, atol=1e-10)


def test_han_general_group_count_and_gradients_reach_attention():
    model = create("han", 4, preset="tiny", n_resgroups=3)
    assert model.last_conv.in_channels == 4 * model.n_feats
    y = model(torch.rand(2, 3, 5, 4))
    assert y.shape == (2, 3, 20, 16)
    y.square().mean().backward()
    assert model.la.gamma.grad.abs().item() > 0
    assert model.csa.gamma.grad.abs().item() > 0
    assert model.sub_mean.weight.grad is None  # frozen, as in the official HAN


def test_wrong_scale_checkpoint_is_explained():
    x2 = create("rcan", 2, preset="tiny").state_dict()
    model = create("rcan", 4, preset="tiny")
    message = model.checkpoint_mismatch(x2)
    assert "checkpoint is x2" in message and "model is x4" in message
    with pytest.raises(KdError, match="x2"):
        load_official(model, x2)
    han_x3 = create("han", 3, preset="tiny").state_dict()
    assert "HAN" in official_checkpoint_info(han_x3) and "x3" in official_checkpoint_info(han_x3)
    assert "checkpoint is HAN" in model.checkpoint_mismatch(han_x3)
    with pytest.raises(KdError, match="not an RCAN/HAN state dict"):
        describe_state_dict({"conv_first.weight": torch.zeros(1)})


@pytest.mark.parametrize("arch", ["rcan", "han"])
@pytest.mark.parametrize("bad", [torch.rand(3, 8, 8), torch.rand(1, 1, 8, 8), torch.zeros(1, 3, 8, 8, dtype=torch.uint8)])
def test_bad_input_raises_kderror(arch, bad):
    model = create(arch, 2, preset="tiny")
    with pytest.raises(KdError, match=type(model).__name__):
        model(bad)


def test_bad_fields_raise_kderror():
    with pytest.raises(KdError, match="reduction"):
        create("rcan", 4, preset="tiny", n_feats=8, reduction=16)
    with pytest.raises(KdError, match="n_resgroups"):
        create("han", 4, preset="tiny", n_resgroups=0)
    with pytest.raises(KdError, match="x5"):
        create("rcan", 5, preset="tiny")
