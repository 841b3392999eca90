"""Own data and self-describing runs: image folders as datasets, `kdbench sr`, `eval --run`, `eval --ckpt` without
--model, and student.pt files from before they carried their network's description."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml

from kd.cli import main
from kd.data.benchmark import load_eval_images
from kd.data.embedded import embedded_paths
from kd.data.imresize import downscale_uint8, modcrop
from kd.data.io import read_image, write_png
from kd.data.registry import resolve_dataset
from kd.engine.checkpoint import atomic_save
from kd.errors import KdError
from kd.models import create
from kd.models.loading import model_from_checkpoint, package_model, read_model_spec


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path / "root"))


@pytest.fixture
def photos(tmp_path):
    """<root>/MyPhotos/HR with two embedded test photos."""
    folder = tmp_path / "root" / "MyPhotos" / "HR"
    folder.mkdir(parents=True)
    for path in embedded_paths("test")[:2]:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture
def run_dir(tmp_path):
    """A run folder as `kdbench run` leaves it (student.pt, config.yaml), with a tiny ASID x4."""
    folder = tmp_path / "runs" / "asid-none-noteacher-x4-smoke-s0-00000000"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    atomic_save(package_model(create("asid", 4, "tiny")), folder / "student.pt")
    config = {"scale": 4, "student": {"arch": "asid", "preset": "tiny"}, "eval": {"datasets": ["default"]},
              "data": {"root": None}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


def test_a_folder_is_a_dataset_by_path_and_by_name_under_the_data_root(photos, tmp_path):
    names = ["MyPhotos", "MyPhotos/HR", str(photos), str(photos.parent)]
    loaded = [load_eval_images(name, 4) for name in names]
    assert all([img.name for img in images] == ["chelsea", "coffee"] for images in loaded)
    assert all(img.lr_source == "generated" for images in loaded for img in images)
    assert all(torch.equal(a.lr, b.lr) for a, b in zip(loaded[0], loaded[2]))
    assert resolve_dataset("MyPhotos").name == "MyPhotos"  # resolving the name again finds the same folder
    plain = tmp_path / "plain"  # a folder of images with no HR/ level
    shutil.copytree(photos, plain)
    assert [img.name for img in load_eval_images(str(plain), 4)] == ["chelsea", "coffee"]
    with pytest.raises(KdError, match="Or give a folder of HR images"):
        resolve_dataset("NoSuchPhotos")


def test_a_folder_with_shipped_lr_uses_it(photos):
    shipped = photos.parent / "LR_bicubic" / "X4"
    hr = modcrop(read_image(photos / "chelsea.png"), 4)
    lr = downscale_uint8(hr, 4)
    lr[0, 0, 0] = 255 - lr[0, 0, 0]  # distinguishable from the regenerated LR
    write_png(shipped / "chelsea.png", lr)
    images = {img.name: img for img in load_eval_images("MyPhotos", 4)}
    assert images["chelsea"].lr_source == "shipped" and torch.equal(images["chelsea"].lr, lr)
    assert images["coffee"].lr_source == "generated"


def test_student_pt_names_its_network_and_old_files_still_load(run_dir, tmp_path):
    spec = read_model_spec(run_dir / "student.pt")
    assert spec["arch"] == "asid" and spec["scale"] == 4 and spec["preset"] == "tiny"
    rebuilt = model_from_checkpoint(run_dir / "student.pt")
    original = torch.load(run_dir / "student.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in original.items())
    old = tmp_path / "old_student.pt"  # the format before: a bare state dict
    torch.save(original, old)
    assert read_model_spec(old) is None
    with pytest.raises(KdError, match="--model asid --preset paper"):
        model_from_checkpoint(old)
    assert model_from_checkpoint(old, arch="asid", preset="tiny").kd_spec["preset"] == "tiny"


def test_eval_run_and_ckpt_need_no_model_flags(run_dir, capsys):
    assert main(["eval", "--run", str(run_dir), "--no-lpips", "--no-progress"]) == 0
    by_run = capsys.readouterr().out
    assert "asid (tiny)" in by_run and "default" in by_run
    assert main(["eval", "--ckpt", str(run_dir / "student.pt"), "--data", "default", "--no-lpips",
                 "--no-progress"]) == 0
    by_ckpt = capsys.readouterr().out
    assert [line for line in by_run.splitlines() if "x4" in line] == [
        line for line in by_ckpt.splitlines() if "x4" in line]
    # a run recorded before student.pt described itself: config.yaml names the network
    state = torch.load(run_dir / "student.pt", weights_only=True)["state_dict"]
    torch.save(state, run_dir / "student.pt")
    assert main(["eval", "--run", str(run_dir), "--no-lpips", "--no-progress"]) == 0
    assert [line for line in capsys.readouterr().out.splitlines() if "x4" in line] == [
        line for line in by_run.splitlines() if "x4" in line]


def test_sr_writes_pngs_tiled_and_never_overwrites(run_dir, tmp_path, capsys):
    lr_dir, out = tmp_path / "lr", tmp_path / "sr"
    lr_dir.mkdir()
    lr = read_image(embedded_paths("test")[0])[:, :40, :52]
    write_png(lr_dir / "small.png", lr)
    assert main(["sr", "--run", str(run_dir), "--input", str(lr_dir), "--out", str(out), "--tile", "24",
                 "--tile-overlap", "8"]) == 0
    written = read_image(out / "small.png")
    assert tuple(written.shape) == (3, 160, 208)
    model = model_from_checkpoint(run_dir / "student.pt").eval()
    with torch.inference_mode():
        whole = model(lr.float().div(255).unsqueeze(0))[0].clamp(0, 1).mul(255).round().to(torch.uint8)
    assert (written.int() - whole.int()).abs().float().mean() < 0.5  # tiles stitched where they belong
    before = (out / "small.png").read_bytes()
    assert main(["sr", "--run", str(run_dir), "--input", str(lr_dir), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and (out / "small.png").read_bytes() == before
    assert main(["sr", "--run", str(run_dir), "--input", str(lr_dir), "--out", str(lr_dir), "--force"]) == 2
    assert "its own input" in capsys.readouterr().err
    assert main(["sr", "--run", str(run_dir), "--input", str(lr_dir), "--out", str(out), "--force",
                 "--tile", "0"]) == 0
    assert torch.equal(read_image(out / "small.png"), whole)


def test_a_run_trains_and_tests_on_folders(photos, tmp_path, capsys):
    assert main(["run", "--profile", "smoke", "--method", "none", "--out-dir", str(tmp_path / "runs"),
                 "--set", f"data.train={photos.parent}", "--set", "eval.datasets=[MyPhotos]",
                 "--set", "eval.val_dataset=MyPhotos", "--no-progress"]) == 0
    (summary,) = (tmp_path / "runs").glob("*/summary.json")
    assert list(yaml.safe_load(summary.read_text())["datasets"]) == ["MyPhotos"]
    assert "MyPhotos" in capsys.readouterr().out
