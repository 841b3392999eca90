"""`kdbench sweep` on a small real grid of smoke runs: dry-run cells, skipping finished cells, failing cells."""

from __future__ import annotations

import json

import pytest

from kd.cli import main
from kd.results.sweep import expand_grid

FAST = ["--set", "eval.val_dataset=null"]  # no periodic validation: a few seconds per run
GRID = ["--students", "asid", "--teachers", "rcan", "--methods", "none,logits", "--scales", "4", "--seeds", "0",
        "--profile", "smoke", "--no-progress", *FAST]


def _sweep(runs, *extra):
    return main(["sweep", *GRID, "--out-dir", str(runs), *extra])


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KDBENCH_CACHE", str(root / "cache"))
        code = _sweep(root / "runs")
        yield root / "runs", code, patch


def test_grid_shares_the_no_kd_cell_across_teachers():
    cells = expand_grid(["asid"], ["rcan", "han", "swinir"], ["none", "logits", "fitnet"], [4], [0, 1, 2])
    assert len(cells) == 3 * (1 + 2 * 3)
    baseline = [c for c in cells if c.method == "none"]
    assert len(baseline) == 3 and all(c.teacher is None for c in baseline)
    assert {(c.teacher, c.method) for c in cells if c.seed == 0} == {
        (None, "none"), *((t, m) for t in ("rcan", "han", "swinir") for m in ("logits", "fitnet"))}
    # aliases resolve to the registered name, so they do not make a second cell
    assert len(expand_grid(["asid"], ["swinir", "swinir_m"], ["logits"], [4], [0])) == 1


def test_dry_run_lists_cells_with_estimates(tmp_path, capsys):
    argv = ["sweep", "--students", "asid", "--teachers", "rcan,han,swinir", "--methods", "none,logits,fitnet",
            "--scales", "4", "--seeds", "0,1,2", "--profile", "cpu", "--out-dir", str(tmp_path / "runs"),
            "--dry-run"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "21 cells" in out and out.count("noteacher") == 3  # one no-KD run id per seed
    assert "estimated training time" in out and "rough" in out
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_unknown_method_is_reported_before_anything_runs(tmp_path, capsys):
    assert main(["sweep", "--methods", "none,fitnt", "--out-dir", str(tmp_path), "--dry-run"]) == 2
    assert "Did you mean 'fitnet'" in " ".join(capsys.readouterr().err.split())


def test_sweep_runs_every_cell_then_skips_finished_ones(swept, capsys):
    runs, code, _ = swept
    assert code == 0
    summaries = [json.loads(p.read_text()) for p in runs.glob("*/summary.json")]
    assert sorted(s["method"] for s in summaries) == ["logits", "none"]
    before = {p: p.stat().st_mtime_ns for p in runs.glob("*/summary.json")}

    capsys.readouterr()
    assert _sweep(runs, "--dry-run") == 0
    assert "for 0 cell(s) to run" in " ".join(capsys.readouterr().out.split())
    assert _sweep(runs) == 0
    assert "skipped" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/summary.json")} == before  # nothing re-ran


def test_cells_recorded_in_a_report_are_not_trained_again(swept, tmp_path, capsys):
    """On a machine whose runs/ is empty, a committed report's records/ stand for the finished cells."""
    from kd.report import build_report

    runs, _, patch = swept
    build_report(runs, tmp_path / "report", visual_images=0)
    records = tmp_path / "report" / "records"
    fresh = tmp_path / "fresh-runs"
    capsys.readouterr()
    assert _sweep(fresh, "--records", str(records), "--dry-run") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "for 0 cell(s) to run" in out and "recorded in" in out
    assert _sweep(fresh, "--records", str(records)) == 0
    assert "skipped" in capsys.readouterr().out and not fresh.exists()
    assert _sweep(fresh, "--records", str(records), "--seeds", "1", "--dry-run") == 0  # new cells: timed from records
    out = " ".join(capsys.readouterr().out.split())
    assert "for 2 cell(s) to run" in out and "(recorded (1 run))" in out and "rough" not in out
    assert _sweep(fresh, "--records", str(tmp_path / "nowhere")) == 2
    assert "--records" in capsys.readouterr().err


def test_failing_cell_is_reported_while_the_others_finish(swept, capsys):
    runs, _, _ = swept
    capsys.readouterr()
    # `kd` is a loss term of logits only: the no-KD cell is invalid with it, the logits cell runs.
    code = _sweep(runs, "--set", "method.weights.kd=2")
    assert code == 1
    captured = capsys.readouterr()
    text = " ".join((captured.out + captured.err).split())
    assert "failed" in text and "no loss term 'kd'" in text and "1 of 2 cell(s) failed" in text
    weighted = [json.loads(p.read_text()) for p in runs.glob("*logits*/summary.json")]
    assert sorted(s["loss_weights"]["kd"] for s in weighted) == [1.0, 2.0]


def test_rough_estimate_charges_meta_kd_its_measured_factor(tmp_path, monkeypatch):
    from kd.config import resolve
    from kd.profiles import profile_layer
    from kd.results.sweep import METHOD_STEP_FACTOR, StepTimes

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    times = StepTimes(tmp_path / "runs")

    def per_step(method):
        return times.per_step(resolve([profile_layer("cpu"), ("test", {"method": {"name": method}})]))

    (logits, source), (krnet, _) = per_step("logits"), per_step("krnet")
    assert source == "rough"
    assert krnet == pytest.approx(METHOD_STEP_FACTOR["krnet"] * logits)


def test_recorded_estimate_is_not_inflated_by_a_paused_run(tmp_path, monkeypatch):
    from kd.config import dump_yaml, resolve
    from kd.profiles import profile_layer
    from kd.results.sweep import StepTimes

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    config = resolve([profile_layer("cpu"), ("test", {"method": {"name": "logits"}})])
    run_dir = tmp_path / "runs" / "a-finished-run"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(dump_yaml(config))
    # 1,000 steps of ~1.2 s that took 6,000 s: the job was stopped for more than an hour in the middle
    (run_dir / "summary.json").write_text(json.dumps({"train_seconds": 6000.0, "steps": 1000}))
    records = [{"step": 10 * i, "step_time": 1.1 + 0.01 * (i % 3), "data_time": 0.1} for i in range(1, 101)]
    records[50]["step_time"] = 4800.0
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 1, "health"')
    seconds, source = StepTimes(tmp_path / "runs").per_step(config)
    assert source == "recorded (1 run)" and seconds == pytest.approx(1.21)
    (run_dir / "metrics.jsonl").unlink()  # an older run without step records: its wall time per step
    assert StepTimes(tmp_path / "runs").per_step(config) == (pytest.approx(6.0), "recorded (1 run)")


def test_rough_estimate_is_calibrated_by_the_finished_runs(tmp_path, monkeypatch):
    from kd.config import dump_yaml, resolve
    from kd.profiles import profile_layer
    from kd.results.sweep import StepTimes

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))

    def config(method, student_preset=None):
        return resolve([profile_layer("cpu"), ("test", {"method": {"name": method},
                                                        "student": {"preset": student_preset}})])

    finished, other = config("logits"), config("none", "tiny")
    uncalibrated = StepTimes(tmp_path / "runs")
    (rough_finished, _), (rough_other, source) = uncalibrated.per_step(finished), uncalibrated.per_step(other)
    assert source == "rough"
    run_dir = tmp_path / "runs" / "a-finished-run"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(dump_yaml(finished))
    # this machine runs the finished configuration 3x slower than the rough figures say
    (run_dir / "summary.json").write_text(json.dumps({"train_seconds": 3000.0 * rough_finished, "steps": 1000}))
    calibrated = StepTimes(tmp_path / "runs")
    assert calibrated.per_step(finished) == (pytest.approx(3 * rough_finished), "recorded (1 run)")
    assert calibrated.per_step(other) == (pytest.approx(3 * rough_other), "rough x3.0, 1 run")


