"""Full-size networks match the official state_dict manifests key for key and shape for shape (meta device).

`official_state_dict_shapes.json` lists every key and shape of the official models' `state_dict()` for the
official configurations (ARCHITECTURES.md 9.3). Matching it means the released checkpoints load strictly with no
key mapping. Parameter counts are checked against the figures of ARCHITECTURES.md (sections 2.4, 3.3, 4.3, 5.3).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch

from kd.errors import KdError
from kd.metrics.cost import count_parameters
from kd.models import create, get_entry

MANIFEST = "official_state_dict_shapes.json"

ASID = dict(arch="asid", num_feat=48, window_size=8)
RCAN_TRUNK = dict(n_resgroups=10, n_resblocks=20, n_feats=64, reduction=16)
SWINIR_COMMON = dict(arch="swinir", window_size=8, mlp_ratio=2, resi_connection="1conv", img_range=1.0)
SWINIR_CLASSICAL = dict(
    SWINIR_COMMON, variant="classical", embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, upsampler="pixelshuffle"
)
SWINIR_LIGHT = dict(
    SWINIR_COMMON, variant="lightweight", img_size=64, embed_dim=60, depths=[6] * 4, num_heads=[6] * 4,
    upsampler="pixelshuffledirect",
)

# Manifest network -> create() fields (the official default configurations, ARCHITECTURES.md 2.2, 3.1, 4.1, 5.1).
OFFICIAL_CONFIGS: dict[str, dict] = {
    "asid": dict(ASID, blocks=3),
    "asid_d8": dict(ASID, blocks=8),
    "rcan": dict(arch="rcan", **RCAN_TRUNK),
    "han": dict(arch="han", **RCAN_TRUNK),
    "swinir_classical_s48": dict(SWINIR_CLASSICAL, img_size=48),
    "swinir_classical_s64": dict(SWINIR_CLASSICAL, img_size=64),
    "swinir_light": SWINIR_LIGHT,
}

# Parameter counts (parameters() only, buffers excluded) for x2 / x3 / x4, from ARCHITECTURES.md.
PARAMETERS: dict[str, tuple[int, int, int]] = {
    "asid": (297_516, 304_011, 313_104),
    "asid_d8": (732_146, 738_641, 747_734),
    "rcan": (15_444_667, 15_629_307, 15_592_379),
    "han": (15_924_057, 16_108_697, 16_071_769),
    "swinir_classical_s48": (11_752_487, 11_937_127, 11_900_199),
    "swinir_classical_s64": (11_752_487, 11_937_127, 11_900_199),
    "swinir_light": (910_152, 918_267, 929_628),
}

ENTRIES = [f"{net}_x{scale}" for net in OFFICIAL_CONFIGS for scale in (2, 3, 4)]


def _split(entry: str) -> tuple[str, int]:
    net, scale = entry.rsplit("_x", 1)
    return net, int(scale)


def _build_on_meta(net: str, scale: int) -> torch.nn.Module:
    config = dict(OFFICIAL_CONFIGS[net])
    arch = config.pop("arch")
    try:
        get_entry(arch)
    except KdError:
        pytest.skip(f"network '{arch}' is not registered (its module has not landed)")
    return _cached_meta_model(net, scale)


@functools.cache
def _cached_meta_model(net: str, scale: int) -> torch.nn.Module:
    config = dict(OFFICIAL_CONFIGS[net])
    arch = config.pop("arch")
    with torch.device("meta"):
        return create(arch, scale, **config)


@pytest.fixture(scope="module")
def manifest(parity_dir: Path) -> dict[str, dict[str, list[int]]]:
    return json.loads((parity_dir / MANIFEST).read_text())


def test_manifest_entries_are_all_covered(manifest) -> None:
    assert set(manifest) == set(ENTRIES)


@pytest.mark.parametrize("entry", ENTRIES)
def test_state_dict_matches_official_manifest(manifest, entry: str) -> None:
    model = _build_on_meta(*_split(entry))
    ours = {key: list(value.shape) for key, value in model.state_dict().items()}
    official = manifest[entry]
    missing = sorted(set(official) - set(ours))
    extra = sorted(set(ours) - set(official))
    assert not missing and not extra, f"{entry}: missing {missing[:5]} ({len(missing)}), extra {extra[:5]} ({len(extra)})"
    wrong = [(k, ours[k], official[k]) for k in official if ours[k] != official[k]]
    assert not wrong, f"{entry}: wrong shapes (key, ours, official): {wrong[:5]} ({len(wrong)})"


@pytest.mark.parametrize("entry", ENTRIES)
def test_parameter_count_matches_reference(entry: str) -> None:
    net, scale = _split(entry)
    model = _build_on_meta(net, scale)
    assert count_parameters(model) == PARAMETERS[net][scale - 2]
