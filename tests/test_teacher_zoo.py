"""Carrying a finished zoo teacher to another machine: `kdbench teacher export` and `kdbench teacher import`."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from kd.cli import main
from kd.fileio import current_umask, sha256_file
from kd.models import create

KEY = "rcan-tiny-x4-291-train-seed0-abc123"


def _zoo_entry(cache, seed: int = 0):
    folder = cache / "teachers" / KEY
    folder.mkdir(parents=True)
    torch.manual_seed(seed)
    torch.save(create("rcan", 4, "tiny").state_dict(), folder / "teacher.pt")
    record = {"key": KEY, "arch": "rcan", "preset": "tiny", "scale": 4, "steps": 10, "train_seconds": 1.5,
              "eval": {"Set5": {"psnr_y": 25.0, "ssim_y": 0.7}}}
    (folder / "teacher.json").write_text(json.dumps(record))
    (folder / "metrics.jsonl").write_text('{"step": 10}\n')
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.pt").write_bytes(b"resumable state")
    return folder


def test_export_then_import_on_a_fresh_machine(tmp_path, monkeypatch, capsys):
    here, there = tmp_path / "here", tmp_path / "there"
    entry = _zoo_entry(here)
    monkeypatch.setenv("KDBENCH_CACHE", str(here))
    assert main(["teacher", "export", KEY, "--out", str(tmp_path / "carried")]) == 0
    carried = tmp_path / "carried" / KEY
    assert sorted(p.name for p in carried.iterdir()) == ["metrics.jsonl", "teacher.json", "teacher.pt",
                                                         "teacher.pt.sha256"]
    assert (carried / "teacher.pt.sha256").read_text().split()[0] == sha256_file(entry / "teacher.pt")
    assert carried.stat().st_mode & 0o777 == 0o777 & ~current_umask()  # as readable as any folder, not mkdtemp's 0700
    assert main(["teacher", "export", KEY, "--out", str(tmp_path / "carried")]) == 2  # never overwritten
    assert "already exists" in capsys.readouterr().err

    monkeypatch.setenv("KDBENCH_CACHE", str(there))
    assert main(["teacher", "import", str(carried)]) == 0
    assert "added to the zoo" in capsys.readouterr().out
    imported = there / "teachers" / KEY
    assert imported.stat().st_mode & 0o777 == 0o777 & ~current_umask()
    assert sha256_file(imported / "teacher.pt") == sha256_file(entry / "teacher.pt")
    assert main(["teacher", "list"]) == 0 and KEY in capsys.readouterr().out
    assert main(["teacher", "import", str(carried)]) == 0  # identical: kept as it is
    assert "already in the zoo" in capsys.readouterr().out
    (tmp_path / "carried" / "README.md").write_text("what these teachers are")
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "elsewhere"))
    assert main(["teacher", "import", str(tmp_path / "carried")]) == 0  # a collection, README beside the exports
    assert "added to the zoo" in capsys.readouterr().out
    assert sha256_file(tmp_path / "elsewhere" / "teachers" / KEY / "teacher.pt") == sha256_file(entry / "teacher.pt")


def test_import_refuses_damaged_or_conflicting_teachers(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "here"))
    _zoo_entry(tmp_path / "here")
    assert main(["teacher", "export", KEY, "--out", str(tmp_path / "carried")]) == 0
    carried = tmp_path / "carried" / KEY
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "there"))

    damaged = tmp_path / "damaged" / KEY
    shutil.copytree(carried, damaged)
    data = bytearray((damaged / "teacher.pt").read_bytes())
    data[-40] ^= 0xFF
    (damaged / "teacher.pt").write_bytes(bytes(data))
    assert main(["teacher", "import", str(damaged)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "does not match teacher.pt.sha256" in err and "Traceback" not in err
    assert not (tmp_path / "there" / "teachers" / KEY).exists()

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.md").write_text("teachers go here")
    assert main(["teacher", "import", str(tmp_path / "notes")]) == 2  # holds no export
    assert "neither an exported teacher nor a folder of them" in " ".join(capsys.readouterr().err.split())

    other = _zoo_entry(tmp_path / "there", seed=1)  # this machine trained its own, different teacher
    before = sha256_file(other / "teacher.pt")
    assert main(["teacher", "import", str(carried)]) == 2
    assert "already holds a different teacher" in " ".join(capsys.readouterr().err.split())
    assert sha256_file(other / "teacher.pt") == before


@pytest.mark.parametrize("arch", ["san", "swinfir", "emsrdpn", "mdsr"])
def test_the_seed_papers_teachers_train_into_the_zoo_at_their_mini_preset(tmp_path, monkeypatch, capsys, arch):
    """`kdbench teacher train --teacher <seed teacher> --preset mini`: trained, evaluated and cached like RCAN."""
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    assert main(["teacher", "train", "--teacher", arch, "--preset", "mini", "--profile", "smoke", "--no-progress",
                 "--threads", "1", "--set", "teacher.train.steps=1", "--set", "teacher.train.batch_size=1"]) == 0
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "cache" / "teachers").glob("*/teacher.json")]
    assert (record["arch"], record["preset"], record["steps"]) == (arch, "mini", 1)
    assert all(math.isfinite(scores["psnr_y"]) for scores in record["eval"].values()) and record["eval"]
    state = torch.load(tmp_path / "cache" / "teachers" / record["key"] / "teacher.pt", weights_only=True)
    create(arch, 4, "mini").load_state_dict(state)  # strict: the cached weights are the mini network's
    assert arch in capsys.readouterr().out
