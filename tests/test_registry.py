"""Model registry: unknown names list the valid choices; every registered network follows the conventions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kd.errors import KdError
from kd.metrics.cost import count_parameters
from kd.models import ModelEntry, create, get_entry, list_entries, probe_inputs, register_model, resolve_fields
from kd.models import registry


class ToyNet(nn.Module):
    def __init__(self, scale: int, width: int = 4, depth: int = 1):
        super().__init__()
        self.scale, self.width, self.depth = scale, width, depth
        self.conv = nn.Conv2d(3, width, 3, padding=1)


def build_toy(scale: int, width: int = 4, depth: int = 1) -> ToyNet:
    return ToyNet(scale, width, depth)


@pytest.fixture
def toy_registry(monkeypatch):
    """A private copy of the registry with a toy network, removed again after the test."""
    list_entries()  # import the built-in networks before copying
    monkeypatch.setattr(registry, "_ENTRIES", dict(registry._ENTRIES))
    return register_model(ModelEntry(
        arch="toynet", builder=build_toy, role="student", aliases=("toy_alias",), scales=(2, 4),
        presets={"paper": {"width": 8, "depth": 2}, "mini": {"width": 4}, "tiny": {"width": 2}},
    ))


def test_toy_registry_does_not_leak(toy_registry) -> None:
    assert get_entry("toynet") is toy_registry


def test_toy_is_gone_afterwards() -> None:
    with pytest.raises(KdError):
        get_entry("toynet")


def test_unknown_architecture_lists_choices_and_closest(toy_registry) -> None:
    with pytest.raises(KdError) as info:
        create("toynte", 4)
    message = str(info.value)
    assert "unknown architecture 'toynte'" in message and "Did you mean 'toynet'" in message
    assert all(name in message for name in ("toynet", "toy_alias"))


def test_unknown_preset_lists_presets(toy_registry) -> None:
    with pytest.raises(KdError) as info:
        create("toynet", 4, preset="huge")
    assert "unknown preset of 'toynet' 'huge'" in str(info.value)
    assert all(p in str(info.value) for p in ("mini", "paper", "tiny"))


def test_unknown_field_lists_fields(toy_registry) -> None:
    with pytest.raises(KdError) as info:
        create("toynet", 4, widht=3)
    assert "'widht'" in str(info.value) and "Valid fields: width, depth" in str(info.value)


def test_unsupported_scale_lists_scales(toy_registry) -> None:
    with pytest.raises(KdError, match="x3.*supported: x2, x4"):
        create("toynet", 3)


def test_preset_then_explicit_fields_and_aliases(toy_registry) -> None:
    model = create("TOY_ALIAS", 2, preset="paper", depth=5)
    assert (model.width, model.depth, model.scale) == (8, 5, 2)
    assert model.kd_spec == {"arch": "toynet", "scale": 2, "preset": "paper", "width": 8, "depth": 5}
    assert resolve_fields("toynet", "tiny") == {"width": 2}


def test_registering_a_name_twice_is_refused(toy_registry) -> None:
    with pytest.raises(ValueError, match="toy_alias"):
        register_model(ModelEntry(arch="other", builder=build_toy, role="student", presets={}, aliases=("toy_alias",)))


# ---- conventions of the registered networks -----------------------------------------------------------------

NETWORKS = [e.arch for e in list_entries() if e.role != "baseline"]


@pytest.mark.parametrize("arch", NETWORKS or [pytest.param("none", marks=pytest.mark.skip("none registered"))])
def test_network_presets_build_and_grow(arch: str) -> None:
    entry = get_entry(arch)
    assert {"paper", "mini", "tiny"} <= set(entry.presets), f"{arch} lacks a standard preset"
    assert entry.role in ("student", "teacher")
    counts = {}
    for preset in ("tiny", "mini", "paper"):
        with torch.device("meta"):
            model = create(arch, 4, preset=preset)
        assert model.kd_spec["preset"] == preset
        counts[preset] = count_parameters(model)
    assert counts["tiny"] < 50_000, f"{arch} tiny preset has {counts['tiny']} parameters (should be a few thousand)"
    assert counts["tiny"] < counts["mini"] <= counts["paper"], counts


@pytest.mark.parametrize("arch", NETWORKS or [pytest.param("none", marks=pytest.mark.skip("none registered"))])
def test_network_rejects_bad_input_with_kderror(arch: str) -> None:
    model = create(arch, 2, preset="tiny")
    for bad in (torch.rand(3, 16, 16), torch.rand(1, 1, 16, 16), torch.rand(1, 4, 16, 16)):
        with pytest.raises(KdError, match=str(tuple(bad.shape)).replace("(", r"\(").replace(")", r"\)")):
            model(bad)


@pytest.mark.parametrize("arch", NETWORKS or [pytest.param("none", marks=pytest.mark.skip("none registered"))])
def test_network_maps_unit_rgb_to_upscaled_rgb(arch: str) -> None:
    model = create(arch, 2, preset="tiny").eval()
    with torch.no_grad():
        out = model(*probe_inputs(model, torch.rand(1, 3, 12, 20)))  # not a multiple of 8: padding cropped away
    assert out.shape == (1, 3, 24, 40) and torch.isfinite(out).all()


# ---- `kdbench list models` ----------------------------------------------------------------------------------

def test_cli_list_models_shows_every_network_and_counts(capsys, monkeypatch, toy_registry) -> None:
    from kd.cli import main

    monkeypatch.setenv("COLUMNS", "250")
    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    for entry in list_entries():
        assert entry.arch in out
    # toynet at x4: paper width 8 -> 8*3*9 + 8 = 224 parameters; tiny width 2 -> 56
    row = next(line for line in out.splitlines() if line.strip().startswith("toynet"))
    assert "toy_alias" in row and "224" in row and "56" in row


def test_cli_list_models_taps(capsys, monkeypatch) -> None:
    from kd.cli import main

    monkeypatch.setenv("COLUMNS", "250")
    assert main(["list", "models", "--taps"]) == 0
    out = capsys.readouterr().out
    for arch in NETWORKS:
        for pattern in create(arch, 4, preset="tiny").TAPS:
            assert pattern in out, (arch, pattern)


def test_cli_list_without_a_thing_shows_help(capsys) -> None:
    from kd.cli import main

    assert main(["list"]) == 2
    assert "models" in capsys.readouterr().out
