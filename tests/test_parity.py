"""Project-wide parity: every official fixture in ../shared/reference/parity reproduces through kdbench.

Each fixture holds perturbed official weights under the official key names, the constructor config, an input
batch and the official network's output, all on the [0, 1] RGB interface (ARCHITECTURES.md, section 9). The
kdbench network is built with `create(**config)`, the weights go through `load_official` (strict) and the output
must match within atol 1e-4 in eval mode.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kd.models import create, get_entry, load_official
from kd.errors import KdError

PARITY_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "parity"
FIXTURES = sorted(p.name for p in PARITY_DIR.glob("*.pt")) if PARITY_DIR.is_dir() else []


def _require_registered(arch: str) -> None:
    try:
        get_entry(arch)
    except KdError:
        pytest.skip(f"network '{arch}' is not registered (its module has not landed)")


@pytest.mark.parametrize("name", FIXTURES or [pytest.param("none", marks=pytest.mark.skip("no fixtures found"))])
def test_fixture_reproduces_official_output(parity_dir: Path, name: str) -> None:
    fixture = torch.load(parity_dir / name, map_location="cpu", weights_only=True)
    config = dict(fixture["config"])
    _require_registered(config["arch"])
    model = create(**config)
    assert set(model.state_dict()) == set(fixture["state_dict"]), "key sets differ (strict loading would fail)"
    load_official(model, fixture["state_dict"], strict=True)
    model.eval()
    with torch.no_grad():
        output = model(fixture["input"].float())
    expected = fixture["output"]
    assert output.shape == expected.shape
    error = (output - expected).abs().max().item()
    assert error <= 1e-4, f"{name}: max abs error {error:.3g} > 1e-4"


def test_fixtures_are_all_found(parity_dir: Path) -> None:
    # The eight fixtures documented in ARCHITECTURES.md 9.1; a missing one would silently shrink the parity suite.
    documented = {
        "asid_x2.pt", "asid_x4.pt", "rcan_g2b3f32_x3.pt", "rcan_g2b3f32_x4.pt", "han_g10b1f16_x4.pt",
        "swinir_e36d2x2_x2.pt", "swinir_e36d2x2_x4.pt", "swinir_light_x4.pt",
    }
    assert documented <= set(FIXTURES)
