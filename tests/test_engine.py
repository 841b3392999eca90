"""Trainer and run records on toy networks and synthetic patches (fast; no dataset needed)."""

from __future__ import annotations

import json
import os
import signal
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from kd.cli import main
from kd.config import TrainConfig, from_dict, parse_override, read_config_file, resolve, run_id
from kd.engine import Services, Trainer, TrainingDiverged, TrainingInterrupted, execute_run
from kd.engine.checkpoint import load_checkpoint
from kd.engine.run import locate_run
from kd.engine.ema import ModelEma
from kd.engine.schedule import lr_at
from kd.errors import KdError
from kd.methods import create_method, loss_weights
from kd.methods.base import Distiller
from kd.models import ModelEntry
from kd.profiles import profile_layer

SCALE = 2


class ToySR(nn.Module):
    def __init__(self, scale: int = SCALE, width: int = 6, stages: int = 3) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, width, 3, padding=1)
        self.body = nn.Sequential(*[nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
                                    for _ in range(stages)])
        self.tail = nn.Sequential(nn.Conv2d(width, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))
        self.scale = scale

    def forward(self, x):
        base = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return base + self.tail(self.body(self.head(x)))


TOYS = {"toy_student": (4, 3), "toy_teacher": (8, 5)}


@pytest.fixture
def toy_models(monkeypatch):
    """Register toy student/teacher networks for one test only (the shared registry is restored after)."""
    from kd.models import registry

    registry.list_entries()  # load the built-in networks first
    for name, (width, stages) in TOYS.items():
        entry = ModelEntry(arch=name, role="student" if "student" in name else "teacher",
                           builder=lambda scale, width=width, stages=stages: ToySR(scale, width, stages),
                           presets={"paper": {}, "mini": {}, "tiny": {}}, scales=(2, 3, 4))
        monkeypatch.setitem(registry._ENTRIES, name, entry)


class SyntheticBatches:
    """Batch k is a pure function of (seed, k), like the real patch pipeline."""

    def __init__(self, batch_size: int = 2, patch: int = 8, seed: int = 0, stop_after: int | None = None,
                 on_step=None) -> None:
        self.batch_size, self.patch, self.seed = batch_size, patch, seed
        self.stop_after, self.on_step = stop_after, on_step

    def batch(self, step: int):
        g = torch.Generator().manual_seed(self.seed * 100_003 + step)
        hr = torch.rand(self.batch_size, 3, self.patch * SCALE, self.patch * SCALE, generator=g)
        hr = F.avg_pool2d(F.pad(hr, (1, 1, 1, 1), mode="replicate"), 3, stride=1)  # smooth: learnable
        return F.avg_pool2d(hr, SCALE), hr

    def iterate(self, start: int, end: int):
        for step in range(start, end):
            if self.stop_after is not None and step >= self.stop_after:
                raise RuntimeError("simulated crash")
            if self.on_step:
                self.on_step(step)
            yield self.batch(step)


def fake_evaluate(model, datasets, scale, **kwargs):
    data = SyntheticBatches(batch_size=3, patch=6, seed=99)
    rows, images = [], []
    with torch.no_grad():
        for dataset in datasets:
            lr, hr = data.batch(len(dataset))
            mse = ((model(lr).clamp(0, 1) - hr) ** 2).mean(dim=(1, 2, 3))
            psnr = (10 * torch.log10(1 / mse)).tolist()
            images += [{"dataset": dataset, "image": f"im{i}", "psnr_y": p} for i, p in enumerate(psnr)]
            rows.append({"dataset": dataset, "psnr_y": sum(psnr) / len(psnr), "ssim_y": 0.5, "lpips": float("nan")})
    return SimpleNamespace(per_dataset=pd.DataFrame(rows), per_image=pd.DataFrame(images))