def test_a_small_preset_in_the_teacher_zoo_corrects_rough_figures_of_its_network(tmp_path, monkeypatch):
    from kd.config import resolve
    from kd.profiles import profile_layer
    from kd.results import sweep

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    student = resolve([profile_layer("cpu"), ("test", {"method": {"name": "none"},
                                                       "student": {"arch": "rcan", "preset": "mini_student"}})])
    uncorrected = sweep.StepTimes(tmp_path / "runs")
    recipe = {"batch_size": 8, "lr_patch": 32}
    rough_teacher_step = uncorrected._network_seconds("rcan", "mini", 4, backward=True) * 8 * 32 ** 2 / (4 * 48 ** 2)
    # the zoo's RCAN mini trained 3x slower per step than its MACs-scaled figure
    entry = {"arch": "rcan", "preset": "mini", "scale": 4, "recipe": recipe, "steps": 100,
             "train_seconds": 300 * rough_teacher_step}
    monkeypatch.setattr(sweep, "_zoo_entries", lambda: [entry])
    seconds, source = sweep.StepTimes(tmp_path / "runs").per_step(student)
    assert source == "rough" and seconds == pytest.approx(3 * uncorrected.per_step(student)[0])
    official = dict(entry, preset="paper")  # a recorded official preset says nothing about small ones
    monkeypatch.setattr(sweep, "_zoo_entries", lambda: [official])
    assert sweep.StepTimes(tmp_path / "runs").per_step(student)[0] == pytest.approx(uncorrected.per_step(student)[0])


def test_every_registered_network_has_a_rough_step_figure():
    """A sweep of any network plans with a measured figure, not the flagged middling guess."""
    from kd.models import list_entries
    from kd.results.sweep import ROUGH_STEP_SECONDS

    missing = [e.arch for e in list_entries() if e.role != "baseline" and e.arch not in ROUGH_STEP_SECONDS]
    assert not missing, f"no ROUGH_STEP_SECONDS figure for {missing} (benchmarks/bench_models.py --clock cpu)"
