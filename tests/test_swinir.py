"""SwinIR (classical and lightweight): parity with the official outputs, official key layout, masks, taps."""

from __future__ import annotations

import json

import pytest
import torch

from kd.errors import KdError
from kd.models import capture, create
from kd.models.loading import load_official
from teachers.swinir import (
    ShiftMaskCache,
    describe_state_dict,
    official_checkpoint_info,
    relative_position_index,
    shifted_window_mask,
)

FIXTURES = ["swinir_e36d2x2_x2", "swinir_e36d2x2_x4", "swinir_light_x4"]
ATTN_TAPS = "layers.*.residual_group.blocks.*.attn.attn_map"

# ARCHITECTURES.md section 5.3 (counts of parameters(), RPB tables included, buffers excluded)
PARAMS = {
    ("swinir", 2): 11_752_487, ("swinir", 3): 11_937_127, ("swinir", 4): 11_900_199,
    ("swinir_light", 2): 910_152, ("swinir_light", 3): 918_267, ("swinir_light", 4): 929_628,
}


def _fixture(parity_dir, name: str) -> dict:
    return torch.load(parity_dir / f"{name}.pt", weights_only=True)


def _fixture_model(d: dict, **overrides) -> torch.nn.Module:
    model = create(**{**d["config"], **overrides})
    model.load_state_dict(d["state_dict"], strict=True)
    return model.eval()


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_parity_fused_and_explicit_attention(parity_dir, name):
    d = _fixture(parity_dir, name)
    model = _fixture_model(d)
    with torch.no_grad():
        fused = model(d["input"])
        with capture(model, [ATTN_TAPS]) as maps:  # attaching the tap switches to the explicit softmax path
            explicit = model(d["input"])
    assert fused.shape == d["output"].shape
    assert torch.allclose(fused, d["output"], rtol=0, atol=1e-4)
    assert torch.allclose(explicit, d["output"], rtol=0, atol=1e-4)
    assert len(maps) == sum(d["config"]["depths"])


def test_checkpoint_from_another_img_size_loads_and_reproduces(parity_dir):
    """Fixture trained 'at' img_size 48, model built for 64: masks are swapped, output is unchanged."""
    d = _fixture(parity_dir, "swinir_e36d2x2_x4")
    model = create(**{**d["config"], "img_size": 64})
    with pytest.raises(RuntimeError):
        model.load_state_dict(d["state_dict"], strict=True)
    adapted = model.adapt_official_state_dict(d["state_dict"])
    model.load_state_dict(adapted, strict=True)
    assert adapted is not d["state_dict"]
    assert d["state_dict"]["layers.0.residual_group.blocks.1.attn_mask"].shape == (36, 64, 64)  # input untouched
    with torch.no_grad():
        out = model.eval()(d["input"])
    assert torch.allclose(out, d["output"], rtol=0, atol=1e-4)


def test_load_official_with_params_packaging_and_scale_mismatch(parity_dir):
    d = _fixture(parity_dir, "swinir_light_x4")
    model = load_official(create("swinir_light", 4), {"params": d["state_dict"]})  # paper preset: SwinIR-S
    with torch.no_grad():
        assert torch.allclose(model.eval()(d["input"]), d["output"], rtol=0, atol=1e-4)
    with pytest.raises(KdError, match="x4.*48 output channels"):
        load_official(create("swinir_light", 2), {"params": d["state_dict"]})


def test_adapt_refuses_other_window_size(parity_dir):
    d = _fixture(parity_dir, "swinir_e36d2x2_x2")
    state = dict(d["state_dict"])
    key = "layers.0.residual_group.blocks.0.attn.relative_position_index"
    state[key] = relative_position_index(4)
    with pytest.raises(KdError, match="window"):
        create(**d["config"]).adapt_official_state_dict(state)


# ---- official layout -------------------------------------------------------------------------------------------


def _manifest(shared_dir) -> dict:
    return json.loads((shared_dir / "reference" / "parity" / "official_state_dict_shapes.json").read_text())


