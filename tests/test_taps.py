"""Feature taps of every registered network: documented shapes, clean removal, helpful errors.

The expected shapes below are written from ARCHITECTURES.md (sections 2.8, 3.6, 4.6, 5.6 and 7), not read back
from the networks: for an LR batch (B, 3, h, w) with h, w multiples of 8 (no padding), feature taps are
(B, C, h, w), channel-attention vectors (B, C, 1, 1), window attention maps (B * windows, heads, ws^2, ws^2).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import torch
from torch import nn

from kd.errors import KdError
from kd.models import TapPoint, capture, create, list_entries, probe_inputs, resolve_taps

B, H, W = 2, 16, 24
ShapeRule = Callable[[dict], tuple[int, ...]]


def _asid_rules(spec: dict) -> list[tuple[str, ShapeRule]]:
    c, windows = spec["num_feat"], (H // 8) * (W // 8)
    return [
        (r"^(input|block\d+|output)$", lambda s: (B, c, H, W)),
        (r"^shared_attn\.a[1-6]$", lambda s: (B * windows, 1, 64, 64)),  # single head, fixed 8x8 windows
        (r"\.BlockC\.cttn1\.attn_logits$", lambda s: (B, windows, c, c)),  # C x C per 8x8 window
        (r"\.BlockC\.cttn2\.attn_logits$", lambda s: (B, 64, c, c)),  # C x C per grid position
    ]


def _rcan_rules(spec: dict) -> list[tuple[str, ShapeRule]]:
    c = spec["n_feats"]
    layers = spec["n_resgroups"] + 1
    return [
        (r"^(head\.0|body\.\d+|last_conv|csa|last)$", lambda s: (B, c, H, W)),
        (r"\.body\.3\.conv_du\.[23]$", lambda s: (B, c, 1, 1)),
        (r"^la$", lambda s: (B, layers * c, H, W)),  # the 11 stacked layer outputs (704 ch in the paper)
        (r"^la\.attention$", lambda s: (B, layers, layers)),
    ]


def _swinir_rules(spec: dict) -> list[tuple[str, ShapeRule]]:
    c, ws = spec["embed_dim"], spec["window_size"]
    windows = (H // ws) * (W // ws)

    def attention(name: str) -> tuple[int, ...]:
        layer = int(re.match(r"layers\.(\d+)\.", name).group(1))
        return (B * windows, spec["num_heads"][layer], ws * ws, ws * ws)

    return [
        (r"^(conv_first|layers\.\d+|conv_after_body)$", lambda name: (B, c, H, W)),
        (r"^layers\.\d+\.residual_group\.blocks\.\d+\.attn\.attn_map$", attention),
    ]


SHAPE_RULES = {"asid": _asid_rules, "asid_d8": _asid_rules, "rcan": _rcan_rules, "han": _rcan_rules,
               "swinir": _swinir_rules, "swinir_light": _swinir_rules}


def _networks() -> list[str]:
    return [e.arch for e in list_entries() if e.role != "baseline" and "tiny" in e.presets]


NETWORKS = _networks() or [pytest.param("none", marks=pytest.mark.skip("no network registered yet"))]


def _tiny(arch: str) -> nn.Module:
    torch.manual_seed(0)
    return create(arch, 4, preset="tiny").eval()


def _resolvable(model: nn.Module) -> list[str]:
    """Documented patterns present in this configuration (e.g. RCAN's two-digit `body.NN` needs 10+ groups)."""
    found = []
    for pattern in model.TAPS:
        try:
            resolve_taps(model, [pattern])
        except KdError:
            continue
        found.append(pattern)
    return found


def _no_hooks(model: nn.Module) -> bool:
    return not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("arch", NETWORKS)
def test_taps_documented_and_resolvable_in_paper_config(arch: str) -> None:
    with torch.device("meta"):
        model = create(arch, 4, preset="paper")
    taps = getattr(model, "TAPS", None)
    assert isinstance(taps, dict) and taps, f"{arch} documents no TAPS"
    assert all(isinstance(d, str) and d for d in taps.values())
    for pattern in taps:
        assert resolve_taps(model, [pattern]), pattern


@pytest.mark.parametrize("arch", NETWORKS)
def test_capture_returns_documented_shapes(arch: str) -> None:
    model = _tiny(arch)
    patterns = _resolvable(model)
    assert patterns, f"no documented tap of {arch} exists in its tiny preset"
    rules = SHAPE_RULES.get(arch)
    x = torch.rand(B, 3, H, W)
    with torch.no_grad(), capture(model, patterns) as feats:
        model(*probe_inputs(model, x))
    assert set(feats) == set(resolve_taps(model, patterns)), "every resolved tap must be captured"
    for name, value in feats.items():
        assert isinstance(value, torch.Tensor), name
        assert torch.isfinite(value).all(), name
        if rules is None:  # a network this test does not know yet: only the batch layout is checked
            assert value.shape[0] % B == 0, name
            continue
        matching = [rule for pattern, rule in rules(model.kd_spec) if re.search(pattern, name)]
        assert matching, f"tap '{name}' of {arch} has no documented shape in this test; add it to SHAPE_RULES"
        assert tuple(value.shape) == matching[0](name), f"{arch} tap {name}"


@pytest.mark.parametrize("arch", NETWORKS)
def test_taps_removed_after_context_and_output_unchanged(arch: str) -> None:
    model = _tiny(arch)
    x = torch.rand(B, 3, H, W)
    with torch.no_grad():
        plain = model(*probe_inputs(model, x))
        with capture(model, _resolvable(model)) as feats:
            assert not _no_hooks(model)
            hooked = resolve_taps(model, _resolvable(model))
            assert all(model.get_submodule(n).active for n in hooked if isinstance(model.get_submodule(n), TapPoint))
            tapped = model(*probe_inputs(model, x))
        assert _no_hooks(model)
        assert not any(m.active for m in model.modules() if isinstance(m, TapPoint))
        captured = dict(feats)
        model(*probe_inputs(model, torch.rand(B, 3, H, W)))
    # An attention-map tap may switch a fused kernel to the explicit computation: equal up to rounding.
    torch.testing.assert_close(tapped, plain, rtol=0, atol=1e-5, msg="listening to taps changed the output")
    assert feats.keys() == captured.keys() and all(feats[k] is captured[k] for k in feats)


@pytest.mark.parametrize("arch", NETWORKS)
def test_tap_points_active_only_while_hooked(arch: str) -> None:
    model = _tiny(arch)
    points = {name: m for name, m in model.named_modules() if isinstance(m, TapPoint)}
    if not points:
        pytest.skip(f"{arch} has no TapPoint children")
    name = next(iter(points))
    with capture(model, [name]):
        assert points[name].active
        assert not any(p.active for n, p in points.items() if n != name)
    assert not points[name].active


@pytest.mark.parametrize("arch", NETWORKS)
def test_unknown_tap_lists_documented_taps(arch: str) -> None:
    model = _tiny(arch)
    with pytest.raises(KdError) as info:
        with capture(model, ["no_such_module"]):
            pass
    message = str(info.value)
    assert "no_such_module" in message
    assert all(pattern in message for pattern in model.TAPS)
    assert _no_hooks(model)


def test_failed_capture_leaves_no_hooks_behind() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    with pytest.raises(KdError):
        with capture(model, ["0", "missing"]):
            pass
    assert _no_hooks(model)
    with pytest.raises(RuntimeError):
        with capture(model, ["0"]):
            raise RuntimeError("training step failed")
    assert _no_hooks(model)
