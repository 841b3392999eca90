"""`kdbench run` prints the student beside its teacher and its no-KD sibling (same profile and seed), with Δ."""

from __future__ import annotations

import json

import pytest

from kd.cli import main


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))


def _run(tmp_path, capsys, method: str) -> tuple[str, str]:
    assert main(["run", "--profile", "smoke", "--method", method, "--teacher", "rcan", "--out-dir",
                 str(tmp_path / "runs"), "--no-progress"]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def _summary(tmp_path, method: str) -> dict:
    (path,) = (tmp_path / "runs").glob(f"asid-{method}-*/summary.json")
    return json.loads(path.read_text())


def test_kd_run_is_shown_beside_teacher_and_no_kd_sibling(tmp_path, capsys):
    out, err = _run(tmp_path, capsys, "logits")
    assert "beside its teacher and the no-KD student" in out
    assert "no no-KD sibling" in err and "--method none" in err  # says how to add the missing baseline
    out, _ = _run(tmp_path, capsys, "none")
    assert "beside its teacher" not in out  # the no-KD run is its own baseline
    out, err = _run(tmp_path, capsys, "logits")  # finished: reported again, now with its sibling
    kd, base = _summary(tmp_path, "logits"), _summary(tmp_path, "none")
    row = next(line for line in out.splitlines() if line.strip("│ ").startswith("default") and "/" in line)
    cells = row.replace("│", " ").replace("|", " ").split()
    teacher = kd["teacher"]["eval"]["default"]
    assert cells[1] == f"{teacher['psnr_y']:.2f}/{teacher['ssim_y']:.4f}"
    assert cells[2] == f"{base['datasets']['default']['psnr_y']:.2f}/{base['datasets']['default']['ssim_y']:.4f}"
    assert cells[3] == f"{kd['datasets']['default']['psnr_y']:.2f}/{kd['datasets']['default']['ssim_y']:.4f}"
    delta = kd["datasets"]["default"]["psnr_y"] - base["datasets"]["default"]["psnr_y"]
    assert cells[4] == f"{delta:+.3f}" and "no no-KD sibling" not in err
