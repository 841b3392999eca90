"""A2N: paper-preset size, official keys and packaging, the x3 upsampler against the official code, taps, and
distillation steps as student and teacher."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kd.errors import KdError
from kd.methods import create_method
from kd.methods.pairing import body_stages, body_tail, pair_by_depth
from kd.models import capture, create, load_official
from kd.models.loading import identify_architecture
from seed_steps import parameters, training_step

FIXTURES = Path(__file__).parent / "fixtures"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_paper_preset_has_the_official_parameter_counts():
    assert parameters("a2n", 4) == 1_047_459
    assert parameters("a2n", 2) == parameters("a2n", 3) == 1_036_443  # one upsampling stage at x2 and x3


def test_seed_fixture_config_builds_the_official_key_set(parity_dir):
    fixture = torch.load(parity_dir / "seed" / "a2n_nf16unf8nb3_x4.pt", map_location="cpu", weights_only=True)
    model = create(**fixture["config"])
    assert set(model.state_dict()) == set(fixture["state_dict"])
    assert identify_architecture(fixture["state_dict"]) == "a2n"


def test_x3_upsampler_matches_the_official_output():
    fixture = torch.load(FIXTURES / "a2n_nf8unf8nb2_x3.pt", map_location="cpu", weights_only=True)
    model = load_official(create(**fixture["config"]), fixture["state_dict"], strict=True).eval()
    with torch.no_grad():
        output = model(fixture["input"])
    assert (output - fixture["output"]).abs().max().item() <= 1e-4


def test_official_packaging_loads_and_a_wrong_scale_is_explained(tmp_path):
    fixture = torch.load(FIXTURES / "a2n_nf8unf8nb2_x3.pt", map_location="cpu", weights_only=True)
    path = tmp_path / "aan_x3.pt"  # the official release is a plain state dict; DataParallel adds `module.`
    torch.save({f"module.{k}": v for k, v in fixture["state_dict"].items()}, path)
    model = load_official(create("a2n", 3, "tiny"), path)
    assert torch.equal(model.state_dict()["conv_last.bias"], fixture["state_dict"]["conv_last.bias"])
    with pytest.raises(KdError, match=r"checkpoint is upsampling x2 or x3 \(one stage\); model is upsampling x4"):
        load_official(create("a2n", 4, "tiny"), path)


@pytest.mark.parametrize("field, value", [("nf", 2), ("nb", 0), ("unf", 1.5)])
def test_bad_fields_are_named(field, value):
    with pytest.raises(KdError, match=f"'{field}'"):
        create("a2n", 4, "tiny", **{field: value})


def test_scales_other_than_2_3_4_are_refused():
    with pytest.raises(KdError, match="x8"):
        create("a2n", 8, "tiny")


def test_body_taps_are_the_attention_blocks_at_lr_resolution():
    model = create("a2n", 4, "tiny")  # nb 2: AAB_trunk has as many members as the upsampler's numbered convs
    assert body_stages(model) == ["AAB_trunk.0", "AAB_trunk.1"] and body_tail(model) == "trunk_conv"
    lr = torch.rand(2, 3, 7, 9)
    taps = [t for t in model.TAPS if t != "AAB_trunk.[0-9][0-9]"]  # nb 2: no two-digit block
    with capture(model, taps) as feats:
        model(lr)
    assert {tuple(v.shape[2:]) for v in feats.values()} == {(7, 9)}
    assert pair_by_depth(model, create("rcan", 4, "tiny"), 3) == (["AAB_trunk.0", "AAB_trunk.1", "trunk_conv"],
                                                                   ["body.0", "body.1", "body.2"])


@pytest.mark.parametrize("method", ["logits", "fitnet", "fakd", "dckd"])
def test_trains_as_a_student_of_rcan(tmp_path, method):
    training_step(tmp_path, method, "a2n")


@pytest.mark.parametrize("method", ["logits", "fitnet", "fakd", "dckd"])
def test_teaches_asid(tmp_path, method):
    training_step(tmp_path, method, "asid", teacher="a2n")


def test_attention_kd_says_a2n_has_no_usable_attention_map():
    # A2N's attention is spatial (pixel) attention; A-SKD compares channel-attention vectors or window maps.
    with pytest.raises(KdError, match="student 'a2n' has no channel-attention tap"):
        create_method("attention", create("a2n", 4, "tiny"), create("rcan", 4, "tiny"))


def test_runs_from_the_cli_with_fakd(tmp_path, monkeypatch):
    from kd.cli import main

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    code = main(["run", "--student", "a2n", "--student-preset", "tiny", "--teacher", "rcan", "--method", "fakd",
                 "--profile", "smoke", "--out-dir", str(tmp_path / "runs")])
    assert code == 0
    [run] = (tmp_path / "runs").glob("a2n-fakd-*")
    load_official(create("a2n", 4, "tiny"), torch.load(run / "student.pt", map_location="cpu", weights_only=True))


def test_batch_input_shape_is_checked():
    with pytest.raises(KdError, match="A2N expects"):
        create("a2n", 4, "tiny")(torch.rand(3, 7, 9))
