"""Parameter and MAC counting against analytic counts and the reference figures of ARCHITECTURES.md."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kd.errors import KdError
from kd.metrics.cost import count_macs, count_parameters, macs_for_output
from kd.models import create, get_entry, list_entries


def _require(arch: str) -> None:
    try:
        get_entry(arch)
    except KdError:
        pytest.skip(f"network '{arch}' is not registered yet")


class ConvThenLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.norm = nn.BatchNorm2d(16)  # buffers (running stats) must not be counted as parameters
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        y = self.norm(self.conv(x))
        return self.fc(y.mean(dim=(2, 3)))


def test_count_parameters_excludes_buffers_and_counts_shared_once() -> None:
    model = ConvThenLinear()
    analytic = (16 * 3 * 3 * 3 + 16) + (16 + 16) + (5 * 16 + 5)
    assert count_parameters(model) == analytic
    shared = nn.Sequential(model.fc, model.fc)
    assert count_parameters(shared) == 5 * 16 + 5


@pytest.mark.parametrize("size", [(10, 12), (7, 5)])
def test_count_macs_matches_analytic_conv_and_linear(size: tuple[int, int]) -> None:
    h, w = size
    conv_macs = 16 * 3 * 3 * 3 * h * w  # out channels x in channels x kernel area x output pixels (bias excluded)
    linear_macs = 16 * 5
    assert count_macs(ConvThenLinear(), (h, w)) == conv_macs + linear_macs
    assert count_macs(ConvThenLinear(), (h, w), batch=3) == 3 * (conv_macs + linear_macs)


def test_count_macs_leaves_the_model_untouched() -> None:
    model = ConvThenLinear().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_macs(model, (8, 8))
    assert model.training and next(model.parameters()).device.type == "cpu"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_count_macs_works_on_a_meta_model() -> None:
    with torch.device("meta"):
        model = ConvThenLinear()
    assert count_macs(model, (4, 4)) == 16 * 27 * 16 + 80


class NeedsRealValues(nn.Module):
    """A forward with data-dependent control flow cannot run on meta tensors: counting falls back to CPU."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)

    def forward(self, x):
        y = self.conv(x)
        return y if bool(y.sum() >= 0) else -y


def test_count_macs_falls_back_to_cpu() -> None:
    with pytest.warns(RuntimeWarning, match="meta device failed"):
        assert count_macs(NeedsRealValues(), (4, 5)) == 2 * 3 * 20


def test_macs_for_output_uses_the_lr_size_of_the_output() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1))
    assert macs_for_output(model, 4) == 8 * 27 * (720 // 4) * (1280 // 4)
    assert macs_for_output(model, 3, out_size=(1280, 720)) == 8 * 27 * 240 * 426


# Reference figures (ARCHITECTURES.md 2.4, 3.3, 4.3, 5.3, 10): MACs in G, rounded as published. Counting a
# full-size teacher takes ~10 s of tracing (thousands of modules), so those run in the slow suite.
SLOW = pytest.mark.slow
REFERENCE_MACS = [
    pytest.param("asid", {}, 4, (48, 48), 0.81, 20.8, id="asid"),
    pytest.param("asid_d8", {}, 4, (48, 48), 1.94, 49.6, id="asid_d8", marks=SLOW),
    pytest.param("rcan", {}, 4, (48, 48), 36.7, 916.9, id="rcan", marks=SLOW),
    pytest.param("rcan", dict(n_resgroups=2, n_resblocks=4, n_feats=32, reduction=16), 4, (48, 48), 0.86, 21.6,
                 id="rcan-small"),
    pytest.param("han", {}, 4, (48, 48), 37.8, 945.5, id="han", marks=SLOW),
    pytest.param("swinir", dict(variant="classical", img_size=64), 4, (64, 64), 53.6, 769.9, id="swinir", marks=SLOW),
    pytest.param("swinir_light", {}, 4, (64, 64), 4.36, 62.7, id="swinir_light"),
]


@pytest.mark.parametrize("arch,fields,scale,patch,patch_g,hd_g", REFERENCE_MACS)
def test_reference_mac_figures(arch, fields, scale, patch, patch_g, hd_g) -> None:
    _require(arch)
    with torch.device("meta"):
        model = create(arch, scale, preset="paper", **fields)
    assert count_macs(model, patch) / 1e9 == pytest.approx(patch_g, abs=_half_last_digit(patch_g))
    assert macs_for_output(model, scale) / 1e9 == pytest.approx(hd_g, abs=_half_last_digit(hd_g))


def _half_last_digit(published: float) -> float:
    """Rounding tolerance of a published figure: half a unit of its last printed decimal."""
    decimals = len(repr(published).split(".")[1])
    return 0.5 * 10.0 ** -decimals


NETWORKS = [e.arch for e in list_entries() if e.role != "baseline"]


@pytest.mark.parametrize("arch", NETWORKS or [pytest.param("none", marks=pytest.mark.skip("none registered"))])
def test_cpu_model_counted_on_meta_like_a_meta_model(arch: str, recwarn) -> None:
    model = create(arch, 4, preset="tiny")
    with torch.device("meta"):
        meta_model = create(arch, 4, preset="tiny")
    assert count_macs(model, (16, 24)) == count_macs(meta_model, (16, 24)) > 0
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)], "fell back to CPU counting"
