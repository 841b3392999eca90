"""Validation split and `kdbench tune`: tuning is scored on held-out images only, and leaves its evidence."""

from __future__ import annotations

import csv
import importlib.util
import re
import shutil
from pathlib import Path

import pytest
import torch

from kd.data.files import dataset_files
from kd.data.registry import VALIDATION_291, resolve_dataset
from kd.errors import KdError
from kd.profiles import get_profile

REPO = Path(__file__).resolve().parents[1]


def _image_folder(root: Path, name: str, stems: list[str]) -> None:
    folder = root / name / "HR"
    folder.mkdir(parents=True)
    for stem in stems:
        (folder / f"{stem}.png").write_bytes(b"")  # listing only: never decoded here


def test_validation_split_is_held_out_of_training(tmp_path):
    _image_folder(tmp_path, "T91", ["t1", "t2"])
    _image_folder(tmp_path, "BSD200", [*VALIDATION_291, "2092", "8049"])
    train = {p.stem for files in dataset_files("291-train", tmp_path, "train") for p in files.hr}
    val = {p.stem for files in dataset_files("291-val", tmp_path, "eval") for p in files.hr}
    full = {p.stem for files in dataset_files("291", tmp_path, "train") for p in files.hr}
    assert val == set(VALIDATION_291) and not train & val and train | val == full


def test_incomplete_validation_split_names_what_is_missing(tmp_path):
    _image_folder(tmp_path, "BSD200", list(VALIDATION_291[:-1]))
    with pytest.raises(KdError, match=f"lacks {VALIDATION_291[-1]}"):
        dataset_files("291-val", tmp_path, "eval")


def test_profiles_validate_on_held_out_images_never_on_test_sets():
    for name in ("cpu", "paper"):
        values = get_profile(name).values
        val = values["eval"]["val_dataset"]
        assert resolve_dataset(val).role == "val" and val not in values["eval"]["datasets"]
    assert get_profile("cpu").values["data"]["train"] == "291-train"


def test_shared_291_split(shared_data):
    train = [p for files in dataset_files("291-train", shared_data, "train") for p in files.hr]
    val = [p for files in dataset_files("291-val", shared_data, "eval") for p in files.hr]
    assert len(train) == 281 and len(val) == 10 and not {p.stem for p in train} & {p.stem for p in val}


def test_tune_refuses_a_test_set_as_validation(tmp_path, monkeypatch, capsys):
    from kd.cli import main

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    code = main(["tune", "--profile", "smoke", "--method", "fitnet", "--grid", "method.weights.fd=0.1,1",
                 "--set", "eval.val_dataset=Set5", "--out-dir", str(tmp_path / "runs"), "--dry-run"])
    assert code == 2 and "Set5 is a test set" in capsys.readouterr().err


def test_tune_runs_the_grid_and_writes_its_evidence(tmp_path, monkeypatch, capsys):
    from kd.cli import main

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    argv = ["tune", "--profile", "smoke", "--method", "fitnet", "--grid", "method.weights.fd=0.1,1", "--steps", "2",
            "--seeds", "0", "--threads", "1", "--no-progress", "--out-dir", str(tmp_path / "runs"),
            "--report-dir", str(tmp_path / "tuning")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "tuning" / "fitnet-rcan-x4-smoke.csv").open()))
    assert [row["method.weights.fd"] for row in rows] == ["0.1", "1"]
    assert all(row["val_dataset"] == "default" and float(row["val_psnr_y"]) > 0 for row in rows)
    assert "kept method.weights.fd=0.1" in out  # FitNet's default; one seed cannot separate another value from it
    index = (tmp_path / "tuning" / "README.md").read_text()
    assert index.count("fitnet-rcan-x4-smoke.csv") == 2  # one line: label and link
    assert main(argv) == 0  # idempotent: finished runs are reused, the line is replaced, not added
    assert (tmp_path / "tuning" / "README.md").read_text().count("](fitnet-rcan-x4-smoke.csv)") == 1


def test_tuning_without_a_teacher_is_named_for_no_teacher(tmp_path, monkeypatch, capsys):
    # The no-KD reference point of a weight grid: the --teacher given (or the profile's) plays no part in it.
    from kd.cli import main

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    argv = ["tune", "--profile", "smoke", "--teacher", "rcan", "--method", "none", "--grid", "method.weights.rec=1",
            "--steps", "2", "--seeds", "0", "--threads", "1", "--no-progress", "--out-dir", str(tmp_path / "runs"),
            "--report-dir", str(tmp_path / "tuning")]
    assert main(argv) == 0
    assert "tuning none without a teacher" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "tuning").glob("*.csv")] == ["none-noteacher-x4-smoke.csv"]


