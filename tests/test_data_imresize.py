from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kd.data.imresize import downscale_uint8, imresize, modcrop


def _brute_force_resize_1d(signal: list[float], scale: float) -> list[float]:
    """MATLAB imresize along one dimension, pixel by pixel, written from METRICS.md 7.1 (no shared code)."""
    n = len(signal)
    out_n = math.ceil(round(n * scale, 9))
    antialias = scale < 1
    width = 4 / scale if antialias else 4

    def keys(t: float) -> float:
        t = abs(t)
        if t <= 1:
            return 1.5 * t**3 - 2.5 * t**2 + 1
        if t <= 2:
            return -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2
        return 0.0

    def mirror(i: int) -> int:  # 1-based index into 1..n, symmetric padding
        while i < 1 or i > n:
            i = 1 - i if i < 1 else 2 * n + 1 - i
        return i

    result = []
    for x in range(1, out_n + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        first = math.floor(u - width / 2)
        positions = range(first, first + math.ceil(width) + 2)
        taps = [(j, scale * keys(scale * (u - j)) if antialias else keys(u - j)) for j in positions]
        total = sum(w for _, w in taps)
        result.append(sum(w * signal[mirror(j) - 1] for j, w in taps) / total)
    return result


def _brute_force_resize(image: torch.Tensor, scale: float) -> torch.Tensor:
    rows = [_brute_force_resize_1d(col, scale) for col in image.T.tolist()]  # height first
    tall = torch.tensor(rows, dtype=torch.float64).T
    return torch.tensor([_brute_force_resize_1d(row, scale) for row in tall.tolist()], dtype=torch.float64)


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 1 / 8, 2, 3, 4, 0.7])
def test_matches_brute_force_including_borders(scale):
    torch.manual_seed(0)
    image = torch.rand(13, 17, dtype=torch.float64)
    ours = imresize(image, scale)
    reference = _brute_force_resize(image, scale)
    assert ours.shape == reference.shape
    assert torch.allclose(ours, reference, atol=1e-12, rtol=0)


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 3])
def test_long_inputs_take_the_gather_path_and_agree(scale):
    from kd.data.imresize import DENSE_LIMIT

    torch.manual_seed(1)
    image = torch.rand(DENSE_LIMIT + 7, 5, dtype=torch.float64)
    ours = imresize(image, scale)
    reference = _brute_force_resize(image, scale)
    assert ours.shape == reference.shape
    assert torch.allclose(ours, reference, atol=1e-12, rtol=0)


@pytest.mark.parametrize("s", [2, 3, 4])
def test_downscale_matches_torch_antialias_in_interior(s):
    """METRICS.md 7.2/13: torch antialiased bicubic (Keys a=-0.5) equals MATLAB's away from the border."""
    torch.manual_seed(s)
    image = torch.rand(2, 3, 24 * s, 20 * s, dtype=torch.float64)
    ours = imresize(image, 1 / s)
    theirs = F.interpolate(image, scale_factor=1 / s, mode="bicubic", antialias=True, align_corners=False)
    assert ours.shape == theirs.shape == (2, 3, 24, 20)
    interior = (ours - theirs)[..., 3:-3, 3:-3].abs().max().item()
    assert interior <= 1e-4
    # and they do differ at the border (mirror padding vs renormalised truncation): the comparison has teeth
    assert (ours - theirs).abs().max().item() > 1e-3


@pytest.mark.parametrize("s", [2, 3, 4])
def test_upscale_matches_torch_antialias_in_interior(s):
    torch.manual_seed(10 + s)
    image = torch.rand(1, 3, 16, 14, dtype=torch.float64)
    ours = imresize(image, s)
    theirs = F.interpolate(image, scale_factor=s, mode="bicubic", antialias=True, align_corners=False)
    assert (ours - theirs)[..., 3 * s : -3 * s, 3 * s : -3 * s].abs().max().item() <= 1e-4


def test_dtype_size_constant_and_batch_dims():
    image = torch.rand(2, 1, 228, 344, dtype=torch.float32)
    out = imresize(image, 1 / 3)
    assert out.dtype == torch.float32 and out.shape == (2, 1, 76, 115)  # ceil(344 / 3) = 115, 228 / 3 exactly 76
    assert imresize(torch.full((3, 30, 30), 0.37, dtype=torch.float64), 1 / 4).sub(0.37).abs().max() < 1e-12
    single = imresize(image[1], 1 / 3)
    assert torch.allclose(out[1], single, atol=1e-6)


def test_rejects_integer_tensors():
    with pytest.raises(TypeError):
        imresize(torch.zeros(3, 8, 8, dtype=torch.uint8), 0.5)


def test_modcrop_is_top_left():
    image = torch.arange(3 * 7 * 10).reshape(3, 7, 10)
    cropped = modcrop(image, 3)
    assert cropped.shape == (3, 6, 9)
    assert torch.equal(cropped, image[:, :6, :9])
    assert modcrop(image, 1).shape == image.shape


def test_downscale_uint8_rounds_the_float_result():
    torch.manual_seed(3)
    hr = torch.randint(0, 256, (3, 24, 36), dtype=torch.uint8)
    lr = downscale_uint8(hr, 4)
    expected = (imresize(hr.double() / 255, 0.25) * 255).round().clamp(0, 255)
    assert lr.dtype == torch.uint8 and lr.shape == (3, 6, 9)
    assert torch.equal(lr.double(), expected)
