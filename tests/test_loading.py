"""Official checkpoint loading: packagings, prefix stripping, safe unpickling and mismatch explanations."""

from __future__ import annotations

import itertools
import math
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from kd.errors import KdError
from kd.models import create, identify_architecture, list_entries, load_official, read_checkpoint
from kd.models.loading import _DISPLAY_NAMES, describe_hook


class ToySR(nn.Module):
    """Smallest network with an official-style upsampler: conv -> conv(3*s^2) -> PixelShuffle."""

    def __init__(self, scale: int = 4, feats: int = 4):
        super().__init__()
        self.conv_first = nn.Conv2d(3, feats, 3, padding=1)
        self.up = nn.Sequential(nn.Conv2d(feats, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x):
        return self.up(self.conv_first(x))


def describe_state_dict(state_dict):
    """Hook found by `load_official` through this module (ToySR's module), as a network file would define it."""
    out_channels = state_dict["up.0.weight"].shape[0]
    return {"scale": math.isqrt(out_channels // 3), "evidence": f"upsampler has {out_channels} output channels"}


class ToyWithMask(ToySR):
    """A network whose checkpoints carry a training-size-dependent buffer that it rebuilds on load."""

    def __init__(self, mask_size: int = 4):
        super().__init__(scale=2)
        self.register_buffer("attn_mask", torch.zeros(mask_size))

    def adapt_official_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        state_dict["attn_mask"] = self.attn_mask.clone()
        return state_dict


def _random_toy(scale: int = 4) -> ToySR:
    torch.manual_seed(scale)
    model = ToySR(scale)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return model


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize(
    "packaging",
    ["raw", "params", "params_ema", "state_dict", "module_prefix", "params_module_prefix"],
)
def test_round_trip_each_packaging(tmp_path: Path, packaging: str) -> None:
    source = _random_toy()
    sd = source.state_dict()
    prefixed = {f"module.{k}": v for k, v in sd.items()}
    obj = {
        "raw": sd,
        "params": {"params": sd},
        "params_ema": {"params_ema": sd},
        "state_dict": {"state_dict": sd, "epoch": 3},
        "module_prefix": prefixed,
        "params_module_prefix": {"params": prefixed},
    }[packaging]
    path = tmp_path / "model.pth"
    torch.save(obj, path)
    target = ToySR(4)
    assert load_official(target, path) is target
    _assert_same_weights(source, target)
    x = torch.rand(1, 3, 5, 6)
    assert torch.equal(source(x), target(x))


def test_state_dict_given_directly_is_unwrapped_too() -> None:
    source = _random_toy()
    target = load_official(ToySR(4), {"params": source.state_dict()})
    _assert_same_weights(source, target)


def test_ema_weights_preferred_and_param_key_overrides(tmp_path: Path) -> None:
    ema, raw = _random_toy(4), ToySR(4)
    path = tmp_path / "both.pth"
    torch.save({"params": raw.state_dict(), "params_ema": ema.state_dict()}, path)
    _assert_same_weights(ema, load_official(ToySR(4), path))
    _assert_same_weights(raw, load_official(ToySR(4), path, param_key="params"))
    with pytest.raises(KdError, match="no entry 'weights'"):
        load_official(ToySR(4), path, param_key="weights")


def test_wrong_scale_is_explained_by_the_network_hook() -> None:
    x2 = _random_toy(2).state_dict()
    with pytest.raises(KdError) as info:
        load_official(ToySR(4), x2)
    message = str(info.value)
    assert "checkpoint is x2: upsampler has 12 output channels; model is x4" in message
    assert "wrong shape (2)" in message and "up.0.weight checkpoint [12, 4, 3, 3] vs model [48, 4, 3, 3]" in message


def test_mismatch_lists_missing_and_unexpected_with_counts() -> None:
    sd = _random_toy().state_dict()
    sd = {k.replace("conv_first", "head"): v for k, v in sd.items()}
    sd.update({f"extra.{i}": torch.zeros(1) for i in range(8)})
    with pytest.raises(KdError) as info:
        load_official(ToySR(4), sd)
    message = str(info.value)
    assert "missing from checkpoint (2): conv_first.weight, conv_first.bias" in message
    assert "unexpected in checkpoint (10):" in message and "(5 more)" in message


def test_non_strict_tolerates_missing_keys_but_never_wrong_shapes() -> None:
    sd = _random_toy().state_dict()
    partial = {k: v for k, v in sd.items() if k.startswith("up.")}
    target = load_official(ToySR(4), partial, strict=False)
    assert torch.equal(target.up[0].weight, sd["up.0.weight"])
    with pytest.raises(KdError, match="wrong shape"):
        load_official(ToySR(4), _random_toy(2).state_dict(), strict=False)


def test_adapt_official_state_dict_is_called_before_the_check() -> None:
    saved = ToyWithMask(mask_size=9).state_dict()  # trained with another patch size
    model = load_official(ToyWithMask(mask_size=4), saved)
    assert model.attn_mask.shape == (4,)
    with pytest.raises(KdError, match="attn_mask"):
        load_official(ToySR(2), saved)  # no adapt hook: the buffer is unexpected


def _fake(keys: list[str]) -> dict[str, torch.Tensor]:
    return {k: torch.zeros(1) for k in keys}


FAKE_CHECKPOINTS = {
    "asid": ["input.weight", "input.bias", "block0.res_end.weight", "up.0.weight"],
    "edsr": ["sub_mean.weight", "head.0.weight", "body.0.body.0.weight", "body.0.body.2.weight", "tail.1.weight"],
    "han": ["sub_mean.weight", "head.0.weight", "body.0.body.0.weight", "la.gamma", "csa.gamma", "last.weight"],
    "rcan": ["sub_mean.weight", "add_mean.weight", "head.0.weight", "body.0.body.0.weight", "tail.1.weight"],
    "swinir": ["conv_first.weight", "patch_embed.norm.weight", "layers.0.conv.weight", "conv_last.weight"],
    "a2n": ["conv_first.weight", "AAB_trunk.0.conv_first.weight", "trunk_conv.weight", "conv_last.weight"],
    "ncnet": [f"body.{i}.{p}" for i in range(0, 13, 2) for p in ("weight", "bias")],
    "hsrnet": ["sub_mean.weight", "head.0.weight", "SolverLS.0.weight", "body.0.conv.0.conv_in.conv.0.weight",
               "Denoiser.0.conv.0.conv_in.conv.0.weight", "tail.1.conv.weight"],
    "ikm": ["input.weight", "body.0.body.0.body.0.layer.0.Conv2d.weight", "body.0.body.0.gate.0.Conv2d.weight",
            "tail.0.0.weight", "tail.1.weight"],
}


@pytest.mark.parametrize("arch", sorted(FAKE_CHECKPOINTS))
def test_identify_architecture_from_key_fingerprints(arch: str) -> None:
    assert identify_architecture(_fake(FAKE_CHECKPOINTS[arch])) == arch


def test_identify_architecture_unknown() -> None:
    assert identify_architecture(ToySR().state_dict()) is None


@pytest.mark.parametrize(
    "arch,article,name", [("asid", "an", "ASID"), ("han", "a", "HAN"), ("rcan", "an", "RCAN"), ("swinir", "a", "SwinIR")]
)
def test_wrong_architecture_is_named(arch: str, article: str, name: str) -> None:
    with pytest.raises(KdError) as info:
        load_official(ToySR(4), _fake(FAKE_CHECKPOINTS[arch]))
    assert f"looks like {article} {name} checkpoint" in str(info.value)
    assert "ToySR" in str(info.value)


def test_non_checkpoint_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights")
    with pytest.raises(KdError, match="notes.pth' is not a PyTorch checkpoint"):
        load_official(ToySR(4), path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(KdError, match="nowhere.pth' not found"):
        read_checkpoint(tmp_path / "nowhere.pth")


@pytest.mark.parametrize("content", [[1, 2, 3], {"epoch": 3, "lr": 0.1}, {}])
def test_checkpoint_without_a_state_dict_is_refused(tmp_path: Path, content) -> None:
    path = tmp_path / "odd.pth"
    torch.save(content, path)
    with pytest.raises(KdError, match="odd.pth"):
        read_checkpoint(path)


MARKER: list[str] = []


def _record_execution() -> None:
    MARKER.append("executed")


class _Payload:
    def __reduce__(self):
        return (_record_execution, ())


def test_arbitrary_globals_are_never_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:  # a plain pickle, as an untrusted download could be
        pickle.dump({"conv_first.weight": torch.zeros(1), "payload": _Payload()}, handle, protocol=2)
    torch.save({"params": {"w": torch.zeros(1)}, "payload": _Payload()}, tmp_path / "evil_zip.pth")
    MARKER.clear()
    for candidate in (path, tmp_path / "evil_zip.pth"):
        with pytest.raises(KdError, match="evil"):
            read_checkpoint(candidate)
    assert MARKER == []
    with pytest.raises(KdError, match="refused"):
        read_checkpoint(tmp_path / "evil_zip.pth")


# ---- the registered networks (skipped until they are registered) ----------------------------------------------

# A2N's x2 and x3 weights have the same shapes: its keys tell x4 from "x2 or x3", never x2 from x3.
X2_X3_ALIKE = {"a2n"}


def _tiny_networks() -> list[str]:
    """Registered networks with weights (baselines such as bicubic have no checkpoint to load)."""
    return [
        e.arch for e in list_entries()
        if e.role != "baseline" and "tiny" in e.presets and {2, 4} <= set(e.scales)
    ]


@pytest.mark.parametrize("arch", _tiny_networks() or [pytest.param("none", marks=pytest.mark.skip("no network"))])
def test_registered_network_wrong_scale_message(arch: str) -> None:
    assert describe_hook(arch) is not None, f"{arch} defines no describe_state_dict hook"
    x2 = create(arch, 2, preset="tiny").state_dict()
    checkpoint, model = ("upsampling x2 or x3", "upsampling x4") if arch in X2_X3_ALIKE else ("x2", "x4")
    if arch not in X2_X3_ALIKE:
        assert describe_hook(arch)(x2)["scale"] == 2
    with pytest.raises(KdError) as info:
        load_official(create(arch, 4, preset="tiny"), x2)
    assert f"checkpoint is {checkpoint}" in str(info.value) and f"model is {model}" in str(info.value)


def _arch_pairs() -> list[tuple[str, str]]:
    fingerprinted = [a for a in _tiny_networks() if a in FAKE_CHECKPOINTS]
    return list(itertools.permutations(fingerprinted, 2))


@pytest.mark.parametrize("ckpt_arch,model_arch", _arch_pairs() or [pytest.param("a", "b", marks=pytest.mark.skip)])
def test_registered_network_wrong_architecture_message(ckpt_arch: str, model_arch: str) -> None:
    state_dict = create(ckpt_arch, 4, preset="tiny").state_dict()
    assert identify_architecture(state_dict) == ckpt_arch
    with pytest.raises(KdError) as info:
        load_official(create(model_arch, 4, preset="tiny"), state_dict)
    assert f"{_DISPLAY_NAMES[ckpt_arch]} checkpoint" in str(info.value) and f"create('{ckpt_arch}'" in str(info.value)


@pytest.mark.parametrize("arch", _tiny_networks() or [pytest.param("none", marks=pytest.mark.skip("no network"))])
def test_registered_network_round_trip_through_file(tmp_path: Path, arch: str) -> None:
    source = create(arch, 4, preset="tiny")
    path = tmp_path / f"{arch}.pth"
    torch.save({"params": source.state_dict()}, path)
    _assert_same_weights(source, load_official(create(arch, 4, preset="tiny"), path))