def test_the_current_value_stays_unless_paired_seeds_separate_a_better_one():
    import pandas as pd

    from kd.results.tune import finding, rank_points

    def choose(gains: dict[str, list[float]], current="0.1", seeds=3):
        rows = [{"w": "0.1", "seed": s, "val_psnr_y": 25.0 + s * 0.1} for s in range(seeds)]
        rows += [{"w": w, "seed": s, "val_psnr_y": 25.0 + s * 0.1 + g} for w, per_seed in gains.items()
                 for s, g in enumerate(per_seed[:seeds])]
        results = pd.DataFrame(rows)
        return finding(rank_points(results, ["w"]), ["w"], "291-val", 250, results, {"w": current})

    chosen, text = choose({"0.3": [0.05, 0.06, 0.04]})  # the seed offsets cancel in the pairing: separated
    assert chosen == {"w": "0.3"} and text.startswith("chosen w=0.3: +0.050 dB over the current w=0.1")
    assert "after Holm–Bonferroni over the 1 point(s) compared with it" in text
    chosen, text = choose({"0.3": [0.2, -0.1, 0.05]})  # a better mean whose interval includes 0
    assert chosen == {"w": "0.1"} and text.startswith("kept w=0.1, the current value")
    assert "no point separates from it" in text and "the best other point, w=0.3, is +0.050 dB from it" in text
    chosen, text = choose({"0.3": [0.05]}, seeds=1)
    assert chosen == {"w": "0.1"} and "1 paired seed(s) are too few to rank on (the protocol needs 3" in text
    chosen, text = choose({"0.3": [0.05, 0.05001]}, seeds=2)  # two seeds whose interval excludes 0 are too few
    assert chosen == {"w": "0.1"} and "2 paired seed(s) are too few to rank on" in text
    chosen, text = choose({"0.3": [-0.05, -0.06, -0.04]})  # the current value is the best point
    assert chosen == {"w": "0.1"} and "is -0.050 dB from it" in text
    # Holm over the points compared with the current one: a gain that one comparison alone would call separated
    # is not chosen among many points that found nothing
    lone = {"0.3": [0.05, 0.08, 0.06]}
    assert choose(lone)[0] == {"w": "0.3"}
    crowded = {**lone, **{f"0.{i}5": [0.01, -0.01, 0.0] for i in range(1, 8)}}
    chosen, text = choose(crowded)
    assert chosen == {"w": "0.1"} and "over the 8 point(s) compared with it" in text
    # of several points that separate, the best mean is chosen
    chosen, _ = choose({"0.3": [0.05, 0.06, 0.04], "1.0": [0.10, 0.11, 0.09]})
    assert chosen == {"w": "1.0"}
    chosen, text = choose({"0.3": [0.05, 0.06, 0.04]}, current="0.2")  # no run of the current value: it stays
    assert chosen == {"w": "0.2"} and "not among the finished points" in text


