"""HSRNet: paper-preset size with the body registered twice, odd sizes against the official code, trainable mean
shifts, official packaging, taps, and distillation steps as student and teacher."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kd.errors import KdError
from kd.methods.pairing import body_stages, body_tail
from kd.models import capture, create, load_official
from kd.models.loading import identify_architecture
from seed_steps import parameters, training_step

FIXTURES = Path(__file__).parent / "fixtures"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_paper_preset_has_the_official_parameter_counts():
    assert parameters("hsrnet", 4) == 1_285_096
    assert parameters("hsrnet", 3) == 1_272_979
    assert parameters("hsrnet", 2) == 1_264_324
    with torch.device("meta"):
        state = create("hsrnet", 4).state_dict()
    assert sum(v.numel() for v in state.values()) == 2_347_784  # body.* and Denoiser.*: the same tensors twice


def test_list_models_counts_the_shared_body_once(capsys):
    from kd.cli import main

    assert main(["list", "models"]) == 0
    assert "1,285,096" in capsys.readouterr().out


def test_denoiser_is_the_body_under_its_official_second_name():
    model = create("hsrnet", 4, "tiny")
    assert model.Denoiser is model.body
    keys = set(model.state_dict())
    assert {k.replace("body.", "Denoiser.", 1) for k in keys if k.startswith("body.")} <= keys
    assert not any(name.startswith("Denoiser") for name, _ in model.named_modules())


def test_seed_fixture_config_builds_the_official_key_set(parity_dir):
    fixture = torch.load(parity_dir / "seed" / "hsrnet_s1i2_x4.pt", map_location="cpu", weights_only=True)
    model = create(**fixture["config"])
    assert set(model.state_dict()) == set(fixture["state_dict"])
    assert identify_architecture(fixture["state_dict"]) == "hsrnet"  # not RCAN, whose keys it also has


def test_odd_size_matches_the_official_output(parity_dir):
    odd = torch.load(FIXTURES / "hsrnet_s1i2_x4_odd.pt", map_location="cpu", weights_only=True)
    fixture = torch.load(parity_dir / odd["weights"], map_location="cpu", weights_only=True)
    model = load_official(create(**fixture["config"]), fixture["state_dict"], strict=True).eval()
    with torch.no_grad(), capture(model, ["body.0.conv.1.conv_2x2"]) as feats:
        output = model(odd["input"])
    assert tuple(feats["body.0.conv.1.conv_2x2"].shape[2:]) == (5, 6)  # 11x13 max-pooled with floor
    assert (output - odd["output"]).abs().max().item() <= 1e-4


def test_mean_shifts_train_like_every_other_weight(tmp_path):
    # The official MeanShift sets a module attribute, not requires_grad: its optimiser trains the mean shifts.
    trainer = training_step(tmp_path, "logits", "hsrnet").trainer
    fresh = create("hsrnet", 4, "tiny")
    assert trainer.student.sub_mean.weight.requires_grad
    assert not torch.equal(trainer.student.sub_mean.weight.detach(), fresh.sub_mean.weight)


def test_official_packaging_loads_and_a_wrong_scale_is_explained(tmp_path, parity_dir):
    fixture = torch.load(parity_dir / "seed" / "hsrnet_s1i2_x4.pt", map_location="cpu", weights_only=True)
    path = tmp_path / "model_best.pt"
    torch.save(fixture["state_dict"], path)
    model = load_official(create("hsrnet", 4, n_stage=1, n_iters=2), path)
    conv_out = fixture["state_dict"]["body.0.conv.0.conv_out.weight"]
    assert torch.equal(model.Denoiser[0].conv[0].conv_out.weight, conv_out)
    with pytest.raises(KdError, match="checkpoint is x4: its upscaling conv tail.1.conv has 48 output channels"):
        load_official(create("hsrnet", 2, n_stage=1, n_iters=2), path)


def test_bad_fields_are_named():
    with pytest.raises(KdError, match="'n_iters'"):
        create("hsrnet", 4, "tiny", n_iters=0)
    with pytest.raises(KdError, match="'n_feats' must be a multiple of 4"):
        create("hsrnet", 4, "tiny", n_feats=6)


def test_body_taps_and_their_last_iteration():
    model = create("hsrnet", 4, "tiny")  # n_iters 2; SolverLS.0..3 outnumber body.0..1: body_prefix picks the body
    assert body_stages(model) == ["body.0"] and body_tail(model) == "body.1"
    calls = []
    model.body[0].register_forward_hook(lambda module, inputs, output: calls.append(output))
    with capture(model, ["body.[0-9]", "body.*.conv.1.conv_out"]) as feats:
        model(torch.rand(2, 3, 7, 9))
    assert len(calls) == 2 and feats["body.0"] is calls[-1]
    assert {tuple(v.shape[1:]) for v in feats.values()} == {(8, 7, 9)}


@pytest.mark.parametrize("method", ["logits", "fitnet", "fakd", "dckd"])
def test_trains_as_a_student_of_rcan(tmp_path, method):
    training_step(tmp_path, method, "hsrnet")


@pytest.mark.parametrize("method", ["logits", "fakd"])
def test_teaches_asid(tmp_path, method):
    training_step(tmp_path, method, "asid", teacher="hsrnet")
