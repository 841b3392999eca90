"""EMSRDPN: official sizes and keys, the dual path unit (concat order), the scale heads, distillation, the CLI."""

from __future__ import annotations

import pytest
import torch

from kd.errors import KdError
from kd.models import create, identify_architecture, load_official
from kd.methods.pairing import body_stages, body_tail
from seed_steps import parameters, training_step
from teachers.emsrdpn import DualPathUnit

FIXTURE = "seed/emsrdpn_r8d8b3c2g8_x4.pt"


def test_paper_preset_counts_equal_the_official_code():
    assert parameters("emsrdpn", 4) == 17_522_188  # config A, heads x2/x3/x4/x8: SEED_NETWORKS.md section 11
    assert parameters("emsrdpn", 4, "single") == 13_822_211  # config A, the x4 head alone
    trunk = 12_638_080
    heads = [parameters("emsrdpn", s, "single") - trunk for s in (2, 3, 4, 8)]
    assert heads == [593_795, 1_331_715, 1_184_131, 1_774_467]
    assert parameters("emsrdpn", 4, scales=[2, 3, 4, 8], Gr=135, Gd=0, G=0) == 18_030_747  # config B
    assert parameters("emsrdpn", 4, scales=[2, 3, 4, 8], Gr=0, Gd=122, G=122) == 17_110_512  # config C
    assert 300_000 <= parameters("emsrdpn", 4, "mini") <= 1_000_000


def test_fixture_keys_load_and_head_selection(parity_dir, tmp_path):
    fixture = torch.load(parity_dir / FIXTURE, map_location="cpu", weights_only=True)
    model = create(**fixture["config"])
    assert set(model.state_dict()) == set(fixture["state_dict"]) and model.branch == 2
    assert identify_architecture(fixture["state_dict"]) == "emsrdpn"
    path = tmp_path / "EMSRDPN_BIx234.pt"
    torch.save({f"module.{k}": v for k, v in fixture["state_dict"].items()}, path)
    load_official(model, path).eval()
    with torch.no_grad():
        assert (model(fixture["input"]) - fixture["output"]).abs().max().item() <= 1e-4
        x2 = create(**{**fixture["config"], "scale": 2})
        load_official(x2, fixture["state_dict"]).eval()
        assert x2(fixture["input"]).shape == (2, 3, 48, 40)


def test_dual_path_unit_puts_new_dense_features_before_the_old():
    torch.manual_seed(0)
    unit = DualPathUnit(in_channels=7, Gr=3, G=2)  # residual 3 | dense 4 in; residual 3 | new 2 | old 4 out
    x = torch.randn(1, 7, 5, 6)
    new = unit.dpb_conv(x)
    out = unit(x)
    assert torch.equal(out[:, :3], x[:, :3] + new[:, :3])
    assert torch.equal(out[:, 3:5], new[:, 3:]) and torch.equal(out[:, 5:], x[:, 3:])
    assert not torch.equal(unit.dpb_conv[0](x), x)  # the unit starts with a ReLU on its input


def test_mismatches_and_bad_fields_are_explained():
    with pytest.raises(KdError, match=r"checkpoint is x3: upsampler branches upsample\.0 x3.*model is x4"):
        load_official(create("emsrdpn", 4, "tiny"), create("emsrdpn", 3, "tiny").state_dict())
    with pytest.raises(KdError, match=r"'scales' \[2, 3\] has no branch for x8"):
        create("emsrdpn", 8, "tiny", scales=[2, 3])
    with pytest.raises(KdError, match="'SRDPNkSize' must be odd"):
        create("emsrdpn", 4, "tiny", SRDPNkSize=4)
    with pytest.raises(KdError, match="field 'D' must be an integer >= 1"):
        create("emsrdpn", 4, "tiny", D=0)


def test_kernel_size_applies_outside_the_units_only():
    model = create("emsrdpn", 4, "tiny", SRDPNkSize=5)
    assert model.SFENet1[0].kernel_size == model.transition[1].kernel_size == model.tail[0].kernel_size == (5, 5)
    assert model.SRDPBs[0].convs[0].dpb_conv[3].kernel_size == (3, 3)


def test_taps_pair_the_blocks_and_the_transition():
    model = create("emsrdpn", 4, "tiny", scales=[2, 3, 4])  # 3 heads against 2 blocks
    assert body_stages(model) == ["SRDPBs.0", "SRDPBs.1"] and body_tail(model) == "transition"


@pytest.mark.parametrize("method", ["logits", "fitnet", "fakd", "dckd"])
@pytest.mark.parametrize("student,teacher", [("asid", "emsrdpn"), ("emsrdpn", "rcan")])
def test_distils_and_is_distilled(tmp_path, student, teacher, method):
    step = training_step(tmp_path, method, student, teacher)  # finite values, the student moved
    assert all(r > 0 for r in step.health.values())


def test_cli_trains_an_emsrdpn_teacher(tmp_path, monkeypatch):
    from kd.cli import main

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    assert main(["teacher", "train", "--teacher", "emsrdpn", "--preset", "tiny", "--profile", "smoke"]) == 0
    [entry] = (tmp_path / "cache" / "teachers").glob("emsrdpn-tiny-x4-*")
    load_official(create("emsrdpn", 4, "tiny"), entry / "teacher.pt")