def test_the_grid_always_holds_the_current_value(tmp_path, monkeypatch, capsys):
    from kd.cli import main

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    assert main(["tune", "--profile", "smoke", "--method", "fitnet", "--grid", "method.weights.fd=0.3,1",
                 "--out-dir", str(tmp_path / "runs"), "--dry-run"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "the current value of method.weights.fd, 0.1, is added to the grid" in out
    assert "3 grid point(s) x 3 seed(s)" in out and "method.weights.fd=0.1 (seed 0: new" in out


def test_a_best_point_at_the_end_of_the_grid_says_so():
    import pandas as pd

    from kd.results.tune import finding, rank_points

    def text(scores):
        results = pd.DataFrame([{"w": w, "seed": 0, "val_psnr_y": v} for w, v in scores.items()])
        return finding(rank_points(results, ["w"]), ["w"], "291-val", 250, results, {"w": "0.1"})[1]

    assert "grid's smallest value of w: extend the grid below it" in text({"0.03": 25.66, "0.1": 25.64, "0.3": 25.6})
    assert "grid's largest value of w: extend the grid above it" in text({"0.03": 25.6, "0.1": 25.64, "0.3": 25.66})
    assert "extend" not in text({"0.03": 25.6, "0.1": 25.66, "0.3": 25.64})
    assert "extend" not in text({"0.03": 25.66, "0.1": 25.64})  # two points have no inside


def test_current_value_of_a_loss_weight_includes_the_methods_own_defaults():
    from kd.profiles import profile_layer, resolve_layers
    from kd.results.tune import current_value

    def value(teacher, method, key, profile="smoke"):
        cli = ("cli", {"teacher": {"arch": teacher}, "method": {"name": method}})
        return current_value(resolve_layers([profile_layer(profile), cli]), key)

    assert value("rcan", "attention", "method.weights.att") == "0.02"  # channel maps: set by the built method
    assert value("swinir", "attention", "method.weights.att") == "0.4"  # window maps
    assert value("rcan", "fitnet", "method.weights.fd") == "0.1" and value("rcan", "fitnet", "train.steps") == "6"


def _phase_residual_module():
    spec = importlib.util.spec_from_file_location("phase_residual", REPO / "benchmarks" / "phase_residual.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_phase_pattern_measures_a_phase_locked_residual():
    module = _phase_residual_module()
    hr = torch.full((3, 32, 32), 100, dtype=torch.uint8)
    assert module.phase_pattern(hr.clone(), hr, 4) == 0.0
    sr = hr.clone()
    sr[:, ::4, ::4] += 16  # one phase of 16 is 16 levels too bright in RGB: Y grows by 16 * (65.481+128.553+24.966)/255
    expected_mean = torch.tensor([16 * 219 / 255] + [0.0] * 15, dtype=torch.float64)
    assert module.phase_pattern(sr, hr, 4) == pytest.approx(float(expected_mean.std(unbiased=False)), rel=1e-6)


def test_phase_residual_script_reads_finished_runs(tmp_path, monkeypatch, capsys):
    # The script loads each run's student.pt as kdbench writes it (weights plus the network's description).
    from kd.cli import main

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    for method in ("none", "logits"):
        assert main(["run", "--profile", "smoke", "--method", method, "--threads", "1", "--no-progress",
                     "--out-dir", str(tmp_path / "runs")]) == 0
    capsys.readouterr()
    script = _phase_residual_module()
    assert script.main(["--runs", str(tmp_path / "runs"), "--dataset", "default", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= 80 for line in lines)
    verdicts = {line.split()[0]: re.search(r"(\d+\.\d+)  (ok|GRID PATTERN)$", line).groups() for line in lines
                if line.startswith(("none ", "logits "))}
    assert verdicts["none"] == ("1.00", "ok")
    ratio, verdict = verdicts["logits"]
    assert verdict == ("ok" if float(ratio) <= 1.5 else "GRID PATTERN")
    with pytest.raises(SystemExit, match="no-such-folder"):
        script.main(["--runs", str(tmp_path / "no-such-folder")])

    # Each pattern is recorded in its run, and travels with a report's records (no weights there) to a new machine.
    from kd.report import build_report

    assert all((run / "phase_residual.json").is_file() for run in (tmp_path / "runs").iterdir() if run.is_dir())
    build_report(tmp_path / "runs", tmp_path / "report", visual_images=0)
    capsys.readouterr()
    assert script.main(["--runs", str(tmp_path / "report" / "records"), "--dataset", "default"]) == 0
    assert capsys.readouterr().out.splitlines() == lines
    with pytest.raises(SystemExit, match="nothing to measure"):
        script.main(["--runs", str(tmp_path / "report" / "records"), "--dataset", "Set5"])
    shutil.rmtree(next((tmp_path / "report" / "records").glob("*logits*")))
    (tmp_path / "report" / "records" / "asid-logits-copy").mkdir()
    for name in ("summary.json", "config.yaml"):  # a record without a measured pattern is named, not fatal
        source = next((tmp_path / "runs").glob("*logits*")) / name
        (tmp_path / "report" / "records" / "asid-logits-copy" / name).write_bytes(source.read_bytes())
    assert script.main(["--runs", str(tmp_path / "report" / "records"), "--dataset", "default"]) == 0
    assert "left out (no student.pt and no phase_residual.json)" in capsys.readouterr().err
    shutil.copy(next((tmp_path / "runs").glob("*logits*")) / "phase_residual.json",
                tmp_path / "report" / "records" / "asid-logits-copy")
    shutil.rmtree(next((tmp_path / "report" / "records").glob("*none*")))  # no baseline: nothing is "within"
    assert script.main(["--runs", str(tmp_path / "report" / "records"), "--dataset", "default"]) == 1
    captured = capsys.readouterr()
    assert "no no-KD run to compare" in captured.out and "within" not in captured.out
    assert "no run compared: the no-KD run of seed(s) 0 is not measurable" in captured.err


def test_tune_points_sharing_a_cell_label_all_run_under_the_local_executor(tmp_path, monkeypatch, capsys):
    # Grid points differ only in their overrides: the executor must not merge them by their shared cell label.
    from kd.cli import main

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    argv = ["tune", "--profile", "smoke", "--method", "logits", "--grid", "method.weights.kd=0.5,1", "--steps", "2",
            "--seeds", "0", "--threads", "1", "--executor", "local", "--max-parallel", "2", "--out-dir", str(tmp_path / "runs"),
            "--report-dir", str(tmp_path / "tuning")]
    assert main(argv) == 0
    rows = list(csv.DictReader((tmp_path / "tuning" / "logits-rcan-x4-smoke.csv").open()))
    assert [row["method.weights.kd"] for row in rows] == ["0.5", "1"]
    assert len({row["run_id"] for row in rows}) == 2 and all(float(row["val_psnr_y"]) > 0 for row in rows)
    assert main(argv) == 0  # again, every point finished: the evidence keeps their scores
    again = list(csv.DictReader((tmp_path / "tuning" / "logits-rcan-x4-smoke.csv").open()))
    assert [row["val_psnr_y"] for row in again] == [row["val_psnr_y"] for row in rows]
    assert "not finished" not in capsys.readouterr().out
