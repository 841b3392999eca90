"""`kdbench sweep --executor local|slurm` through submitit: the local executor runs a real smoke grid in job
subprocesses; Slurm's commands are stand-in scripts here (tests/test_slurm.py runs a real one-node Slurm)."""

from __future__ import annotations

import contextlib
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
from kd.results import cluster
from kd.results.cluster import CellJob, check_executor, submit_and_wait
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


def _stand_in(bin_dir, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)


def test_jobs_slurm_refuses_are_a_one_line_error(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stand_in(bin_dir, "sbatch", "echo 'sbatch: error: Invalid generic resource (gres) specification' >&2; exit 1")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    code = main(["sweep", "--profile", "smoke", "--methods", "none", "--executor", "slurm",
                 "--out-dir", str(tmp_path / "runs"), "--set", f"cluster.log_dir={tmp_path / 'jobs'}"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert ("Slurm refused the jobs: Invalid generic resource (gres) specification. They asked for "
            "cluster.timeout_min=240, cluster.gpus_per_node=1, cluster.cpus_per_task=8, cluster.mem_gb=32") in err
    assert "--set cluster.gpus_per_node=0 where there are no GPUs" in err and "unexpected" not in err


class _QueuedJob:
    def __init__(self, job_id: str) -> None:
        self.job_id, self.polls = job_id, 3

    def done(self) -> bool:
        self.polls -= 1
        return self.polls < 0

    def result(self) -> dict:
        return {"summary": {}, "already_finished": False}


class _Executor:
    def __init__(self) -> None:
        self.submitted = 0

    @contextlib.contextmanager
    def batch(self):
        yield

    def submit(self, job: CellJob) -> _QueuedJob:
        self.submitted += 1
        return _QueuedJob(f"7_{self.submitted - 1}")


def test_a_job_its_partition_cannot_run_is_told_once(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stand_in(bin_dir, "squeue", "echo '7_0 PartitionConfig'; echo '7_1 Resources'")  # --array: one line a task
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(cluster, "_make_executor", lambda kind, folder, resources: _Executor())
    monkeypatch.setattr(cluster, "QUEUE_CHECK_SECONDS", 0.0)  # read the queue at every poll
    config = resolve([profile_layer("smoke")])
    told, done = [], []
    submit_and_wait("slurm", [("cell a", config, False), ("cell b", config, False)], tmp_path, poll_seconds=0.0,
                    on_done=lambda label, *_: done.append(label), on_unfit=lambda *args: told.append(args))
    assert told == [("cell a", "7_0", "PartitionConfig")]  # once, though the queue was read at each poll
    assert sorted(done) == ["cell a", "cell b"]


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
