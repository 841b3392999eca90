"""The benchmark scripts' measuring rules (they are not part of the package: loaded from benchmarks/ by path)."""

from __future__ import annotations

import importlib.util
import json
import tempfile
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_step_alternates_the_order_of_contenders():
    bench = load_script("bench_step")
    assert bench.run_order(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert bench.run_order(["a", "b", "c"], 1) == ["c", "b", "a"]
    calls = []
    bench.measure({name: (lambda name=name: calls.append(name)) for name in "ab"}, repeats=2, warmup=0)
    assert calls == ["a", "b", "b", "a"]


def test_bench_step_ratios_are_paired_per_repeat():
    bench = load_script("bench_step")
    # The reference is slow in repeat 2 (load) exactly when the method is: paired ratios stay 1.2, whereas the
    # ratio of minima (1.2 / 1.0) or of medians would mix repeats.
    times = {"ref": [1.0, 3.0, 1.0, 1.0], "m": [1.2, 3.6, 1.2, 1.2]}
    ratios = bench.paired_ratios(times, "ref")
    assert ratios["m"]["median"] == pytest.approx(1.2)
    assert ratios["m"]["q1"] == pytest.approx(1.2) and ratios["m"]["q3"] == pytest.approx(1.2)
    spread = bench.paired_ratios({"ref": [1.0] * 5, "m": [1.0, 1.1, 1.2, 1.3, 1.4]}, "ref")["m"]
    assert (spread["q1"], spread["median"], spread["q3"]) == pytest.approx((1.1, 1.2, 1.3))


def test_bench_step_runs_judges_the_median_and_removes_its_run_folders(tmp_path, monkeypatch):
    bench = load_script("bench_step")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    out = tmp_path / "bench.json"
    assert bench.main(["--student-preset", "tiny", "--teacher-preset", "tiny", "--methods", "logits",
                       "--scale", "2", "--batch", "1", "--patch", "12", "--repeats", "3", "--warmup", "0",
                       "--threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert list(scratch.glob("kdbench-bench-*")) == []  # the trainers' temporary run folders are gone
    assert len(report["seconds"]["logits"]["per_repeat"]) == 3
    verdict = report["verdicts"]["logits"]
    assert verdict["reference"] == "baseline"
    assert verdict["median"] == report["ratio_to_baseline"]["logits"]["median"]
    assert verdict["ok"] == (verdict["median"] <= 1.10)
    figures = report["ratio_to_none_plus_teacher"]["logits"]
    assert figures["q1"] <= figures["median"] <= figures["q3"]


def _tiny_291_and_set5(root: Path) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    from kd.data.registry import VALIDATION_291

    names = {"T91": ["t1.bmp", "t2.bmp"], "BSD200": ["100080.png", *(f"{stem}.png" for stem in VALIDATION_291)],
             "Set5": ["baby.png", "bird.png"]}
    for folder, files in names.items():
        (root / folder / "HR").mkdir(parents=True)
        for name in files:
            smooth = rng.random((8, 8, 3)).repeat(8, axis=0).repeat(8, axis=1)  # 64x64, some structure
            Image.fromarray((smooth * 255).astype("uint8")).save(root / folder / "HR" / name)


def test_gpu_check_dry_run_exercises_every_section(tmp_path, monkeypatch):
    """The whole GPU check on the CPU, on the images `--pack` copies for a GPU machine: the CUDA tests are
    collected (and skip here), throughput with tiny teachers, the paper profile for 2 steps on a DIV2K folder linked
    from generated 291-layout images."""
    check = load_script("gpu_check")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    shared = tmp_path / "shared"
    _tiny_291_and_set5(shared)
    data = tmp_path / "packed"  # what travels to a GPU machine, which sees only the repository
    assert check.pack(shared, data, hr_patch=64) > 0
    assert sorted(p.name for p in data.iterdir()) == ["BSD200", "Set5", "T91"]
    with pytest.raises(SystemExit, match="exists"):
        check.pack(shared, data)
    out = tmp_path / "gpu.json"
    assert check.main(["--data", str(data), "--out", str(out), "--dry-run"]) == 0
    figures = json.loads(out.read_text())
    assert figures["dry_run"] and figures["ok"]
    outcomes = figures["tests"]["tests"]
    assert {"test_nccl_with_one_rank_runs_ddp", "test_pinned_batches_reach_the_gpu",
            "test_compiled_student_matches_eager[logits]", "test_half_precision_teacher_agrees_with_fp32[fp16]",
            } <= set(outcomes)
    assert set(outcomes.values()) <= {"passed", "skipped"}
    for precision in ("fp32", "bf16"):
        speeds = figures[f"throughput_{precision}"]["images_per_s"]
        assert set(speeds) == {"rcan", "han", "swinir", "edsr"} and all(v > 0 for v in speeds.values())
    run = figures["paper_run"]
    assert run["train_images"] == 3 and run["steps"] == 2  # the 291-val images validate instead
    assert run["best_val"]["dataset"] == "DIV2K-val10" and run["best_val"]["psnr_y"] > 0
    assert 0 < run["set5_psnr_y"] < 100
    assert not list(scratch.glob("kdbench-gpu-check-*"))  # its work folder is removed


def test_gpu_check_names_a_missing_data_folder(tmp_path):
    check = load_script("gpu_check")
    with pytest.raises(SystemExit, match="T91/HR"):
        check.div2k_layout(tmp_path / "nowhere", tmp_path / "root")


def test_compare_run_folders_pairs_seeds_and_ignores_paused_time(tmp_path, capsys):
    compare = load_script("compare_run_folders")

    def run(folder: str, seed: int, psnr: float, step_times: list[float], wall: float) -> None:
        run_dir = tmp_path / folder / f"asid-logits-s{seed}"
        run_dir.mkdir(parents=True)
        summary = {"run_id": run_dir.name, "student": "asid", "student_preset": "mini", "method": "logits",
                   "scale": 4, "seed": seed, "profile": "cpu", "teacher": {"arch": "rcan", "preset": "mini"},
                   "datasets": {"Set5": {"psnr_y": psnr}}, "train_seconds": wall}
        (run_dir / "summary.json").write_text(json.dumps(summary))
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"step": 10 * (i + 1), "step_time": t}) + "\n"
                                                       for i, t in enumerate(step_times)))

    for seed, (a, b) in enumerate([(30.0, 30.1), (30.2, 30.2), (30.1, 30.3)]):
        run("fp32", seed, a, [1.0, 1.0, 1.0], wall=1000.0)
        run("bf16", seed, b, [0.8, 0.8, 500.0], wall=4000.0)  # one logged step spans a 500 s stop
    json_path = tmp_path / "figures.json"
    assert compare.main([str(tmp_path / "fp32"), str(tmp_path / "bf16"), "--json", str(json_path)]) == 0
    (row,) = json.loads(json_path.read_text())
    # differences 0.1, 0.0, 0.2: mean 0.1, sd 0.1, half-width 4.303 * 0.1 / sqrt(3)
    assert row["seeds"] == [0, 1, 2] and row["delta_psnr"] == pytest.approx(0.1)
    assert row["high"] - row["delta_psnr"] == pytest.approx(4.303 * 0.1 / 3 ** 0.5, abs=1e-3)
    assert row["step_time_ratio_median"] == pytest.approx(0.8) and row["train_time_ratio_median"] == pytest.approx(4.0)
    assert "step time B/A 0.80, training wall time B/A 4.00" in capsys.readouterr().out
    run("other", 5, 30.0, [1.0], wall=1.0)
    with pytest.raises(SystemExit, match="no run of .* pairs with a run of"):
        compare.main([str(tmp_path / "fp32"), str(tmp_path / "other")])
    with pytest.raises(SystemExit, match="nothing-here' not found"):
        compare.main([str(tmp_path / "fp32"), str(tmp_path / "nothing-here")])
