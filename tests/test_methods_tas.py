"""The `tas` method: its stage-1 run, the assistant's HR/2 input, maps on the student's grid, and both stages run
end to end with the assistant cached like a zoo teacher."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from kd.config import TrainConfig, parse_override
from kd.data.imresize import downscale_uint8
from kd.engine import Services, Trainer, execute_run
from kd.engine.batches import FixedBatch
from kd.errors import KdError
from kd.methods import create_method, loss_weights
from kd.methods.pairing import on_student_grid
from kd.methods.tas import TeacherAssistant
from kd.models import create
from kd.profiles import profile_layer, resolve_layers

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(*overrides: str, profile: str = "smoke"):
    layers = [profile_layer(profile), ("test", {"method": {"name": "tas"}})]
    return resolve_layers(layers + [(text, parse_override(text)) for text in overrides])


def test_stage_one_is_the_student_network_at_half_the_scale_on_the_same_hr_patches():
    config = _config("seed=3", "method.weights.kd=0.5", "method.rec=dct")
    stage = TeacherAssistant.teacher_run(config)
    assert (stage.scale, stage.train.lr_patch) == (2, 2 * config.train.lr_patch)  # same HR patch
    assert (stage.student.arch, stage.student.preset) == (config.student.arch, config.student.preset)
    assert (stage.teacher.arch, stage.teacher.preset, stage.teacher.train) == (
        config.teacher.arch, config.teacher.preset, config.teacher.train)
    assert stage.seed == config.teacher.seed == 0  # shared by every seed of a grid, like a zoo teacher
    assert (stage.method.name, stage.method.weights, stage.method.rec) == ("logits", {"kd": 0.5}, "dct")
    assert (stage.train.steps, stage.eval, stage.data) == (config.train.steps, config.eval, config.data)


def test_stage_one_takes_the_stage_methods_released_settings_for_its_teacher():
    stage = TeacherAssistant.teacher_run(_config("method.options.mode=size", "method.options.stage_method=dukd",
                                                 "method.options.assistant_arch=rcan",
                                                 "method.options.assistant_preset=tiny", "scale=2"))
    assert (stage.student.arch, stage.student.preset, stage.scale) == ("rcan", "tiny", 2)
    assert stage.method.options["zoom_in"] is True and stage.method.weights["up_in"] == 1.0  # DUKD's RCAN x2 release
    assert stage.train.lr_patch == _config().train.lr_patch  # mode size: same input


@pytest.mark.parametrize(("overrides", "message"), [
    (["scale=3"], "needs an even scale of at least 4"),
    (["scale=2"], "needs an even scale of at least 4"),
    (["teacher.ckpt=/x/RCAN_BIX4.pt"], "gives an x4 one: leave it out"),
    (["method.options.stage_method=dukd"], "stage method 'dukd' runs the teacher on inputs of its own"),
    (["method.options.stage_method=none"], "must be a distillation method other than tas"),
    (["method.options.stage_method=tas"], "must be a distillation method other than tas"),
    (["method.options.mode=size"], "needs the intermediate network"),
    (["method.options.assistant_arch=rcan"], "are for mode size"),
    (["method.options.mode=pixels"], "must be 'input'"),
])
def test_chains_that_cannot_work_are_refused_naming_the_option(overrides, message):
    with pytest.raises(KdError, match=message):
        TeacherAssistant.teacher_run(_config(*overrides))


def test_weights_follow_the_stage_method():
    from kd.engine.run import check_names

    check_names(_config("method.options.stage_method=fitnet", "method.weights.fd=0.2"))
    with pytest.raises(KdError, match="no loss term 'kd'"):
        check_names(_config("method.options.stage_method=fitnet", "method.weights.kd=0.2"))
    student, assistant = create("asid", 4, "tiny"), create("asid", 2, "tiny")
    method = create_method("tas", student, assistant, {"stage_method": "fitnet"})
    assert loss_weights("tas", {"fd": 0.2}, method) == {"rec": 1.0, "fd": 0.2}


def test_the_assistant_must_work_at_half_the_students_scale():
    with pytest.raises(KdError, match="an x2 network; got an x4 one"):
        create_method("tas", create("asid", 4, "tiny"), create("rcan", 4, "tiny"))


def test_maps_of_a_twice_larger_input_are_averaged_onto_the_student_grid():
    feat = torch.arange(2 * 6 * 6, dtype=torch.float32).reshape(1, 2, 6, 6)  # 2 x 2 LR, padded to 6 x 6
    grid = on_student_grid(feat, (2, 2), 2)
    assert grid.shape == (1, 2, 2, 2)
    assert grid[0, 0].tolist() == [[(0 + 1 + 6 + 7) / 4, (2 + 3 + 8 + 9) / 4], [(12 + 13 + 18 + 19) / 4,
                                                                               (14 + 15 + 20 + 21) / 4]]
    assert on_student_grid(feat, (3, 3), 1) is feat
    with pytest.raises(KdError, match="does not cover"):
        on_student_grid(feat, (4, 4), 2)


def _batch(scale: int = 4, size: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hr = torch.randint(0, 256, (2, 3, size * scale, size * scale), generator=g).float() / 255
    hr = F.avg_pool2d(F.pad(hr, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return F.avg_pool2d(hr, scale), (hr * 255).round() / 255


def test_in_training_the_assistant_sees_hr_over_two_and_its_maps_meet_the_students_on_one_grid(tmp_path):
    torch.manual_seed(0)
    student, assistant = create("asid", 4, "tiny"), create("asid", 2, "tiny")
    method = create_method("tas", student, assistant, {"stage_method": "fitnet"})
    seen = []
    assistant.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    lr, hr = _batch()
    trainer = Trainer(TrainConfig(steps=1, batch_size=2, lr_patch=12), student=student, teacher=assistant,
                      method=method, weights=loss_weights("tas", None, method), batches=FixedBatch(lr, hr),
                      run_dir=tmp_path, seed=0)
    terms = trainer.loss_terms(lr, hr)
    expected_input = downscale_uint8((hr * 255).round().to(torch.uint8), 2).float() / 255
    assert len(seen) == 1 and torch.equal(seen[0], expected_input) and seen[0].shape[-1] == 2 * lr.shape[-1]
    # the stage method on the same batch with the assistant's maps averaged onto the student's grid
    from kd.models import capture

    with torch.no_grad(), capture(assistant, method.teacher_taps, detach=True) as feats:
        teacher_out = assistant(expected_input)
    with capture(student, method.student_taps) as student_feats:
        student_out = student(lr)
    from kd.methods.base import StepInputs

    pooled = {tap: on_student_grid(value, (12, 12), 2) for tap, value in feats.items()}
    direct = method.stage.losses(StepInputs(lr, hr, student_out, teacher_out, dict(student_feats), pooled))
    assert terms.keys() == direct.keys() == {"rec", "fd"}
    assert terms["fd"].item() == pytest.approx(direct["fd"].item(), rel=1e-5)


# ------------------------------------------------------------------------------------------------ both stages


class ScaledBatches:
    """Synthetic (lr, hr) patches at the run's scale: HR = lr_patch x scale, LR its 8-bit bicubic downscale."""

    def __init__(self, scale: int, recipe: TrainConfig, seed: int) -> None:
        self.scale, self.recipe, self.seed, self.batch_size = scale, recipe, seed, recipe.batch_size

    def batch(self, step: int):
        g = torch.Generator().manual_seed(self.seed * 100_003 + step)
        side = self.recipe.lr_patch * self.scale
        hr = torch.randint(0, 256, (self.batch_size, 3, side, side), generator=g, dtype=torch.uint8)
        return downscale_uint8(hr, self.scale).float() / 255, hr.float() / 255

    def iterate(self, start: int, end: int):
        for step in range(start, end):
            yield self.batch(step)


