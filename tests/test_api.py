"""The Python API (`kd.create_model`, `kd.load_official`, `kd.distill`, ...) and the notebook example."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import kd
from kd.errors import KdError

ROOT = Path(__file__).resolve().parents[1]


def test_import_kd_is_light_and_lists_the_api():
    code = "import sys, kd; print('torch' in sys.modules, sorted(dir(kd)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    assert out.startswith("False ")  # torch is imported on first use of an API function, not by `import kd`
    for name in ("create_model", "load_official", "distill", "evaluate_model", "build_report"):
        assert name in out
    with pytest.raises(AttributeError):
        kd.no_such_function  # noqa: B018


def test_create_model_and_load_official_by_name_or_module(tmp_path):
    model = kd.create_model("asid", scale=4, preset="tiny")
    assert model.kd_spec["arch"] == "asid" and model.kd_spec["preset"] == "tiny"
    path = tmp_path / "plain.pt"
    torch.save(model.state_dict(), path)  # an official-style bare state dict
    again = kd.load_official("asid", path, preset="tiny")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    into = kd.load_official(kd.create_model("asid", 4, "tiny"), path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), into.state_dict().values()))
    with pytest.raises(KdError, match="does not fit"):
        kd.load_official("asid", path, scale=2, preset="tiny")


def test_distill_rejects_unknown_sections(tmp_path):
    with pytest.raises(KdError, match="train=\\{'steps': 100\\}"):
        kd.distill(profile="smoke", runs_dir=tmp_path, trian={"steps": 3})


class _Shift(nn.Module):
    """A student that is not in the registry: x4 nearest upsampling plus a learned bias."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, lr):
        return nn.functional.interpolate(lr, scale_factor=4, mode="nearest") + self.bias


class _Pairs(torch.utils.data.Dataset):
    def __len__(self):
        return 3

    def __getitem__(self, index):
        hr = torch.full((3, 32, 32), 0.2 + 0.1 * index)
        return hr[:, ::4, ::4] - 0.1, hr  # the best bias is +0.1: training must move it


def test_distill_with_a_module_student_and_a_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    student = _Shift()
    record = kd.distill(student=student, method="none", data=_Pairs(), profile="smoke", runs_dir=tmp_path / "runs",
                        train={"steps": 4, "lr_patch": 8}, eval={"val_dataset": None})
    assert record.summary["student"].startswith("_Shift@") and record.summary["steps"] == 4
    assert torch.equal(student.bias, torch.zeros(1, 3, 1, 1))  # the given student is copied, not trained in place
    saved = torch.load(record.run_dir / "student.pt", weights_only=True)
    assert saved["kdbench_model"] is None and (saved["state_dict"]["bias"] > 0).all()  # trained on the pairs
    again = kd.distill(student=student, method="none", data=_Pairs(), profile="smoke", runs_dir=tmp_path / "runs",
                       train={"steps": 4, "lr_patch": 8}, eval={"val_dataset": None})
    assert again.already_finished and again.run_dir == record.run_dir


def test_notebook_example_runs(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KDBENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "distill_in_a_notebook.py"), str(tmp_path / "runs")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/summary.json")}
    assert len(summaries) == 2 and any(name.startswith("TinySR@") for name in summaries)
    psnr = next(s for name, s in summaries.items() if name.startswith("asid-"))["datasets"]["default"]["psnr_y"]
    assert f"{psnr:.6f}"[:-1] in done.stdout  # the reloaded student re-evaluates to the recorded score


def test_records_accept_the_run_ids_of_python_objects_and_refuse_paths():
    from kd.errors import KdError
    from kd.fileio import check_child_name

    assert check_child_name("_Shift@4e6a64b7-none-noteacher-x4-smoke-s0-0a1b2c3d", "run_id")
    for hostile in ("../../escaped", "a/b", "..", "", "/abs", "a\\b"):
        with pytest.raises(KdError, match="not one file name"):
            check_child_name(hostile, "run_id")
