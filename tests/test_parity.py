"""Project-wide parity: every official fixture in <shared>/reference/parity (shared: `$KDBENCH_SHARED`, else
../shared), and in its seed/ folder (the networks of the seed papers), reproduces through kdbench.

Each fixture holds perturbed official weights under the official key names, the constructor config, an input
batch and the official network's output, all on the [0, 1] RGB interface (ARCHITECTURES.md, section 9). The
kdbench network is built with `create(**config)`, the weights go through `load_official` (strict) and the output
must match within atol 1e-4 in eval mode. A fixture with an `hr` entry (KDSR's teacher, whose degradation encoder
sees the HR image) is run as `model(input, hr)`.

`FIXTURE_FIELDS` adds constructor fields to a fixture's config where the fixture records an official behaviour that
kdbench keeps only for this check: HPINet's fixture is a batch of 2, and the official evaluation code takes every
image's matched patches from the first image at batch > 1 (kdbench matches within each image unless
`official_batch_matching` is set; students/hpinet.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import SHARED
from kd.models import create, get_entry, load_official
from kd.errors import KdError

PARITY_DIR = SHARED / "reference" / "parity"
FIXTURE_FIELDS = {"seed/hpinet_d16b3_x4.pt": {"official_batch_matching": True}}
FIXTURES = sorted(str(p.relative_to(PARITY_DIR)) for pattern in ("*.pt", "seed/*.pt")
                  for p in PARITY_DIR.glob(pattern)) if PARITY_DIR.is_dir() else []


def _require_registered(arch: str) -> None:
    try:
        get_entry(arch)
    except KdError:
        pytest.skip(f"network '{arch}' is not registered (its module has not landed)")


@pytest.mark.parametrize("name", FIXTURES or [pytest.param("none", marks=pytest.mark.skip("no fixtures found"))])
def test_fixture_reproduces_official_output(parity_dir: Path, name: str) -> None:
    fixture = torch.load(parity_dir / name, map_location="cpu", weights_only=True)
    config = {**fixture["config"], **FIXTURE_FIELDS.get(name, {})}
    _require_registered(config["arch"])
    model = create(**config)
    assert set(model.state_dict()) == set(fixture["state_dict"]), "key sets differ (strict loading would fail)"
    load_official(model, fixture["state_dict"], strict=True)
    model.eval()
    inputs = [fixture["input"].float()] + ([fixture["hr"].float()] if "hr" in fixture else [])
    with torch.no_grad():
        output = model(*inputs)
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


def test_seed_fixtures_are_all_found(parity_dir: Path) -> None:
    # The 13 fixtures of SEED_NETWORKS.md section 0.3.
    documented = {
        "san_g2b2f16_x4.pt", "san_fakd_g6b1f16_x4.pt", "swinfir_e24d2w8_x4.pt", "swinfir_t_e30d2x2w8_x4.pt",
        "a2n_nf16unf8nb3_x4.pt", "ncnet_f8_x4.pt", "hpinet_d16b3_x4.pt", "emsrdpn_r8d8b3c2g8_x4.pt",
        "hsrnet_s1i2_x4.pt", "ikm_uhdn_c16b1g4_x4.pt", "mdsr_b2f16_x4.pt", "kdsr_f16b2r1_x4.pt",
        "kdsr_teacher_f16b2r1_x4.pt",
    }
    assert {f"seed/{name}" for name in documented} <= set(FIXTURES)
    assert set(FIXTURE_FIELDS) <= set(FIXTURES)  # an override never names a fixture that is not run