def _trainer(tmp_path, method_name="fitnet", steps=8, batches=None, seed=0, **train):
    torch.manual_seed(1000)
    teacher = ToySR(width=8, stages=5)  # the same teacher in every trainer, as a cached teacher would be
    torch.manual_seed(seed)
    student = ToySR(width=4)
    method = create_method(method_name, student, teacher if method_name != "none" else None)
    recipe = TrainConfig(**{"steps": steps, "batch_size": 2, "lr": 1e-2, "log_every": 1, "ckpt_every": 2,
                            "val_every": 4, "schedule": "multistep", "milestones": [0.5], **train})
    trainer = Trainer(recipe, student=student, teacher=teacher, method=method, weights=loss_weights(method_name),
                      batches=batches or SyntheticBatches(), run_dir=tmp_path, seed=seed,
                      validate=lambda m: float(fake_evaluate(m, ["v"], SCALE).per_dataset["psnr_y"][0]))
    return trainer


def _losses(trainer):
    return [{k: v for k, v in r.items() if not k.endswith("_time")} for r in trainer.log.records()]


@pytest.mark.parametrize("method_name", ["logits", "fitnet"])
def test_teacher_is_frozen_bit_identical(tmp_path, method_name):
    trainer = _trainer(tmp_path, method_name, steps=6, ema_decay=0.9)
    before = {k: v.clone() for k, v in trainer.teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in trainer.student.state_dict().items()}
    trainer.fit()
    assert all(torch.equal(before[k], v) for k, v in trainer.teacher.state_dict().items())
    assert not trainer.teacher.training
    assert all(not p.requires_grad for p in trainer.teacher.parameters())
    assert any(not torch.equal(student_before[k], v) for k, v in trainer.student.state_dict().items())


def test_loss_decreases_and_terms_are_logged(tmp_path):
    trainer = _trainer(tmp_path, "logits", steps=30, ckpt_every=30, val_every=0)
    trainer.fit()
    records = [r for r in trainer.log.records() if "loss" in r]
    assert [r["step"] for r in records] == list(range(1, 31))
    assert set(records[0]["terms"]) == {"rec", "kd"}
    assert records[0]["loss"] == pytest.approx(records[0]["terms"]["rec"] + records[0]["terms"]["kd"], rel=1e-6)
    assert sum(r["loss"] for r in records[-5:]) < sum(r["loss"] for r in records[:5])
    assert records[0]["lr"] == 1e-2 and records[-1]["lr"] == pytest.approx(5e-3)


def test_crash_and_resume_is_bitwise_identical(tmp_path):
    reference = _trainer(tmp_path / "a", ema_decay=0.9)
    reference.fit()
    crashed = _trainer(tmp_path / "b", ema_decay=0.9, batches=SyntheticBatches(stop_after=5))
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit()
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["step"] == 4
    resumed = _trainer(tmp_path / "b", ema_decay=0.9, seed=123)  # fresh objects, other init: all state comes from disk
    outcome = resumed.fit()
    assert outcome.resumed_from == 4
    for name, value in reference.student.state_dict().items():
        assert torch.equal(value, resumed.student.state_dict()[name]), name
    for name, value in reference.ema.module.state_dict().items():
        assert torch.equal(value, resumed.ema.module.state_dict()[name]), name
    for name, value in reference.method.state_dict().items():
        assert torch.equal(value, resumed.method.state_dict()[name]), name
    assert _losses(resumed) == _losses(reference)


def test_same_seed_same_metrics(tmp_path):
    a, b = _trainer(tmp_path / "a"), _trainer(tmp_path / "b")
    a.fit()
    b.fit()
    assert _losses(a) == _losses(b)


class ExplodingMethod(Distiller):
    name = "exploding"
    needs_teacher = False
    default_weights = {"rec": 1.0, "bad": 1.0}

    def __init__(self, student, teacher, options=None):
        super().__init__(student, teacher, options)
        self.calls = 0

    def losses(self, inputs):
        self.calls += 1
        bad = torch.tensor(float("nan") if self.calls == 3 else 0.0)
        return {"rec": F.l1_loss(inputs.student_out, inputs.hr), "bad": bad}


