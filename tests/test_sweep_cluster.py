"""`kdbench sweep --executor local|slurm` through submitit: the local executor runs a real smoke grid in job
subprocesses; Slurm is only checked for (no cluster here)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil

import pytest

from kd.cli import main
from kd.config import resolve
from kd.engine import execute_run
from kd.errors import KdError
from kd.profiles import profile_layer
from kd.results.cluster import CellJob, check_executor
from kd.results.sweep import StepTimes


def test_unknown_executor_and_missing_slurm(monkeypatch):
    with pytest.raises(KdError, match="--executor must be one of inline, local, slurm"):
        check_executor("pbs")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(KdError, match="Slurm is not set up here \\(sbatch not found"):
        check_executor("slurm")
    check_executor("local")


def test_cli_reports_missing_slurm_before_planning(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    code = main(["sweep", "--profile", "smoke", "--methods", "none", "--executor", "slurm",
                 "--out-dir", str(tmp_path / "runs")])
    assert code == 2
    assert "sbatch not found" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_preempted_job_requeues_itself():
    job = CellJob({"profile": "smoke"}, "runs")
    delayed = job.checkpoint()
    assert delayed.function is job  # the same cell again: execute_run resumes it from its checkpoint


def test_run_trained_elsewhere_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    config = resolve([profile_layer("smoke"), ("test", {"method": {"name": "none"}})])
    from kd.engine.run import locate_run

    run_dir = locate_run(config, tmp_path / "runs")
    run_dir.mkdir(parents=True)
    with open(run_dir / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(KdError, match="being trained by another process"):
            execute_run(config, out_dir=tmp_path / "runs", progress=False)
    assert not (run_dir / "summary.json").exists()


def test_local_executor_runs_the_grid_and_a_rerun_skips_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(StepTimes, "per_step", lambda self, config: (10.0, "rough"))
    argv = ["sweep", "--profile", "smoke", "--methods", "none,logits", "--teachers", "rcan", "--executor", "local",
            "--threads", "1", "--out-dir", str(tmp_path / "runs"), "--set", f"cluster.log_dir={tmp_path / 'jobs'}"]
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().err.split())
    assert "training 1 teacher(s) the zoo lacks" in out
    # 6 smoke steps at the 10 s a step the planner was given: 2 cells side by side, about a minute
    assert "submitting 2 cell(s) to the local executor; about 1m00s of training" in out
    assert "1 of 2 done, about 1m00s left" in out and out.count("2 of 2 done") == 1
    summaries = sorted((tmp_path / "runs").glob("*/summary.json"))
    assert [json.loads(p.read_text())["method"] for p in summaries] == ["logits", "none"]
    assert list((tmp_path / "cache" / "teachers").glob("rcan-tiny-*/teacher.pt"))
    assert any((tmp_path / "jobs").iterdir())  # submitit's job folders: the cells really ran as jobs
    ran_in = {p.parent.name: os.path.getmtime(p) for p in summaries}

    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "skipped" in captured.out and "submitting" not in captured.err
    assert {p.parent.name: os.path.getmtime(p) for p in (tmp_path / "runs").glob("*/summary.json")} == ran_in