MANIFEST_MODELS = {
    "swinir_classical_s48": ("swinir", {"img_size": 48}),
    "swinir_classical_s64": ("swinir", {"img_size": 64}),
    "swinir_light": ("swinir_light", {}),
}


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("entry", list(MANIFEST_MODELS))
def test_full_size_state_dict_matches_official_manifest(shared_dir, entry, scale):
    arch, fields = MANIFEST_MODELS[entry]
    with torch.device("meta"):
        model = create(arch, scale, **fields)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert shapes == _manifest(shared_dir)[f"{entry}_x{scale}"]
    assert sum(p.numel() for p in model.parameters()) == PARAMS[(arch, scale)]


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("entry", list(MANIFEST_MODELS))
def test_describe_state_dict_reads_official_layout(shared_dir, entry, scale):
    sd = {k: torch.empty(s, device="meta") for k, s in _manifest(shared_dir)[f"{entry}_x{scale}"].items()}
    info = describe_state_dict({"params": sd})
    light = entry == "swinir_light"
    assert info["scale"] == scale
    assert info["img_size"] == (48 if entry.endswith("s48") else 64)
    assert info["window_size"] == 8
    assert info["embed_dim"] == (60 if light else 180)
    assert info["depths"] == ([6] * 4 if light else [6] * 6)
    assert info["num_heads"] == info["depths"]
    assert info["upsampler"] == ("pixelshuffledirect" if light else "pixelshuffle")
    assert f"x{scale}" in official_checkpoint_info(sd)


def test_checkpoint_mismatch_names_the_scale(parity_dir):
    d = _fixture(parity_dir, "swinir_light_x4")
    assert create(**d["config"]).checkpoint_mismatch(d["state_dict"]) is None
    message = create(**{**d["config"], "scale": 2}).checkpoint_mismatch(d["state_dict"])
    assert "checkpoint is x4" in message and "48 output channels" in message and "model is x2" in message


# ---- masks, positions, caching --------------------------------------------------------------------------------


