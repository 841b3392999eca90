"""Smoke runs from the CLI (`kdbench run --profile smoke`) of the seed papers' networks in both roles: each trains its
teacher into the zoo, distils, evaluates and writes a student that loads back into its network. Every method with
every one of these pairs is also stepped once in the networks' own test files (tests/seed_steps.py)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from kd.cli import main
from kd.models import create, load_official

RUNS = [  # (student, teacher, method): ASID from SAN and SwinFIR, peers from RCAN, FAKD's SAN pair
    ("asid", "san", "fakd"), ("asid", "san", "dckd"), ("asid", "swinfir", "logits"), ("asid", "swinfir", "fitnet"),
    ("hpinet", "rcan", "logits"), ("ncnet", "rcan", "fakd"), ("san", "san", "fakd"),
]


@pytest.mark.parametrize("student, teacher, method", RUNS)
def test_a_smoke_run(tmp_path, monkeypatch, student, teacher, method):
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    assert main(["run", "--student", student, "--student-preset", "tiny", "--teacher", teacher, "--set",
                 "teacher.preset=tiny", "--method", method, "--profile", "smoke", "--no-progress", "--threads", "1",
                 "--out-dir", str(tmp_path / "runs")]) == 0
    [run] = (tmp_path / "runs").glob(f"{student}-{method}-{teacher}-*")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["teacher"]["key"].startswith(f"{teacher}-tiny-x4-")
    assert summary["datasets"] and all(math.isfinite(s["psnr_y"]) for s in summary["datasets"].values())
    load_official(create(student, 4, "tiny"), torch.load(run / "student.pt", weights_only=True))
