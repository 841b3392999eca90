"""EDSR: parity with the official implementation, presets of the published pairs, official key names, as a student."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kd.errors import KdError
from kd.models import create, load_official
from kd.models.loading import identify_architecture

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name", ["edsr_b4f16_x2.pt", "edsr_b4f16_x4.pt"])
def test_matches_official_output(name):
    fixture = torch.load(FIXTURES / name, map_location="cpu", weights_only=True)
    model = create(**fixture["config"])
    assert set(model.state_dict()) == set(fixture["state_dict"])
    load_official(model, fixture["state_dict"], strict=True).eval()
    with torch.no_grad():
        output = model(fixture["input"])
    assert output.shape == fixture["output"].shape
    assert (output - fixture["output"]).abs().max().item() <= 1e-4


def _count(preset: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in create("edsr", 4, preset).parameters())


def test_presets_match_published_sizes():
    assert round(_count("paper") / 1e6, 1) == 43.1  # EDSR x4 (Lim et al., Table 1)
    assert round(_count("baseline") / 1e6, 1) == 1.5  # EDSR-baseline x4
    resblock = 2 * (64 * 64 * 9 + 64)
    assert _count("c64b32") - _count("baseline") == 16 * resblock  # the DUKD student: 16 more blocks, same width


def test_official_key_names_and_fingerprint():
    sd = create("edsr", 3, "tiny").state_dict()
    assert {"sub_mean.weight", "head.0.weight", "body.0.body.0.weight", "body.0.body.2.weight", "body.2.weight",
            "tail.0.0.weight", "tail.1.weight", "add_mean.bias"} <= set(sd)
    assert identify_architecture(sd) == "edsr"
    assert identify_architecture(create("rcan", 3, "tiny").state_dict()) == "rcan"


def test_wrong_scale_checkpoint_is_explained():
    with pytest.raises(KdError, match="checkpoint is x2.*model is x4"):
        load_official(create("edsr", 4, "tiny"), create("edsr", 2, "tiny").state_dict())


def test_student_presets_of_the_published_pairs():
    with torch.device("meta"):
        rcan = create("rcan", 4, "10x6")
        swinir = create("swinir", 4, "e60")
    assert round(sum(p.numel() for p in rcan.parameters()) / 1e6, 2) == 5.17  # DCKD Table 1 / FAKD Table 3
    assert round(sum(p.numel() for p in swinir.parameters()) / 1e6, 1) == 1.2  # DCKD Table 1


def test_edsr_trains_as_a_student_from_the_cli(tmp_path, monkeypatch):
    from kd.cli import main

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    code = main(["run", "--profile", "smoke", "--student", "edsr", "--student-preset", "tiny", "--method", "fitnet",
                 "--out-dir", str(tmp_path / "runs")])
    assert code == 0
    [run] = (tmp_path / "runs").glob("edsr-fitnet-*")
    exported = torch.load(run / "student.pt", map_location="cpu", weights_only=True)
    load_official(create("edsr", 4, "tiny"), exported, strict=True)


def test_list_models_shows_the_extra_presets(capsys, monkeypatch):
    from kd.cli import main

    monkeypatch.setenv("COLUMNS", "250")
    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    assert "c64b32=2.70M, baseline=1.52M" in out and "10x6=5.17M" in out and "e60=1.24M" in out
