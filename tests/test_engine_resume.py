"""`kdbench run` killed with SIGKILL mid-run and re-run finishes bitwise identical to an uninterrupted run (CPU).

Real networks (smoke profile: ASID and RCAN tiny presets) and the real patch pipeline on the embedded photos.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _command(out_dir: Path) -> list[str]:
    return [sys.executable, "-m", "kd", "run", "--profile", "smoke", "--method", "fitnet", "--threads", "1",
            "--out-dir", str(out_dir), "--no-progress"]


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "KDBENCH_CACHE": str(cache)}


def _run(out_dir: Path, cache: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(_command(out_dir), cwd=REPO, env=_env(cache), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done


def _records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.endswith("_time")} for line in lines]


def _logged_steps(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError):
            pass
    return max(steps, default=0)


def test_sigkill_and_rerun_matches_uninterrupted_run(tmp_path):
    cache = tmp_path / "cache"
    reference_root, killed_root = tmp_path / "reference", tmp_path / "killed"
    _run(reference_root, cache)  # also trains the smoke teacher into the zoo, shared by both runs
    (reference_run,) = list(reference_root.iterdir())

    process = subprocess.Popen(_command(killed_root), cwd=REPO, env=_env(cache),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = killed_root / reference_run.name
    deadline = time.monotonic() + 300
    try:
        while _logged_steps(run_dir) < 3 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.poll() is None, "the run finished before it could be killed"
        process.kill()  # SIGKILL: no handler runs, no cleanup
    finally:
        process.wait()
    assert not (run_dir / "summary.json").exists()
    assert (run_dir / "checkpoints" / "last.pt").exists()

    resumed = _run(killed_root, cache)
    assert "resuming run" in resumed.stderr

    assert json.loads((run_dir / "summary.json").read_text())["datasets"] == json.loads(
        (reference_run / "summary.json").read_text())["datasets"]
    assert _records(run_dir) == _records(reference_run)
    for name in ("student.pt", "checkpoints/best.pt"):
        a = torch.load(reference_run / name, weights_only=True)
        b = torch.load(run_dir / name, weights_only=True)
        weights_a, weights_b = a.get("student", a.get("state_dict")), b.get("student", b.get("state_dict"))
        assert weights_a.keys() == weights_b.keys()
        assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a), name
    assert (reference_run / "eval" / "per_image.csv").read_text() == (run_dir / "eval" / "per_image.csv").read_text()

    again = _run(killed_root, cache)
    assert "already finished" in " ".join(again.stderr.split())

    # the zoo holds the smoke teacher the runs trained: `teacher train` reuses it, `teacher list` shows it
    def kdbench(*argv):
        done = subprocess.run([sys.executable, "-m", "kd", *argv], cwd=REPO, env=_env(cache), capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return " ".join((done.stdout + done.stderr).split())

    assert "already in the zoo" in kdbench("teacher", "train", "--teacher", "rcan", "--profile", "smoke")
    listing = kdbench("teacher", "list")
    assert "rcan-tiny-x4-default-seed0" in listing
