"""NCNet: paper-preset size, the nearest buffer, x3 and x4 pixel shuffles against the official code, official
packaging, taps, and distillation steps as student and teacher."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from kd.errors import KdError
from kd.methods.pairing import body_stages, body_tail
from kd.models import capture, create, load_official
from kd.models.loading import identify_architecture
from seed_steps import parameters, training_step

FIXTURES = Path(__file__).parent / "fixtures"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_paper_preset_has_the_official_parameter_counts():
    assert parameters("ncnet", 3) == 52_279  # the released x3 model (README)
    assert parameters("ncnet", 4) == 72_544
    assert parameters("ncnet", 2) == 42_664


def test_seed_fixture_config_builds_the_official_key_set(parity_dir):
    fixture = torch.load(parity_dir / "seed" / "ncnet_f8_x4.pt", map_location="cpu", weights_only=True)
    model = create(**fixture["config"])
    assert set(model.state_dict()) == set(fixture["state_dict"])
    assert identify_architecture(fixture["state_dict"]) == "ncnet"


def test_x3_matches_the_official_output():
    fixture = torch.load(FIXTURES / "ncnet_f8_x3.pt", map_location="cpu", weights_only=True)
    model = load_official(create(**fixture["config"]), fixture["state_dict"], strict=True).eval()
    with torch.no_grad():
        output = model(fixture["input"])
    assert (output - fixture["output"]).abs().max().item() <= 1e-4


def test_nearest_weight_is_a_buffer_that_moves_but_is_not_saved():
    model = create("ncnet", 4, "tiny")
    assert "nearest_weight" in dict(model.named_buffers())
    assert not any("nearest" in key for key in model.state_dict())
    assert model.to(torch.float64).nearest_weight.dtype == torch.float64


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_the_skip_alone_is_nearest_upsampling(scale):
    # With the last conv zeroed the output is the fixed skip: nearest upsampling, also through x4's two shuffles.
    model = create("ncnet", scale, "tiny")
    with torch.no_grad():
        model.body.get_submodule("12").weight.zero_()
        model.body.get_submodule("12").bias.zero_()
        lr = torch.rand(1, 3, 5, 7)
        assert torch.allclose(model(lr), F.interpolate(lr, scale_factor=scale, mode="nearest"), atol=1e-6)


def test_official_packaging_loads_and_a_wrong_scale_is_explained(tmp_path, parity_dir):
    fixture = torch.load(parity_dir / "seed" / "ncnet_f8_x4.pt", map_location="cpu", weights_only=True)
    path = tmp_path / "ncnet_x4.pth"
    torch.save({"state_dict": fixture["state_dict"], "epoch": 3}, path)
    load_official(create("ncnet", 4, "tiny"), path)
    with pytest.raises(KdError, match="checkpoint is x4: its last conv body.12 has 48 output channels.*model is x3"):
        load_official(create("ncnet", 3, "tiny"), path)


def test_bad_fields_are_named():
    with pytest.raises(KdError, match="'out_c' must be 3"):
        create("ncnet", 4, "tiny", out_c=1)
    with pytest.raises(KdError, match="'n_feats'"):
        create("ncnet", 4, "tiny", n_feats=0)


def test_body_stages_are_the_seven_convs_at_lr_resolution():
    model = create("ncnet", 4, "tiny")
    convs = [f"body.{i}" for i in range(0, 13, 2)]
    assert body_stages(model) + [body_tail(model)] == convs
    with capture(model, list(model.TAPS)) as feats:
        model(torch.rand(2, 3, 7, 9))
    assert sorted(feats) == sorted(convs) and {tuple(v.shape[2:]) for v in feats.values()} == {(7, 9)}


@pytest.mark.parametrize("method", ["logits", "fitnet", "fakd", "dckd"])
def test_trains_as_a_student_of_rcan(tmp_path, method):
    training_step(tmp_path, method, "ncnet")


@pytest.mark.parametrize("method", ["logits", "fakd"])
def test_teaches_asid(tmp_path, method):
    training_step(tmp_path, method, "asid", teacher="ncnet")