def _brute_force_mask(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    """The official construction: label nine slice regions, partition, compare labels pairwise."""
    labels = torch.zeros(h, w)
    count = 0
    for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            labels[hs, ws] = count
            count += 1
    masks = []
    for top in range(0, h, window):
        for left in range(0, w, window):
            lab = labels[top:top + window, left:left + window].flatten()
            masks.append(torch.where(lab[None, :] != lab[:, None], -100.0, 0.0))
    return torch.stack(masks)


@pytest.mark.parametrize("h, w", [(8, 8), (16, 24), (48, 48), (24, 40)])
def test_shifted_window_mask_matches_brute_force(h, w):
    assert torch.equal(shifted_window_mask(h, w, 8, 4), _brute_force_mask(h, w, 8, 4))


def test_relative_position_index_matches_brute_force():
    window = 5
    cells = [(r, c) for r in range(window) for c in range(window)]
    expected = torch.tensor(
        [[(ri - rj + window - 1) * (2 * window - 1) + (ci - cj + window - 1) for rj, cj in cells] for ri, ci in cells]
    )
    assert torch.equal(relative_position_index(window), expected)


def test_runtime_masks_equal_training_size_buffers():
    """A model trained at 16 and one built for 24 (masks adapted) agree on 16x16 and 24x24 inputs."""
    torch.manual_seed(0)
    at16 = create("swinir", 2, preset="tiny", img_size=16).eval()
    at24 = create("swinir", 2, preset="tiny", img_size=24)
    at24.load_state_dict(at24.adapt_official_state_dict(at16.state_dict()), strict=True)
    at24.eval()
    with torch.no_grad():
        for size in (16, 24):
            x = torch.rand(2, 3, size, size)
            assert torch.allclose(at16(x), at24(x), rtol=0, atol=1e-6)


def test_mask_cache_reuses_and_is_bounded():
    cache = ShiftMaskCache(max_entries=2)
    like = torch.zeros(1)
    first = cache.get(16, 24, 8, 4, like)
    assert cache.get(16, 24, 8, 4, like) is first
    cache.get(32, 32, 8, 4, like)
    cache.get(40, 40, 8, 4, like)
    assert cache.get(16, 24, 8, 4, like) is not first  # evicted, rebuilt


def test_model_caches_masks_per_input_size():
    model = create("swinir", 2, preset="tiny").eval()
    with torch.no_grad():
        model(torch.rand(1, 3, 20, 28))
        masks = dict(model.mask_cache._masks)
        model(torch.rand(1, 3, 20, 28))
    assert len(masks) == 1
    assert all(model.mask_cache._masks[k] is v for k, v in masks.items())


# ---- taps ------------------------------------------------------------------------------------------------------


def test_taps_shapes_and_attention_maps():
    torch.manual_seed(0)
    model = create("swinir", 3, preset="tiny", depths=[2, 2], num_heads=[2, 2]).eval()
    x = torch.rand(2, 3, 20, 28)  # padded to 24 x 32 -> 3 x 4 windows of 8 x 8
    with torch.no_grad(), capture(model, ["layers.?", "conv_after_body", ATTN_TAPS]) as feats:
        out = model(x)
    assert out.shape == (2, 3, 60, 84)
    for i in range(2):
        assert feats[f"layers.{i}"].shape == (2, 8, 24, 32)
    assert feats["conv_after_body"].shape == (2, 8, 24, 32)
    plain = feats["layers.0.residual_group.blocks.0.attn.attn_map"]
    shifted = feats["layers.0.residual_group.blocks.1.attn.attn_map"]
    assert plain.shape == shifted.shape == (2 * 12, 2, 64, 64)
    assert torch.allclose(shifted.sum(-1), torch.ones(()), atol=1e-5)
    # cross-region pairs of the shifted windows get (almost) no attention; the same for both images of the batch
    cross = shifted_window_mask(24, 32, 8, 4) < 0
    assert shifted.view(2, 12, 2, 64, 64).permute(0, 2, 1, 3, 4)[..., cross].max() < 1e-30
    assert (plain > 1e-30).all()


def test_layer_tap_equals_tokens_as_map():
    """The (B, C, h, w) map delivered for `layers.0` is the RSTB's token output read in row-major order."""
    torch.manual_seed(1)
    model = create("swinir_light", 4, preset="tiny").eval()
    x = torch.rand(1, 3, 16, 24)
    tokens = {}
    handle = model.layers[0].register_forward_hook(lambda m, i, o: tokens.setdefault("t", o))
    with torch.no_grad(), capture(model, ["layers.0"]) as feats:
        model(x)
    handle.remove()
    t = tokens["t"]
    assert torch.equal(feats["layers.0"][0, :, 1, 2], t[0, 1 * 24 + 2])


def test_attention_tap_inactive_by_default():
    model = create("swinir", 2, preset="tiny")
    assert not any(m.attn_map.active for m in model.modules() if hasattr(m, "attn_map"))
    assert set(model.TAPS) >= {"layers.?", "conv_after_body", ATTN_TAPS}


# ---- input checks, training, presets ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 16, 16), (1, 1, 16, 16), (1, 4, 16, 16), (1, 3, 3, 16)])
def test_bad_input_raises_kderror(shape):
    model = create("swinir", 2, preset="tiny")
    with pytest.raises(KdError, match="SwinIR"):
        model(torch.rand(*shape))


def test_backward_reaches_every_parameter():
    torch.manual_seed(0)
    model = create("swinir", 2, preset="tiny", depths=[2, 2], num_heads=[2, 2]).train()
    out = model(torch.rand(2, 3, 12, 20))
    (out - torch.rand_like(out)).abs().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_three_conv_residual_connection():
    model = create("swinir", 4, preset="tiny", resi_connection="3conv", embed_dim=16, num_heads=[2]).eval()
    keys = model.state_dict().keys()
    assert "layers.0.conv.4.weight" in keys and "conv_after_body.2.weight" in keys
    assert describe_state_dict(model.state_dict())["resi_connection"] == "3conv"
    with torch.no_grad():
        assert model(torch.rand(1, 3, 10, 10)).shape == (1, 3, 40, 40)


@pytest.mark.parametrize("arch", ["swinir", "swinir_light"])
@pytest.mark.parametrize("preset", ["paper", "mini", "tiny"])
def test_presets_build(arch, preset):
    with torch.device("meta"):
        model = create(arch, 4, preset=preset)
    count = sum(p.numel() for p in model.parameters())
    if preset == "tiny":
        assert 1_000 <= count <= 10_000
    info = describe_state_dict(model.state_dict())
    assert info["scale"] == 4 and info["embed_dim"] == model.config.embed_dim


def test_invalid_config_raises_kderror():
    with pytest.raises(KdError, match="upsampler"):
        create("swinir", 2, preset="tiny", upsampler="nearest")
    with pytest.raises(KdError, match="divisible"):
        create("swinir", 2, preset="tiny", embed_dim=10, num_heads=[3])
    with pytest.raises(KdError, match="img_size"):
        create("swinir", 2, preset="tiny", img_size=4)
