"""PSNR and SSIM with the SR-paper convention (BasicSR / MATLAB protocol; METRICS.md sections 3, 5, 6).

Every metric takes uint8-valued RGB images, (3, H, W) or batched (B, 3, H, W), and does its arithmetic in float64
on the [0, 255] scale. `crop_border` pixels are removed from every side first (kdbench uses crop_border = scale).
An unbatched call returns a float; a batched call returns a float64 tensor of shape (B,), one value per image.
"""

from __future__ import annotations

import numpy as np
import torch

# ITU-R BT.601 studio-swing luma on [0, 1] RGB: 219 * (0.299, 0.587, 0.114), offset 16 (MATLAB rgb2ycbcr).
Y_OFFSET = 16.0
Y_COEFFS = (65.481, 128.553, 24.966)

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
DATA_RANGE = 255.0

MetricValue = float | torch.Tensor


def quantize(sr: torch.Tensor) -> torch.Tensor:
    """Network output in [0, 1] (float) -> uint8: clamp, x255, round half to even (as torch.round / numpy)."""
    return sr.detach().float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)


def rgb_to_y_bt601(img: torch.Tensor) -> torch.Tensor:
    """RGB (..., 3, H, W) -> Y (..., H, W) in [16, 235], float64, unrounded.

    Float input is taken as RGB in [0, 1]; uint8 input is divided by 255 first.
    """
    img = torch.as_tensor(img)
    if img.shape[-3] != 3:
        raise ValueError(f"expected 3 RGB channels in dim -3, got shape {tuple(img.shape)}")
    rgb = img.to(torch.float64)
    if img.dtype == torch.uint8:
        rgb = rgb / 255.0
    r, g, b = rgb.unbind(dim=-3)
    return Y_OFFSET + Y_COEFFS[0] * r + Y_COEFFS[1] * g + Y_COEFFS[2] * b


def prepare_pair(sr, hr, crop_border: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Validate a uint8 pair, add a batch dim if needed and crop the border -> (sr, hr, was_batched)."""
    sr, hr = _as_uint8_tensor(sr, "sr"), _as_uint8_tensor(hr, "hr")
    if sr.shape != hr.shape:
        raise ValueError(f"sr and hr shapes differ: {tuple(sr.shape)} vs {tuple(hr.shape)}")
    batched = sr.dim() == 4
    if not batched:
        sr, hr = sr.unsqueeze(0), hr.unsqueeze(0)
    if sr.dim() != 4 or sr.shape[1] != 3:
        raise ValueError(f"expected (3, H, W) or (B, 3, H, W) images, got {tuple(sr.shape)}")
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border:
        if min(sr.shape[-2:]) <= 2 * crop_border:
            raise ValueError(f"image {tuple(sr.shape[-2:])} too small for crop_border={crop_border}")
        sr = sr[..., crop_border:-crop_border, crop_border:-crop_border]
        hr = hr[..., crop_border:-crop_border, crop_border:-crop_border]
    return sr, hr, batched


def _as_uint8_tensor(img, name: str) -> torch.Tensor:
    if isinstance(img, np.ndarray):
        img = torch.from_numpy(np.ascontiguousarray(img))
    if not isinstance(img, torch.Tensor) or img.dtype != torch.uint8:
        dtype = getattr(img, "dtype", type(img).__name__)
        raise TypeError(f"{name} must be a uint8 image (quantise network output with quantize()); got {dtype}")
    return img


def _finish(values: torch.Tensor, batched: bool) -> MetricValue:
    return values if batched else float(values[0])


def _psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a, b float64 (B, ...) on [0, 255] -> PSNR per image; inf where the images are identical."""
    mse = (a - b).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(DATA_RANGE**2 / mse)  # mse == 0 gives inf, as BasicSR


def _gaussian_taps(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    taps = torch.exp(-(x**2) / (2 * sigma**2))
    return taps / taps.sum()


def _filter_valid(x: torch.Tensor, taps: list[float]) -> torch.Tensor:
    """Separable 2-D filter on (..., H, W), 'valid' region only (no padding).

    Written as sums of shifted slices: equal to conv2d to the last bit here, and several times faster in float64.
    """
    n = len(taps)
    height, width = x.shape[-2] - n + 1, x.shape[-1] - n + 1
    rows = x[..., 0:height, :] * taps[0]
    for i in range(1, n):
        rows.add_(x[..., i : i + height, :], alpha=taps[i])
    out = rows[..., 0:width] * taps[0]
    for i in range(1, n):
        out.add_(rows[..., i : i + width], alpha=taps[i])
    return out


def _ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a, b float64 (B, C, H, W) on [0, 255] -> mean SSIM per image (map averaged over channels and pixels)."""
    batch, channels, height, width = a.shape
    if min(height, width) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} after cropping")
    c1 = (SSIM_K1 * DATA_RANGE) ** 2
    c2 = (SSIM_K2 * DATA_RANGE) ** 2
    taps = _gaussian_taps().tolist()
    x = a.reshape(batch * channels, height, width)
    y = b.reshape(batch * channels, height, width)
    # One filtering pass over the five moment images.
    moments = _filter_valid(torch.cat([x, y, x * x, y * y, x * y]), taps)
    mu_x, mu_y, xx, yy, xy = moments.chunk(5)
    var_x = xx - mu_x**2
    var_y = yy - mu_y**2
    cov = xy - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.reshape(batch, -1).mean(dim=1)


def psnr_y(sr, hr, crop_border: int) -> MetricValue:
    """PSNR on BT.601 Y (float, unrounded), uint8 RGB inputs, `crop_border` px cropped, float64."""
    sr, hr, batched = prepare_pair(sr, hr, crop_border)
    return _finish(_psnr(rgb_to_y_bt601(sr), rgb_to_y_bt601(hr)), batched)


def ssim_y(sr, hr, crop_border: int) -> MetricValue:
    """SSIM on BT.601 Y: 11x11 Gaussian (sigma 1.5), K1 0.01, K2 0.03, L 255, valid filtering, no downsampling."""
    sr, hr, batched = prepare_pair(sr, hr, crop_border)
    return _finish(_ssim(rgb_to_y_bt601(sr).unsqueeze(1), rgb_to_y_bt601(hr).unsqueeze(1)), batched)


def psnr_rgb(sr, hr, crop_border: int) -> MetricValue:
    """PSNR over all three RGB channels (a labelled variant; papers report Y), float64."""
    sr, hr, batched = prepare_pair(sr, hr, crop_border)
    return _finish(_psnr(sr.to(torch.float64), hr.to(torch.float64)), batched)


def ssim_rgb(sr, hr, crop_border: int) -> MetricValue:
    """SSIM computed per RGB channel and averaged (BasicSR's 3-channel behaviour; a labelled variant)."""
    sr, hr, batched = prepare_pair(sr, hr, crop_border)
    return _finish(_ssim(sr.to(torch.float64), hr.to(torch.float64)), batched)
