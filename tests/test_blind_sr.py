"""The blind-SR track (`data.degradation`, kd/data/degradations.py): kernels and degraded images as the official KDSR
code makes them, Gaussian8 averaging, the cached test images, training patches, and the option in the run id."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from kd.config import RunConfig, config_hash, resolve, run_id, run_prefix
from kd.data import degradations
from kd.data.degradations import (
    KERNEL_SIZE, PROTOCOLS, Kernel, anisotropic_kernel, blur, degrade, isotropic_kernel, load_degraded_sets, protocol,
)
from kd.data.imresize import imresize
from kd.data.io import write_png
from kd.errors import KdError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIXTURE = Path(__file__).parent / "fixtures" / "kdsr_degradations.pt"  # provenance: fixtures/PROVENANCE.md


@pytest.fixture(scope="module")
def official() -> dict:
    return torch.load(FIXTURE, map_location="cpu", weights_only=True)


@pytest.fixture
def images(tmp_path, monkeypatch) -> Path:
    """A folder of two small HR images (non-square, sides not divisible by 4) and an empty cache."""
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    g = torch.Generator().manual_seed(3)
    for i, (h, w) in enumerate(((50, 62), (45, 70))):
        image = torch.nn.functional.avg_pool2d(torch.rand(1, 3, h + 2, w + 2, generator=g), 3, stride=1)[0]
        write_png(tmp_path / "photos" / "HR" / f"img{i}.png", (image * 255).round().to(torch.uint8))
    return tmp_path / "photos"


# ------------------------------------------------------------------------------------------------ kernels


def test_gaussian8_kernels_are_the_official_test_lists():
    sigmas = {scale: [k.sigma for k in protocol("iso_gaussian").kernels(scale)] for scale in (2, 4)}
    assert sigmas == {4: [1.8, 2.0, 2.2, 2.4, 2.6, 2.8, 3.0, 3.2], 2: [0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6]}
    assert PROTOCOLS["iso_gaussian"].sigma_range == (0.2, 4.0) and KERNEL_SIZE == 21
    (aniso,) = protocol("aniso_gaussian").kernels(4)
    assert (aniso.lambdas, aniso.theta, aniso.noise) == ((3.5, 1.5), 30.0, 10.0)
    with pytest.raises(KdError, match="x2, x4 only.*--scale 2 or 4"):
        protocol("iso_gaussian").kernels(3)


def test_kernels_match_the_official_code(official):
    for sigma, theirs in official["iso_kernels"].items():
        ours = isotropic_kernel(sigma)
        assert ours.shape == (21, 21) and ours.sum().item() == pytest.approx(1.0, abs=1e-12)
        torch.testing.assert_close(ours, theirs.double(), rtol=0, atol=1e-7)  # theirs: float32
    for (lambda_1, lambda_2, theta), theirs in official["aniso_kernels"].items():
        ours = anisotropic_kernel(lambda_1, lambda_2, math.radians(theta))
        assert ours.sum().item() == pytest.approx(1.0, abs=1e-12)
        torch.testing.assert_close(ours, theirs.double(), rtol=0, atol=1e-7)
    # by the definition, independently of both: isotropic exp(-(x^2 + y^2) / (2 sigma^2)) / sum, centred
    grid = np.arange(21) - 10
    direct = np.exp(-(grid[None, :] ** 2 + grid[:, None] ** 2) / (2 * 2.6**2))
    np.testing.assert_allclose(isotropic_kernel(2.6).numpy(), direct / direct.sum(), atol=1e-15)
    elongated = anisotropic_kernel(3.0, 0.5, 0.0)  # theta 0: the long axis runs along x, the columns
    assert elongated[10, 14] > 10 * elongated[14, 10]


def test_degraded_lr_images_are_the_official_ones(official):
    """Blur (reflection padding), bicubic down with repeated borders, 8-bit quantisation: the official LR, pixel for
    pixel, at x2 and x4, isotropic and anisotropic."""
    for (kind, scale, parameters), theirs in official["lr"].items():
        kernel = isotropic_kernel(parameters) if kind == "iso" else anisotropic_kernel(
            parameters[0], parameters[1], math.radians(parameters[2]))
        assert torch.equal(degrade(official["hr"], kernel, scale), theirs), (kind, scale, parameters)


def test_blur_is_the_reflection_padded_correlation_and_the_border_only_changes_the_edge():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 30, 26, generator=g, dtype=torch.float64)
    kernel = anisotropic_kernel(2.0, 0.7, 0.4)
    padded = torch.nn.functional.pad(image[None], (10, 10, 10, 10), mode="reflect")
    direct = torch.nn.functional.conv2d(padded.transpose(0, 1), kernel[None, None])[:, 0]
    torch.testing.assert_close(blur(image, kernel), direct, rtol=0, atol=1e-12)
    replicate, symmetric = imresize(image, 0.25, border="replicate"), imresize(image, 0.25)
    assert torch.equal(replicate[:, 2:-2, 2:-2], symmetric[:, 2:-2, 2:-2])
    assert not torch.allclose(replicate[:, 0], symmetric[:, 0])
    flat = torch.ones(1, 12, 12, dtype=torch.float64)  # weights sum to 1 with either border
    torch.testing.assert_close(imresize(flat, 0.25, border="replicate"), torch.ones(1, 3, 3, dtype=torch.float64))


# ------------------------------------------------------------------------------------------------ test sets


def test_gaussian8_score_is_the_mean_over_kernels_and_images(images):
    from kd.evaluate import evaluate
    from kd.models import create

    result = evaluate(create("bicubic", 4), [str(images)], 4, with_lpips=False, progress=False,
                      degradation="iso_gaussian")
    per_image, [row] = result.per_image, result.per_dataset.to_dict("records")
    assert len(per_image) == 8 * 2 and per_image["lr_source"].nunique() == 8
    by_kernel = per_image.groupby("lr_source")["psnr_y"].mean()
    assert row["psnr_y"] == pytest.approx(by_kernel.mean()) == pytest.approx(per_image["psnr_y"].mean())
    assert row["ssim_y"] == pytest.approx(per_image.groupby("lr_source")["ssim_y"].mean().mean())
    assert row["images"] == 2 and row["lr_source"] == "iso_gaussian: mean of 8 kernels"
    blurrier = by_kernel["iso_gaussian sigma3.2"] < by_kernel["iso_gaussian sigma1.8"]  # bicubic cannot deblur
    bicubic = evaluate(create("bicubic", 4), [str(images)], 4, with_lpips=False, progress=False)
    assert blurrier and bicubic.per_dataset["psnr_y"][0] > row["psnr_y"]


def test_test_images_are_made_once_deterministically_and_cached(images, tmp_path, monkeypatch):
    first = load_degraded_sets(str(images), 4, "aniso_gaussian")
    [(kernel, pairs)] = first
    folders = list((tmp_path / "cache" / "lr-blind").glob("*/aniso_gaussian-*/X4/aniso3.5x1.5r30n10"))
    assert len(folders) == 1 and len(list(folders[0].glob("*.png"))) == 2
    assert folders[0].parts[-3].endswith(protocol("aniso_gaussian").fingerprint()[:12])
    assert [pair.lr_source for pair in pairs] == ["aniso_gaussian aniso3.5x1.5r30n10"] * 2
    monkeypatch.setattr(degradations, "degrade", lambda *a, **k: pytest.fail("not read from the cache"))
    again = load_degraded_sets(str(images), 4, "aniso_gaussian")
    assert all(torch.equal(a.lr, b.lr) for a, b in zip(pairs, again[0][1]))
    monkeypatch.undo()
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "elsewhere"))  # made afresh: the same bytes, noise included
    fresh = load_degraded_sets(str(images), 4, "aniso_gaussian")
    assert all(torch.equal(a.lr, b.lr) for a, b in zip(pairs, fresh[0][1]))
    # pinned: images made otherwise need a new GENERATOR_VERSION (it is in the fingerprint, so in the run ids)
    assert [hashlib.sha256(pair.lr.numpy().tobytes()).hexdigest()[:16] for pair in pairs] == PINNED_ANISO_LR


PINNED_ANISO_LR = ["3eeedf7c7613e95d", "b3dc21cffaa93336"]  # GENERATOR_VERSION 1


def test_the_protocol_fingerprint_is_in_the_run_inputs(tmp_path, monkeypatch):
    from kd.engine.identity import run_inputs

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    base = [("test", {"method": {"name": "none"}, "eval": {"datasets": ["default"], "val_dataset": None}})]
    bicubic = resolve(base)
    blind = resolve([*base, ("track", {"data": {"degradation": "iso_gaussian"}})])
    assert "degradation" not in run_inputs(bicubic)  # ids of the classical track unchanged
    identity = run_inputs(blind)["degradation"]
    assert identity == {"name": "iso_gaussian", "protocol_sha256": protocol("iso_gaussian").fingerprint()[:16]}
    monkeypatch.setattr(degradations, "GENERATOR_VERSION", degradations.GENERATOR_VERSION + 1)
    assert run_inputs(blind)["degradation"] != identity
    assert run_id(blind, run_inputs(blind)) != run_id(blind, {**run_inputs(blind), "degradation": identity})


# ------------------------------------------------------------------------------------------------ the option


def test_the_option_is_in_the_run_id_and_leaves_the_classical_ids_alone():
    default = RunConfig()
    blind = resolve([("track", {"data": {"degradation": "iso_gaussian"}})])
    assert config_hash(blind) != config_hash(default)
    assert run_prefix(blind) == "asid-none-noteacher-x4-cpu-iso_gaussian-s0"
    assert run_prefix(default) == "asid-none-noteacher-x4-cpu-s0"
    # at its default the option is out of the hash: tests/test_run_identity.py pins ids computed before it existed
    assert resolve([("track", {"data": {"degradation": "aniso_gaussian"}}), ("x3", {"scale": 3})]).scale == 3
    with pytest.raises(KdError, match="iso_gaussian: its Gaussian8 test is defined for x2, x4 only"):
        resolve([("track", {"data": {"degradation": "iso_gaussian"}}), ("x3", {"scale": 3})])
    with pytest.raises(KdError, match="data.degradation.*iso_gaussian"):
        resolve([("track", {"data": {"degradation": "iso_gausian"}})])


def test_a_blind_sr_teacher_is_its_own_zoo_entry():
    """The bicubic key is unchanged (tests/test_committed_identity.py recomputes the committed records' keys); the
    same teacher and recipe on the blind-SR track is another entry, named for its track."""
    from kd.engine.teachers import zoo_key
    from kd.profiles import profile_layer, resolve_layers

    bicubic = resolve_layers([profile_layer("cpu")])
    blind = resolve_layers([profile_layer("cpu"), ("track", {"data": {"degradation": "iso_gaussian"}})])
    assert zoo_key(bicubic).startswith("rcan-mini-x4-291-train-seed0-")
    assert zoo_key(blind) == zoo_key(bicubic).replace("291-train", "291-train-iso_gaussian")


# ------------------------------------------------------------------------------------------------ training


def test_training_patches_share_one_kernel_per_batch_and_are_pure(images, monkeypatch):
    from kd.data import patches
    from kd.data.patches import PatchDataset

    drawn = []
    original = patches.draw_training
    monkeypatch.setattr(patches, "draw_training", lambda *a: drawn.append(original(*a)) or drawn[-1])
    dataset = PatchDataset(str(images), 4, 8, seed=5, degradation="iso_gaussian", batch_size=3, length=9)
    items = [dataset[i] for i in range(6)]
    kernels = [d.kernel for d in drawn]
    assert all(torch.equal(k, kernels[0]) for k in kernels[:3]) and not torch.equal(kernels[2], kernels[3])
    assert all(torch.equal(k, kernels[3]) for k in kernels[3:6])
    lr, hr = items[4]
    assert lr.shape == (3, 8, 8) and hr.shape == (3, 32, 32)
    assert torch.equal(dataset[4][0], lr) and torch.equal(dataset[4][1], hr)  # a pure function of (seed, index)
    # the LR is the HR patch degraded with its batch's kernel
    expected = degrade((hr * 255).round().to(torch.uint8), kernels[4], 4).float() / 255
    assert torch.equal(lr, expected)
    for batch in range(2):  # sigma uniform in [0.2, 4.0], drawn from the batch's own stream
        sigma = np.random.default_rng([5, patches._DEGRADATION_STREAM, batch]).uniform(0.2, 4.0)
        assert torch.equal(kernels[3 * batch], isotropic_kernel(sigma))

    noisy = PatchDataset(str(images), 4, 8, seed=5, degradation="aniso_gaussian", batch_size=2, length=4)
    assert not torch.equal(noisy[0][0], noisy[1][0])
    with pytest.raises(KdError, match="data.degradation"):
        PatchDataset(str(images), 4, 8, degradation="blurry")


def test_eval_command_evaluates_a_blind_sr_track_and_records_it(images, tmp_path, capsys):
    from kd.cli import main

    out = tmp_path / "scores.csv"
    assert main(["eval", "--model", "bicubic", "--data", str(images), "--scale", "4", "--degradation",
                 "iso_gaussian", "--no-lpips", "--no-progress", "--out", str(out), "--save-images",
                 str(tmp_path / "sr")]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "iso_gaussian: mean of 8 kernels" in shown
    assert "ref =" not in shown and "published =" not in shown  # bicubic-track references are not beside it
    assert json.loads(out.with_name(out.name + ".meta.json").read_text())["degradation"] == "iso_gaussian"
    assert len(list((tmp_path / "sr").rglob("img0_sigma*.png"))) == 8
    again = ["eval", "--model", "bicubic", "--data", str(images), "--scale", "4", "--degradation", "iso_gaussian",
             "--no-lpips", "--no-progress", "--save-images", str(tmp_path / "sr")]
    assert main(again) == 2 and "--force" in capsys.readouterr().err  # the kernels' images are never replaced
    assert main(["eval", "--model", "bicubic", "--data", str(images), "--scale", "3", "--degradation",
                 "iso_gaussian", "--no-progress"]) == 2
    assert "defined for x2, x4 only" in " ".join(capsys.readouterr().err.split())


def test_aniso_protocol_kernel_label_is_path_safe():
    assert Kernel(sigma=1.8).label == "sigma1.8"
    assert Kernel(lambdas=(3.5, 1.5), theta=30.0, noise=10.0).label == "aniso3.5x1.5r30n10"


def test_the_reports_visual_comparison_shows_the_middle_test_kernel(images):
    """A blind-SR configuration's figure crops come from its middle Gaussian8 kernel (sigma 2.6 at x4), and a
    teacher that needs the HR gets the HR window beside the LR one."""
    from kd.models import create
    from kd.report.visual import Crop, _test_pairs, sr_crop

    pairs = _test_pairs(str(images), 4, None, "iso_gaussian")
    assert [pair.lr_source for pair in pairs] == ["iso_gaussian sigma2.6"] * 2
    assert _test_pairs(str(images), 4, None, "bicubic")[0].lr_source == "generated"
    crop = sr_crop(create("kdsr_teacher", 4, "tiny"), pairs[0].lr, 4, Crop(8, 12, 16), pairs[0].hr)
    assert crop.shape == (3, 16, 16) and crop.dtype == torch.uint8
