"""The KDSR method (kd/methods/kdsr.py): its KL term by hand and against the official fixture, the SR trunk taken
from the teacher, the pair it accepts, a training step from the HR-fed teacher, and a blind-SR smoke run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from kd.config import TrainConfig
from kd.engine import Trainer
from kd.engine.batches import FixedBatch
from kd.errors import KdError
from kd.methods import StepInputs, create_method, loss_weights
from kd.models import create, load_official
from seed_steps import smooth_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCALE = 4


def _pair(preset: str = "tiny", seed: int = 0):
    torch.manual_seed(seed)
    return create("kdsr", SCALE, preset), create("kdsr_teacher", SCALE, preset)


def _trainer(tmp_path, student, teacher, lr_batch, hr_batch, **train) -> Trainer:
    method = create_method("kdsr", student, teacher)
    recipe = TrainConfig(**{"steps": 1, "batch_size": lr_batch.shape[0], "lr_patch": lr_batch.shape[-1],
                            "lr": 1e-3, "schedule": "constant", "log_every": 1, "val_every": 0, **train})
    return Trainer(recipe, student=student, teacher=teacher, method=method, weights=loss_weights("kdsr"),
                   batches=FixedBatch(lr_batch, hr_batch), run_dir=tmp_path, seed=0)


def test_kd_term_is_the_temperature_scaled_kl_computed_by_hand():
    student, teacher = _pair()
    method = create_method("kdsr", student, teacher)
    t = 0.15
    # teacher logits / T = (ln 3, 0): softmax (3/4, 1/4); student logits equal: softmax (1/2, 1/2)
    teacher_feature = torch.tensor([[t * math.log(3.0), 0.0], [0.0, 0.0]])
    student_feature = torch.zeros(2, 2, requires_grad=True)
    lr, hr = smooth_batch(SCALE, size=12)
    inputs = StepInputs(lr, hr, hr.clone(), None, {"E_st.mlp": student_feature}, {"E.mlp": teacher_feature})
    terms = method.losses(inputs)
    row0 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # KL(teacher || student), row 0
    assert terms["kd"].item() == pytest.approx(row0 / 2, abs=1e-7)  # batchmean: row 1 is 0
    assert terms["rec"].item() == pytest.approx(0.0)  # student output = HR
    terms["kd"].backward()
    assert student_feature.grad.abs().sum() > 0
    assert loss_weights("kdsr") == {"rec": 1.0, "kd": 1.0}
    warmer = create_method("kdsr", *_pair(), {"temperature": 1.0})
    assert warmer.losses(inputs)["kd"].item() < terms["kd"].item()  # T scales the logits before the softmax


def test_kd_term_of_a_training_step_matches_the_official_fixture(parity_dir, tmp_path):
    """The trainer's own forward passes (student on the LR, teacher fed the HR, taps captured) give the official
    stage-4 KL of the fixture networks."""
    def official(name: str):
        fixture = torch.load(parity_dir / "seed" / name, map_location="cpu", weights_only=True)
        return load_official(create(**fixture["config"]), fixture["state_dict"]), fixture

    student, student_fixture = official("kdsr_f16b2r1_x4.pt")
    teacher, teacher_fixture = official("kdsr_teacher_f16b2r1_x4.pt")
    lr, hr = student_fixture["input"], teacher_fixture["hr"]
    trainer = _trainer(tmp_path, student, teacher, lr, hr)
    terms = trainer.loss_terms(lr, hr)  # the student encoder is untouched by the trunk transfer
    assert terms["kd"].item() == pytest.approx(student_fixture["kd_loss"], abs=1e-4)


def test_the_student_starts_from_the_teachers_sr_trunk_and_its_own_encoder():
    student, teacher = _pair()
    encoder = {k: v.clone() for k, v in student.state_dict().items() if k.startswith("E_st.")}
    assert not torch.equal(student.state_dict()["G.head.0.weight"], teacher.state_dict()["G.head.0.weight"])
    create_method("kdsr", student, teacher)
    for key, value in student.state_dict().items():
        if key.startswith("G."):
            assert torch.equal(value, teacher.state_dict()[key]), key
        else:
            assert torch.equal(value, encoder[key]), key


def test_only_its_own_pair_with_one_trunk_is_accepted():
    with pytest.raises(KdError, match="student kdsr and teacher kdsr_teacher only"):
        create_method("kdsr", create("asid", SCALE, "tiny"), create("rcan", SCALE, "tiny"))
    with pytest.raises(KdError, match="student kdsr and teacher kdsr_teacher only"):
        create_method("kdsr", create("kdsr", SCALE, "tiny"), create("rcan", SCALE, "tiny"))
    with pytest.raises(KdError, match="same scale, n_feats, n_blocks, rgb_range"):
        create_method("kdsr", create("kdsr", SCALE, "tiny"), create("kdsr_teacher", SCALE, "mini"))
    with pytest.raises(KdError, match="temperature must be positive"):
        create_method("kdsr", *_pair(), {"temperature": 0})


def test_a_step_trains_the_student_from_the_hr_fed_teacher_which_stays_frozen(tmp_path):
    student, teacher = _pair()
    lr, hr = smooth_batch(SCALE, size=12)
    trainer = _trainer(tmp_path, student, teacher, lr, hr, steps=8, lr=2e-3)
    seen = []
    teacher.register_forward_hook(lambda module, args, out: seen.append(len(args)))
    frozen = {k: v.clone() for k, v in teacher.state_dict().items()}
    history = [trainer.train_step(lr, hr) for _ in range(8)]
    assert seen == [2] * 8  # model(lr, hr) every step
    assert history[-1]["kd"] < history[0]["kd"] and history[-1]["loss"] < history[0]["loss"]
    assert all(torch.equal(v, frozen[k]) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in student.named_parameters()
               if n.startswith("E_st."))


def test_a_step_under_bf16_autocast_and_a_bf16_teacher(tmp_path):
    from kd.config import AccelConfig
    from kd.engine.accel import plan_accel

    student, teacher = _pair()
    lr, hr = smooth_batch(SCALE, size=12)
    plan = plan_accel(AccelConfig(precision="bf16", teacher_dtype="bf16"), "cpu", taps=True)
    plan.network(teacher, frozen_teacher=True)
    trainer = _trainer(tmp_path, student, teacher, lr, hr)
    trainer.accel = plan
    values = trainer.train_step(lr, hr)  # the HR reaches the bf16 teacher in its dtype
    assert all(math.isfinite(v) for v in values.values()) and values["kd"] > 0


def test_smoke_run_on_the_blind_sr_track(tmp_path, monkeypatch, capsys):
    """The issue's command with tiny presets: the teacher trains in the zoo (fed the HR), the student distils from
    it on Gaussian-blurred patches, the evaluation is Gaussian8 and the run id names the track."""
    from kd.cli import main

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    argv = ["run", "--student", "kdsr", "--teacher", "kdsr_teacher", "--method", "kdsr", "--profile", "smoke",
            "--set", "data.degradation=iso_gaussian", "--out-dir", str(tmp_path / "runs"), "--threads", "1",
            "--set", "eval.val_dataset=null"]  # each Gaussian8 evaluation costs 8: the final ones suffice here
    assert main(argv) == 0
    out = capsys.readouterr()
    [run] = (tmp_path / "runs").glob("kdsr-kdsr-kdsr_teacher-x4-smoke-iso_gaussian-s0-*")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["degradation"] == "iso_gaussian" and summary["teacher"]["sees_hr"] is True
    assert "-iso_gaussian-" in summary["teacher"]["key"]
    assert summary["inputs"]["degradation"]["name"] == "iso_gaussian"
    rows = (run / "eval" / "per_image.csv").read_text().splitlines()[1:]
    kernels = [f"iso_gaussian sigma{s:g}" for s in (1.8, 2.0, 2.2, 2.4, 2.6, 2.8, 3.0, 3.2)]
    assert sorted({row.split(",")[-1] for row in rows}) == sorted(kernels) and len(rows) % 8 == 0
    health = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    ratio = next(r["health"]["kd"] for r in health if "health" in r)
    assert 0.05 < ratio <= 5
    assert "blind SR: iso_gaussian" in out.out and "the teacher sees the HR image" in " ".join(out.out.split())

    from kd.report import _intro
    from kd.report.runs import scan_runs
    from kd.report.tables import comparison_table, configuration_names, configurations

    runset = scan_runs(tmp_path / "runs")
    assert "kdsr_teacher (tiny) sees the HR image" in " ".join(_intro(runset, comparison_table(runset)))
    [name] = configuration_names(configurations(runset.runs)).values()
    assert name.endswith("blind SR: iso_gaussian")


def test_list_methods_shows_kdsr(capsys):
    from kd.cli import main

    assert main(["list", "methods"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "kdsr" in text and "KDSR (blind SR)" in text and "kdsr_teacher only" in text


def test_the_kdsr_table_and_its_miniature(tmp_path):
    """`kdbench paper kdsr`: published Table 1 with the commands that fill it, and the miniature: the gain of the
    KD term, paired by seed over the same student with that term at 0, on the blind-SR track only."""
    import pandas as pd

    from kd.report.miniature import KDSR, build_miniature
    from kd.report.paper import Measured, paper_table, to_text
    from kd.report.runs import Run, RunSet

    pair = KDSR.pairs[0]

    def run(seed: int, kd: float, set5: float, degradation: str = "iso_gaussian") -> Run:
        summary = {"run_id": f"kdsr-{kd}-{degradation}-s{seed}", "student": "kdsr", "student_preset": "mini",
                   "method": "kdsr", "scale": 4, "seed": seed, "profile": "cpu", "degradation": degradation,
                   "loss_weights": {"rec": 1.0, "kd": kd},
                   "teacher": {"arch": "kdsr_teacher", "preset": "mini", "eval": {"Set5": {"psnr_y": 30.0}}},
                   "datasets": {"Set5": {"psnr_y": set5}}}
        return Run(Path("runs") / summary["run_id"], summary)

    off = {0: 27.0, 1: 27.2, 2: 26.9}
    runs = [run(s, 0.0, p) for s, p in off.items()] + [run(s, 1.0, p + 0.1 + 0.01 * s) for s, p in off.items()]
    bicubic_track = [run(s, 1.0, 35.0, "bicubic") for s in off]  # other track: never paired with these
    mini = build_miniature(RunSet(runs + bicubic_track, pd.DataFrame()), KDSR)
    gain = mini.ours[("KDSR", "kdsr", "Set5")]
    assert gain.n == 3 and gain.mean == pytest.approx(0.11) and gain.low > 0
    assert not mini.missing and not mini.warnings
    assert mini.finding().startswith("Gains over KD term off in the miniature: KDSR from KDSR on Set5 +0.110 ±")
    only_kd = build_miniature(RunSet(runs[3:], pd.DataFrame()), KDSR)
    assert only_kd.missing == [KDSR.sweep_commands(pair)[1]] and "method.weights.kd=0" in only_kd.missing[0]

    empty = Measured(pd.DataFrame(columns=["arch", "preset", "scale", "dataset_key", "psnr", "ssim"]),
                     pd.DataFrame(columns=["arch", "preset", "method", "teacher", "scale", "dataset_key", "psnr",
                                           "ssim"]), miniature=RunSet(runs, pd.DataFrame()))
    text = to_text(paper_table("kdsr", measured=empty), "markdown")
    assert "32.02/0.8892" in text and "30.99/0.9069" in text  # KDSR_S-M Set5, KDSR_S-L Manga109
    assert "--degradation iso_gaussian" in text and "--set data.degradation=iso_gaussian" in text
    assert text.index("in miniature") < text.index("Table 1: blind SR")

    # our cell: a paper-profile KDSR_S-M run on Gaussian8 (a bicubic-track run of the same network is not one)
    students = pd.DataFrame([{"arch": "kdsr", "preset": "paper", "method": "kdsr", "teacher": "kdsr_teacher",
                              "scale": 4, "dataset_key": "Set5", "psnr": p, "ssim": 0.88, "profile": "paper",
                              "degradation": d} for p, d in ((31.9, "iso_gaussian"), (36.0, "bicubic"))])
    measured = Measured(empty.models, students)
    cell = next(c for c in paper_table("kdsr", measured=measured).cells
                if c.row == ("x4", "KDSR_S-M") and c.column == "Set5")
    assert cell.ours.psnr == pytest.approx(31.9) and cell.delta == pytest.approx(31.9 - 32.02)


def test_the_printed_sweeps_plan_the_miniature_with_its_teacher(tmp_path, monkeypatch):
    """The two sweeps `kdbench paper kdsr` prints make the runs its miniature reads: KDSR and KD term off, on the
    blind-SR track, from the zoo's kdsr_teacher (trained first, with a time estimate)."""
    import shlex

    from kd.cli import build_parser
    from kd.cli.sweep_cmd import grid_layers
    from kd.report.miniature import KDSR
    from kd.results.sweep import StepTimes, expand_grid, parse_ints, plan_sweep, teachers_to_train

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    commands = KDSR.sweep_commands(KDSR.pairs[0])
    kd_weights = []
    for command in commands:
        argv = shlex.split(command)
        args = build_parser().parse_args([*argv[1:], "--data-root", str(tmp_path)])
        _, layers, _ = grid_layers(args)
        cells = expand_grid([args.students], [args.teachers], args.methods.split(","), [4],
                            parse_ints(args.seeds, "--seeds"))
        plans = plan_sweep(cells, layers, args.overrides, tmp_path / "runs")
        assert [p.status for p in plans] == ["new"] * len(KDSR.seeds) and all(p.est_seconds > 0 for p in plans)
        for plan in plans:
            config = plan.config
            assert (config.profile, config.data.degradation, config.method.name) == ("cpu", "iso_gaussian", "kdsr")
            assert (config.student.arch, config.student.preset) == ("kdsr", "mini")
            assert (config.teacher.arch, config.teacher.preset) == ("kdsr_teacher", "mini")
            assert "-iso_gaussian-" in plan.run_id
        kd_weights.append({plan.config.method.weights.get("kd", 1.0) for plan in plans})
        [teacher] = teachers_to_train(plans, StepTimes(tmp_path / "runs"))
        assert teacher.key.startswith("kdsr_teacher-mini-x4-291-train-iso_gaussian-seed0-") and teacher.seconds > 0
    assert kd_weights == [{1.0}, {0.0}]