def _evaluate(model, datasets, scale, **kwargs):
    lr, hr = ScaledBatches(scale, TrainConfig(batch_size=1, lr_patch=12), 99).batch(0)
    with torch.no_grad():
        psnr = float(-10 * torch.log10(((model(lr).clamp(0, 1) - hr) ** 2).mean()))
    rows = [{"dataset": name, "psnr_y": psnr, "ssim_y": 0.5, "lpips": float("nan")} for name in datasets]
    return SimpleNamespace(per_dataset=pd.DataFrame(rows), per_image=pd.DataFrame(rows))


SERVICES = Services(make_batches=lambda config, recipe, *, seed, **_: ScaledBatches(config.scale, recipe, seed),
                    evaluate=_evaluate)
FAST = ("train.steps=2", "teacher.train.steps=2", "train.lr_patch=12", "eval.val_dataset=null")


def test_both_stages_are_runs_and_every_seed_shares_one_cached_assistant(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    first = execute_run(_config(*FAST), out_dir=tmp_path / "runs", services=SERVICES, progress=False)
    assistants = sorted((tmp_path / "cache" / "assistants").glob("*/summary.json"))
    assert len(assistants) == 1
    stage = json.loads(assistants[0].read_text())
    assert (stage["student"], stage["scale"], stage["method"], stage["seed"]) == ("asid", 2, "logits", 0)
    teacher = first.summary["teacher"]
    assert teacher["source"] == "assistant" and teacher["run_id"] == assistants[0].parent.name
    assert (teacher["arch"], teacher["preset"], teacher["assistant"]["scale"]) == ("rcan", "tiny", 2)
    assert "eval" not in teacher  # the assistant's x2 scores are no x4 teacher's
    inputs = json.loads((first.run_dir / "inputs.json").read_text())["teacher"]
    assert inputs["run"] == assistants[0].parent.name and len(inputs["sha256"]) == 64
    # the zoo holds the x2 teacher of stage 1 only: no x4 teacher is trained for a TAS run
    assert [p.parent.name.split("-")[2] for p in (tmp_path / "cache" / "teachers").glob("*/teacher.pt")] == ["x2"]

    second = execute_run(_config(*FAST, "seed=1"), out_dir=tmp_path / "runs", services=SERVICES, progress=False)
    assert not second.already_finished and second.summary["teacher"]["run_id"] == teacher["run_id"]
    assert len(list((tmp_path / "cache" / "assistants").glob("*/summary.json"))) == 1
    again = execute_run(_config(*FAST), out_dir=tmp_path / "runs", services=SERVICES, progress=False)
    assert again.already_finished and again.run_dir == first.run_dir


def test_a_tas_run_refuses_networks_given_as_objects(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(KdError, match="give them by name"):
        execute_run(_config(*FAST), out_dir=tmp_path / "runs", services=SERVICES, progress=False,
                    teacher=create("asid", 2, "tiny"))
    assert not (tmp_path / "cache").exists()


def test_a_dry_run_plans_the_assistant_and_its_teacher_once_for_all_seeds(tmp_path, monkeypatch, capsys):
    from kd.cli import main

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    argv = ["sweep", "--teachers", "rcan", "--methods", "logits,tas", "--seeds", "0,1", "--profile", "cpu",
            "--out-dir", str(tmp_path / "runs"), "--dry-run"]
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.count("teacher assistant asid-logits-rcan-x2-cpu-s0-? (asid x2 from rcan x2 by logits, 1000 "
                     "steps) is not cached: trained first") == 1
    assert "teacher rcan-mini-x2-" in out and "teacher rcan-mini-x4-" in out  # stage 1's and logits' teachers
    # the x4 teacher of logits is committed (reports/teachers): named as importable, not counted as a training
    assert "for 4 cell(s) to run and 2 teacher(s) and assistant(s)" in out
    assert "(teachers that can be imported not counted)" in out
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache" / "assistants").exists()


def test_a_dry_run_plans_an_assistant_whose_teacher_and_data_are_there(tmp_path, monkeypatch, capsys):
    from kd.cli import main

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    assert main(["teacher", "train", "--teacher", "rcan", "--scale", "2", "--profile", "smoke", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["sweep", "--teachers", "rcan", "--methods", "tas", "--profile", "smoke", "--out-dir",
                 str(tmp_path / "runs"), "--dry-run"]) == 0  # the assistant's id is known: no '-?'
    out = " ".join(capsys.readouterr().out.split())
    assert re.search(r"teacher assistant asid-logits-rcan-x2-smoke-s0-[0-9a-f]{8} \(asid x2", out), out


def test_a_tas_step_is_estimated_with_the_assistant_on_its_twice_larger_input(tmp_path, monkeypatch):
    from kd.results.sweep import REFERENCE_PIXELS, StepTimes

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    times = StepTimes(tmp_path / "runs")
    config = _config(profile="cpu")
    seconds, source = times.per_step(config)
    pixels = config.train.batch_size * config.train.lr_patch ** 2 / REFERENCE_PIXELS
    student = times._network_seconds("asid", "paper", 4, backward=True)
    assistant = times._network_seconds("asid", "paper", 2, backward=False)
    assert source == "rough" and seconds == pytest.approx(pixels * (student + 4 * assistant))
