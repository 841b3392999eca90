"""KDSR (student `kdsr`, teacher `kdsr_teacher`): parameter counts, the fixtures' encoder features and KD loss,
official checkpoints, the HR the teacher needs, the stage-4 trunk transfer, taps and every method with KDSR."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from kd.errors import KdError
from kd.methods import create_method, list_methods
from kd.methods.pairing import body_stages, body_tail, pair_by_depth, tap_channels
from kd.models import capture, create, load_official
from kd.models.loading import identify_architecture
from seed_steps import parameters, training_step
from students.kdsr import kdsr_kd_loss, transfer_sr_trunk

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STUDENT_FIXTURE = "seed/kdsr_f16b2r1_x4.pt"
TEACHER_FIXTURE = "seed/kdsr_teacher_f16b2r1_x4.pt"


def _fixture(parity_dir: Path, name: str) -> dict:
    return torch.load(parity_dir / name, map_location="cpu", weights_only=True)


def _official(parity_dir: Path, name: str) -> torch.nn.Module:
    fixture = _fixture(parity_dir, name)
    return load_official(create(**fixture["config"]), fixture["state_dict"]).eval()


# SEED_NETWORKS.md section 10/11, computed with the official code: KDSR_S-M and KDSR_S-L at x4.
@pytest.mark.parametrize("arch,preset,official", [
    ("kdsr", "paper", 5_795_099), ("kdsr_teacher", "paper", 5_822_747),
    ("kdsr", "l", 14_191_003), ("kdsr_teacher", "l", 14_246_299),
])
def test_paper_presets_have_the_official_parameter_counts(arch, preset, official):
    assert parameters(arch, 4, preset) == official
    frozen = 2 * (9 + 3)  # the two MeanShift 1x1 convs
    assert parameters(arch, 4, preset, trainable=True) == official - frozen


def test_student_encoder_feature_degradation_and_kd_loss_match_the_fixture(parity_dir):
    fixture = _fixture(parity_dir, STUDENT_FIXTURE)
    student = _official(parity_dir, STUDENT_FIXTURE)
    with torch.no_grad(), capture(student, ["E_st.mlp", "E_st.compress"]) as feats:
        student(fixture["input"])
    torch.testing.assert_close(feats["E_st.mlp"], fixture["encoder_feature"], rtol=0, atol=1e-4)
    torch.testing.assert_close(feats["E_st.compress"], fixture["encoder_output"], rtol=0, atol=1e-4)
    loss = kdsr_kd_loss(feats["E_st.mlp"], fixture["teacher_encoder_feature"])
    assert loss.item() == pytest.approx(fixture["kd_loss"], abs=1e-4)


def test_teacher_encoder_feature_and_degradation_match_the_fixture(parity_dir):
    fixture = _fixture(parity_dir, TEACHER_FIXTURE)
    teacher = _official(parity_dir, TEACHER_FIXTURE)
    with torch.no_grad(), capture(teacher, ["E.mlp", "E.compress"]) as feats:
        teacher(fixture["input"], fixture["hr"])
    torch.testing.assert_close(feats["E.mlp"], fixture["encoder_feature"], rtol=0, atol=1e-4)
    torch.testing.assert_close(feats["E.compress"], fixture["encoder_output"], rtol=0, atol=1e-4)
    # The student fixture's KD target is this teacher's feature (same config, input and seed).
    student_fixture = _fixture(parity_dir, STUDENT_FIXTURE)
    torch.testing.assert_close(feats["E.mlp"], student_fixture["teacher_encoder_feature"], rtol=0, atol=1e-4)


def test_kd_loss_is_the_temperature_scaled_kl_and_detaches_the_teacher():
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 32, requires_grad=True), torch.randn(3, 32, requires_grad=True)
    p, q = F.softmax(teacher / 0.15, dim=1), F.log_softmax(student / 0.15, dim=1)
    expected = (p * (p.log() - q)).sum() / 3  # KL(teacher || student), summed over features, mean over the batch
    loss = kdsr_kd_loss(student, teacher)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert student.grad is not None and teacher.grad is None
    assert kdsr_kd_loss(student, student.detach()).item() == pytest.approx(0, abs=1e-6)
    with pytest.raises(KdError, match="same n_feats"):
        kdsr_kd_loss(student, torch.randn(3, 16))


def test_official_file_loads_and_a_wrong_scale_or_network_is_explained(parity_dir, tmp_path):
    fixture = _fixture(parity_dir, STUDENT_FIXTURE)
    path = tmp_path / "model_ST_last.pt"  # the official stage-4 script saves a raw state dict
    torch.save(fixture["state_dict"], path)
    model = load_official(create(**fixture["config"]), path).eval()
    with torch.no_grad():
        assert (model(fixture["input"]) - fixture["output"]).abs().max() <= 1e-4
    assert identify_architecture(fixture["state_dict"]) == "kdsr"

    with pytest.raises(KdError, match=r"checkpoint is x4: upsampler G.tail.0 has 2 stage.*model is x2"):
        load_official(create(**{**fixture["config"], "scale": 2}), path)
    teacher_sd = _fixture(parity_dir, TEACHER_FIXTURE)["state_dict"]
    assert identify_architecture(teacher_sd) == "kdsr_teacher"
    with pytest.raises(KdError, match=r"looks like a KDSR teacher checkpoint.*create\('kdsr_teacher'"):
        load_official(create(**fixture["config"]), teacher_sd)
    with pytest.raises(KdError, match=r"rgb_range 1, the model has rgb_range 255.*rgb_range=1"):
        load_official(create(**{**fixture["config"], "rgb_range": 255}), path)


def test_teacher_needs_the_hr_and_checks_its_size():
    teacher = create("kdsr_teacher", 4, "tiny").eval()
    lr = torch.rand(1, 3, 8, 12)
    with pytest.raises(KdError, match=r"needs the HR image.*model\(lr, hr\)"):
        teacher(lr)
    with pytest.raises(KdError, match=r"hr must be \(B, 3, 4h, 4w\) = \(1, 3, 32, 48\).*got \(1, 3, 16, 24\)"):
        teacher(lr, torch.rand(1, 3, 16, 24))
    with torch.no_grad():
        out = teacher(lr, torch.rand(1, 3, 32, 48))
    assert out.shape == (1, 3, 32, 48)


def test_teacher_encoder_sees_the_hr_in_pixel_unshuffle_order():
    torch.manual_seed(0)
    teacher = create("kdsr_teacher", 2, "tiny").eval()
    lr, hr = torch.rand(1, 3, 6, 5), torch.rand(1, 3, 12, 10)
    with torch.no_grad(), capture(teacher, ["E.E.0"]) as feats:
        teacher(lr, hr)
    first = teacher.E.E[0]
    # Channel 3 + c*4 + i*2 + j of the encoder input is hr[c, 2y + i, 2x + j] (torch PixelUnshuffle order).
    unshuffled = torch.stack([hr[0, c, i::2, j::2] for c in range(3) for i in range(2) for j in range(2)])
    expected = F.conv2d(torch.cat([lr[0], unshuffled])[None], first.weight, first.bias, padding=1)
    torch.testing.assert_close(feats["E.E.0"], expected, rtol=0, atol=1e-5)


def test_meanshift_is_frozen_and_the_range_is_one_by_default():
    student = create("kdsr", 4, "tiny")
    frozen = [n for n, p in student.named_parameters() if not p.requires_grad]
    assert frozen == ["G.sub_mean.weight", "G.sub_mean.bias", "G.add_mean.weight", "G.add_mean.bias"]
    assert student.rgb_range == 1.0
    with pytest.raises(KdError, match="'rgb_range' must be a positive number"):
        create("kdsr", 4, "tiny", rgb_range=0)
    with pytest.raises(KdError, match="'n_blocks' must be a positive integer"):
        create("kdsr", 4, "tiny", n_blocks=0)


def test_transfer_sr_trunk_copies_exactly_g_like_official_stage_4(tmp_path):
    torch.manual_seed(0)
    teacher, student = create("kdsr_teacher", 4, "tiny"), create("kdsr", 4, "tiny")
    encoder_before = {k: v.clone() for k, v in student.state_dict().items() if k.startswith("E_st.")}
    path = tmp_path / "model_TA_last.pt"
    torch.save(teacher.state_dict(), path)
    assert transfer_sr_trunk(path, student) is student
    after, source = student.state_dict(), teacher.state_dict()
    trunk = [k for k in after if k.startswith("G.")]
    assert trunk and all(torch.equal(after[k], source[k]) for k in trunk)
    assert all(torch.equal(after[k], v) for k, v in encoder_before.items())
    # What the official non-strict load does, for comparison: the same keys move, nothing else.
    reference = create("kdsr", 4, "tiny")
    result = reference.load_state_dict(teacher.state_dict(), strict=False)
    assert set(result.missing_keys) == set(encoder_before) and all(k.startswith("E.") for k in result.unexpected_keys)

    with pytest.raises(KdError, match="does not fit the student"):
        transfer_sr_trunk(create("kdsr_teacher", 4, "tiny", n_blocks=3).state_dict(), student)
    with pytest.raises(KdError, match="no 'G.\\*' keys"):
        transfer_sr_trunk(create("rcan", 4, "tiny").state_dict(), student)


def test_taps_pair_the_trunk_and_the_encoder_features_are_vectors():
    student = create("kdsr", 4, "tiny")
    assert body_stages(student) == ["G.body.0.body.0", "G.body.0.body.1"] and body_tail(student) == "G.body.1"
    with torch.device("meta"):
        paper = create("kdsr", 4, "paper")
    assert len(body_stages(paper)) == 53
    s_taps, t_taps = pair_by_depth(paper, create("rcan", 4, "tiny"), 3)
    assert s_taps == ["G.body.0.body.17", "G.body.0.body.35", "G.body.1"] and t_taps[-1] == "body.2"
    assert tap_channels(student, s_taps[-1:]) == {"G.body.1": 8}
    with pytest.raises(KdError, match=r"'E_st.mlp' .* is not a \(B, C, H, W\) map \(shape \(1, 32\)\)"):
        tap_channels(student, ["E_st.mlp"])


# --------------------------------------------------------------------------------------------- with every method


METHODS = [name for name, _ in list_methods() if name not in ("attention", "kdsr")]  # kdsr: test_method_kdsr


@pytest.mark.parametrize("method_name", METHODS)
def test_kdsr_student_trains_one_step_with_every_method(tmp_path, method_name):
    step = training_step(tmp_path, method_name, "kdsr", "rcan", scale=2)
    assert any(key.startswith("G.") for key in step.changed), step.changed  # the SR trunk learns, not only the encoder


@pytest.mark.parametrize("method_name", ["logits", "fitnet", "fakd", "dckd"])
def test_kdsr_student_network_teaches_one_step(tmp_path, method_name):
    training_step(tmp_path, method_name, "asid", "kdsr", scale=2)


def test_attention_says_kdsr_has_no_attention_maps():
    with pytest.raises(KdError, match="method 'attention' works with students asid"):
        create_method("attention", create("kdsr", 2, "tiny"), create("rcan", 2, "tiny"))


def test_kdsr_runs_as_a_student_from_the_cli(tmp_path, monkeypatch):
    from kd.cli import main

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    code = main(["run", "--profile", "smoke", "--student", "kdsr", "--student-preset", "tiny", "--method", "fitnet",
                 "--out-dir", str(tmp_path / "runs")])
    assert code == 0
    [run] = (tmp_path / "runs").glob("kdsr-fitnet-*")
    exported = torch.load(run / "student.pt", map_location="cpu", weights_only=True)
    load_official(create("kdsr", 4, "tiny"), exported, strict=True)


def test_list_models_says_the_teacher_needs_the_hr(capsys, monkeypatch):
    import kd.models
    from kd.cli import main

    kdsr_only = [e for e in kd.models.list_entries() if e.arch.startswith("kdsr")]
    monkeypatch.setattr(kd.models, "list_entries", lambda: kdsr_only)  # the other networks' rows cost seconds
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["list", "models"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("kdsr_teacher "))
    assert "needs the HR" in row and "model(lr, hr)" in row and "5,822,747" in row
