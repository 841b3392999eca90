"""Checks against the shared SR data (`../shared/data`): manifests, MATLAB LR regeneration, evaluation pairs."""

from __future__ import annotations

import csv
import hashlib
import shutil

import pytest
import torch
from PIL import Image

from kd.data.benchmark import load_eval_images
from kd.data.imresize import downscale_uint8, modcrop
from kd.data.io import read_image, write_png

DATASETS = ("Set5", "Set14", "BSD100", "BSD200", "T91")
EXTRA_FILES = {"manifest.csv", "bsds_id_map.csv"}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("dataset", DATASETS)
def test_manifest_files_present_with_sha256_and_nothing_extra(shared_data, dataset):
    folder = shared_data / dataset
    with open(folder / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows, f"{dataset}/manifest.csv is empty"
    listed = {row["file"] for row in rows}
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - EXTRA_FILES
    assert on_disk == listed, f"missing: {sorted(listed - on_disk)[:5]}, extra: {sorted(on_disk - listed)[:5]}"
    for row in rows:
        path = folder / row["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row["sha256"], row["file"]
        with Image.open(path) as im:
            assert (im.width, im.height, im.mode) == (int(row["width"]), int(row["height"]), row["mode"]), row["file"]


def _agreement(shared_data, dataset: str, stems: list[str] | None) -> dict[int, float]:
    """Per scale: fraction of LR values within 1 grey level of the shipped MATLAB file."""
    hr_paths = sorted((shared_data / dataset / "HR").glob("*.png"))
    if stems is not None:
        hr_paths = [p for p in hr_paths if p.stem in stems]
    within, total = dict.fromkeys((2, 3, 4), 0), dict.fromkeys((2, 3, 4), 0)
    for path in hr_paths:
        hr = read_image(path)
        for s in (2, 3, 4):
            ours = downscale_uint8(modcrop(hr, s), s)
            shipped = read_image(shared_data / dataset / "LR_bicubic" / f"X{s}" / path.name)
            assert ours.shape == shipped.shape, f"{dataset}/{path.name} x{s}"
            diff = (ours.int() - shipped.int()).abs()
            within[s] += int((diff <= 1).sum())
            total[s] += diff.numel()
    return {s: within[s] / total[s] for s in (2, 3, 4)}


BSD100_SUBSET = [f"img_{i:03d}" for i in range(1, 101, 5)]  # every fifth image: 20 of 100


@pytest.mark.parametrize("dataset, stems", [("Set5", None), ("Set14", None), ("BSD100", BSD100_SUBSET)])
def test_regenerated_lr_matches_shipped_matlab_files(shared_data, dataset, stems):
    for scale, fraction in _agreement(shared_data, dataset, stems).items():
        assert fraction >= 0.99, f"{dataset} x{scale}: only {100 * fraction:.3f}% of LR values within 1 level"


@pytest.mark.slow
def test_regenerated_lr_matches_shipped_matlab_files_all_bsd100(shared_data):
    for scale, fraction in _agreement(shared_data, "BSD100", None).items():
        assert fraction >= 0.99, f"BSD100 x{scale}: only {100 * fraction:.3f}% of LR values within 1 level"


def test_eval_images_shipped(shared_data):
    images = load_eval_images("set14", 3, shared_data)
    assert [im.name for im in images] == sorted(p.stem for p in (shared_data / "Set14" / "HR").glob("*.png"))
    for im in images:
        assert im.lr_source == "shipped"
        assert im.hr.dtype == im.lr.dtype == torch.uint8
        assert im.hr.shape[0] == 3 and im.hr.shape[1] % 3 == 0 and im.hr.shape[2] % 3 == 0
        assert im.lr.shape == (3, im.hr.shape[1] // 3, im.hr.shape[2] // 3)
        full = read_image(shared_data / "Set14" / "HR" / f"{im.name}.png")
        assert torch.equal(im.hr, modcrop(full, 3))
    bridge = next(im for im in images if im.name == "bridge")  # single-channel file
    assert torch.equal(bridge.lr[0], bridge.lr[1]) and torch.equal(bridge.lr[1], bridge.lr[2])


def test_b100_alias_finds_the_bsd100_folder(shared_data):
    images = load_eval_images("B100", 4, shared_data)
    assert len(images) == 100 and images[0].name == "img_001" and images[0].lr.shape == (3, 120, 80)


def test_generated_lr_is_cached_and_invalidated_when_hr_changes(shared_data, tmp_path, monkeypatch):
    root = tmp_path / "data"
    shutil.copytree(shared_data / "Set5" / "HR", root / "Set5" / "HR")
    first = load_eval_images("Set5", 4, root)
    assert {im.lr_source for im in first} == {"generated"}  # no LR_bicubic folder in this root
    cached = sorted((tmp_path / "cache" / "lr" / "Set5" / "X4").glob("*.png"))
    assert len(cached) == 5
    for im in first:
        assert torch.equal(im.lr, downscale_uint8(im.hr, 4))

    def fail(*args, **kwargs):
        raise AssertionError("LR regenerated although it is cached")

    monkeypatch.setattr("kd.data.files.downscale_uint8", fail)
    again = load_eval_images("Set5", 4, root)
    assert all(torch.equal(a.lr, b.lr) for a, b in zip(first, again))
    monkeypatch.undo()
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))

    baby = root / "Set5" / "HR" / "baby.png"
    write_png(baby, 255 - read_image(baby))  # the HR file changes: its cached LR must not be reused
    changed = {im.name: im for im in load_eval_images("Set5", 4, root)}
    assert torch.equal(changed["baby"].lr, downscale_uint8(changed["baby"].hr, 4))
    assert not torch.equal(changed["baby"].lr, first[0].lr)
    assert len(list((tmp_path / "cache" / "lr" / "Set5" / "X4").glob("baby.*.png"))) == 1  # stale entry removed


def test_lr_source_choices(shared_data, tmp_path):
    generated = load_eval_images("Set5", 2, shared_data, lr_source="generated")
    shipped = load_eval_images("Set5", 2, shared_data, lr_source="shipped")
    assert {im.lr_source for im in generated} == {"generated"} and {im.lr_source for im in shipped} == {"shipped"}
    for g, s in zip(generated, shipped):
        assert (g.lr.int() - s.lr.int()).abs().le(1).float().mean() >= 0.99
    root = tmp_path / "data"
    shutil.copytree(shared_data / "Set5" / "HR", root / "Set5" / "HR")
    from kd.errors import KdError

    with pytest.raises(KdError, match="LR_bicubic"):
        load_eval_images("Set5", 2, root, lr_source="shipped")


def test_mismatched_shipped_lr_falls_back_with_warning_or_fails_when_required(shared_data, tmp_path):
    from kd.errors import KdError

    root = tmp_path / "data"
    shutil.copytree(shared_data / "Set5", root / "Set5")
    write_png(root / "Set5" / "LR_bicubic" / "X2" / "bird.png", torch.zeros(3, 10, 10, dtype=torch.uint8))
    with pytest.warns(UserWarning, match="bird.png"):
        images = {im.name: im for im in load_eval_images("Set5", 2, root)}
    assert images["bird"].lr_source == "generated" and images["bird"].lr.shape == (3, 144, 144)
    assert images["baby"].lr_source == "shipped"
    with pytest.raises(KdError, match="bird.png is 10x10"):
        load_eval_images("Set5", 2, root, lr_source="shipped")