def test_nan_stops_naming_step_and_term(tmp_path):
    student = ToySR(width=4)
    method = ExplodingMethod(student, None)
    recipe = TrainConfig(steps=6, batch_size=2, ckpt_every=1, log_every=1)
    trainer = Trainer(recipe, student=student, teacher=None, method=method, weights=dict(method.default_weights),
                      batches=SyntheticBatches(), run_dir=tmp_path, seed=0)
    with pytest.raises(TrainingDiverged) as info:
        trainer.fit()
    assert "step 3" in str(info.value) and "'bad'" in str(info.value) and "nan" in str(info.value)
    # The step-2 weights produced the NaN at step 3: the checkpoint before them is the one kept.
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 1
    assert "step 1" in str(info.value)


def test_ctrl_c_saves_and_stops_cleanly(tmp_path):
    def interrupt(step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    trainer = _trainer(tmp_path, "logits", batches=SyntheticBatches(on_step=interrupt))
    with pytest.raises(TrainingInterrupted) as info:
        trainer.fit()
    assert info.value.step == 4  # the step in flight completes, then the run checkpoints and stops
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 4
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    resumed = _trainer(tmp_path, "logits")
    assert resumed.fit().resumed_from == 4
    reference = _trainer(tmp_path / "ref", "logits")
    reference.fit()
    assert _losses(resumed) == _losses(reference)


def test_schedules():
    multistep = TrainConfig(steps=100, lr=1.0, schedule="multistep", milestones=[0.5, 75], gamma=0.1)
    assert [lr_at(multistep, s) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cosine = TrainConfig(steps=100, lr=1.0, schedule="cosine", min_lr=0.2)
    assert lr_at(cosine, 0) == pytest.approx(1.0)
    assert lr_at(cosine, 50) == pytest.approx(0.6)
    assert lr_at(cosine, 100) == pytest.approx(0.2)


def test_ema_follows_its_formula():
    net = nn.Linear(2, 2)
    ema = ModelEma(net, decay=0.5)
    start = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net)  # first update: d = min(0.5, 2/11)
    d = 2 / 11
    assert torch.allclose(ema.module.weight, d * start + (1 - d) * net.weight)


# ------------------------------------------------------------------------------------------------ run records

def _run_config(*overrides, method="fitnet"):
    layers = [profile_layer("smoke"),
              ("test", {"student": {"arch": "toy_student"}, "teacher": {"arch": "toy_teacher"}, "scale": SCALE,
                        "method": {"name": method}, "eval": {"datasets": ["SetA", "SetB"], "val_dataset": "SetA"}})]
    layers += [(o, parse_override(o)) for o in overrides]
    return resolve(layers)


def _services():
    return Services(make_batches=lambda config, train, seed, **_: SyntheticBatches(train.batch_size, 8, seed),
                    evaluate=fake_evaluate)


def test_run_writes_a_complete_record_and_reports_when_finished(tmp_path, monkeypatch, toy_models):
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    config = _run_config()
    record = execute_run(config, out_dir=tmp_path / "runs", services=_services(), progress=False)
    run_dir = locate_run(config, tmp_path / "runs", _services())
    assert record.run_dir == run_dir and not record.already_finished
    for name in ("config.yaml", "environment.json", "metrics.jsonl", "student.pt", "summary.json",
                 "checkpoints/last.pt", "checkpoints/best.pt", "eval/per_image.csv", "eval/per_dataset.csv",
                 "eval/spec.json"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == "fitnet" and summary["teacher"]["source"] == "zoo"
    assert summary["steps"] == 6 and summary["params"] == sum(p.numel() for p in ToySR(width=4).parameters())
    assert set(summary["datasets"]) == {"SetA", "SetB"} and summary["datasets"]["SetA"]["lpips"] is None
    # the exported student has the network's own keys: no adapters
    exported = torch.load(run_dir / "student.pt", weights_only=True)
    assert set(exported["state_dict"]) == set(ToySR(width=4).state_dict())
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["packages"]["torch"] == torch.__version__.split("+")[0] or env["packages"]["torch"]
    # the saved config reproduces the run id; the same command reports the finished run
    assert run_id(from_dict(read_config_file(run_dir / "config.yaml"))) == run_id(config)
    again = execute_run(config, out_dir=tmp_path / "runs", services=_services(), progress=False)
    assert again.already_finished and again.summary == record.summary
    # the teacher was trained once into the zoo and is reused by another method
    zoo = list((tmp_path / "cache" / "teachers").glob("*/teacher.pt"))
    assert len(zoo) == 1
    logits = execute_run(_run_config(method="logits"), out_dir=tmp_path / "runs", services=_services(),
                         progress=False)
    assert logits.summary["teacher"]["key"] == summary["teacher"]["key"]
    assert len(list((tmp_path / "cache" / "teachers").glob("*/teacher.pt"))) == 1


def test_unwritable_runs_dir_fails_before_training(tmp_path, monkeypatch, toy_models):
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(KdError, match="not writable.*--out-dir"):
        execute_run(_run_config(), out_dir=blocker / "runs", services=_services(), progress=False)
    assert not (tmp_path / "cache").exists()  # no teacher was trained


def test_unpairable_taps_fail_before_a_teacher_is_trained(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    argv = ["run", "--profile", "smoke", "--teacher", "han", "--method", "lsfd", "--set",
            "method.options.student_taps=[nonexistent]", "--set", "method.options.teacher_taps=[body.0]",
            "--out-dir", str(tmp_path / "runs"), "--no-progress"]
    assert main(argv) == 2
    assert "student 'asid' tap failed" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "cache").exists() and not list((tmp_path / "runs").glob("asid-*"))


def test_cli_bad_names(capsys, tmp_path):
    out = ["--out-dir", str(tmp_path), "--profile", "smoke", "--no-progress"]

    def error_of(*argv):
        assert main(["run", *argv, *out]) == 2
        return " ".join(capsys.readouterr().err.split())  # rich wraps long lines

    assert "Did you mean 'asid'" in error_of("--student", "asdi")
    assert "Did you mean 'rcan'" in error_of("--teacher", "rcna", "--method", "logits")
    assert "Did you mean 'fitnet'" in error_of("--method", "fitnt")
    assert "no loss term 'fd'" in error_of("--method", "logits", "--set", "method.weights.fd=1")
    assert not any(tmp_path.iterdir())


def test_teacher_checkpoint_of_another_scale_is_reported(tmp_path):
    from kd.engine.teachers import load_teacher_checkpoint
    from kd.models import create

    path = tmp_path / "rcan_x2.pt"
    torch.save(create("rcan", 2, "tiny").state_dict(), path)
    config = resolve([profile_layer("smoke"), ("t", {"scale": 4, "method": {"name": "logits"},
                                                     "teacher": {"ckpt": str(path)}})])
    with pytest.raises(KdError, match=r"(?i)x2|scale 2"):
        load_teacher_checkpoint(config, path)
    with pytest.raises(KdError, match="not found"):
        load_teacher_checkpoint(config, tmp_path / "missing.pt")


# ------------------------------------------------------------------------------------------------ training logs

def _logged_run(tmp_path, monkeypatch, console, progress=True, *overrides):
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    config = _run_config("train.log_every=2", *overrides, method="logits")
    return execute_run(config, out_dir=tmp_path / "runs", services=_services(), console=console,
                       progress=progress).run_dir


def _step_lines(text: str) -> list[int]:
    import re

    return [int(m.group(1)) for m in re.finditer(r"^toy_student/logits step (\d+)/6 \| rec \S+ kd \S+ loss \S+ "
                                                 r"lr \S+ \| \d+\.\d{3} s/step \| ETA \d+:\d\d:\d\d$", text, re.M)]


def test_progress_rate_recovers_one_line_after_a_pause(monkeypatch):
    from kd.engine import progress as progress_module

    clock = iter([0.0, 10.0, 1010.0, 1020.0])  # start; 10 steps; a 1,000 s stop (SIGSTOP, suspend); 10 steps
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(clock))
    bar = progress_module.TrainingProgress(None, "m", every=10)
    bar.start(100, 0)
    lines = [bar.line(step, {"rec": 0.5}) for step in (10, 20, 30)]
    assert [line.split(" | ")[-2:] for line in lines] == [["1.000 s/step", "ETA 0:01:30"],
                                                          ["100.000 s/step", "ETA 2:13:20"],
                                                          ["1.000 s/step", "ETA 0:01:10"]]


def test_piped_run_prints_plain_progress_lines_and_keeps_them_in_train_log(tmp_path, monkeypatch, toy_models):
    import io

    from rich.console import Console

    screen = io.StringIO()
    run_dir = _logged_run(tmp_path, monkeypatch, Console(file=screen, width=80))
    printed, log = screen.getvalue(), (run_dir / "train.log").read_text()
    assert _step_lines(printed) == [2, 4, 6]  # every train.log_every steps, whole lines at 80 columns
    assert "validation PSNR-Y" in printed and "starting run" in printed
    during_run = printed[printed.index("starting run"):]  # the zoo teacher is trained first, into its own log
    for line in during_run.splitlines():
        assert line in log  # everything printed during the run is in the run folder
    teacher_log = next((tmp_path / "cache" / "teachers").glob("*/train.log")).read_text()
    assert "teacher toy_teacher step 6/6 |" in teacher_log


def test_terminal_run_draws_a_bar_and_logs_plain_lines(tmp_path, monkeypatch, toy_models):
    import io

    from rich.console import Console

    screen = io.StringIO()
    run_dir = _logged_run(tmp_path, monkeypatch, Console(file=screen, width=100, force_terminal=True))
    log = (run_dir / "train.log").read_text()
    assert _step_lines(log) == [2, 4, 6] and "\x1b[" not in log and "━" not in log
    assert _step_lines(screen.getvalue()) == []  # the terminal has the live bar instead


def test_no_progress_still_logs_to_the_run_folder(tmp_path, monkeypatch, toy_models):
    import io

    from rich.console import Console

    screen = io.StringIO()
    run_dir = _logged_run(tmp_path, monkeypatch, Console(file=screen, width=80), False)
    assert _step_lines(screen.getvalue()) == []
    assert _step_lines((run_dir / "train.log").read_text()) == [2, 4, 6]


def test_tensorboard_without_the_package_is_a_clear_error(tmp_path, monkeypatch, toy_models):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(KdError, match=r"log.tensorboard=true needs the tensorboard package.*kdbench\[tensorboard\]"):
        _logged_run(tmp_path, monkeypatch, None, False, "log.tensorboard=true")
    assert not (tmp_path / "runs").exists()


def test_tensorboard_events_hold_the_metrics_jsonl_scalars(tmp_path, monkeypatch, toy_models):
    pytest.importorskip("tensorboard", reason="the optional tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from kd.engine.events import scalars

    run_dir = _logged_run(tmp_path, monkeypatch, None, False, "log.tensorboard=true")
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    expected: dict[str, list[tuple[int, float]]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for tag, value in scalars(record):
            expected.setdefault(tag, []).append((record["step"], value))
    assert {"loss", "lr", "terms/rec", "terms/kd", "val_psnr_y", "step_time"} <= set(expected)
    assert set(events.Tags()["scalars"]) == set(expected)
    for tag, points in expected.items():
        got = [(e.step, e.value) for e in events.Scalars(tag)]
        assert got == [(step, pytest.approx(value, rel=1e-6)) for step, value in points], tag
