"""Image-quality metrics with the SR-paper convention (see METRICS.md): PSNR/SSIM on Y, LPIPS on RGB."""

from __future__ import annotations

from kd.metrics.psnr_ssim import psnr_rgb, psnr_y, quantize, rgb_to_y_bt601, ssim_rgb, ssim_y

# The convention every kdbench result is computed with (METRICS.md section 1); attached to result files.
METRIC_SPEC: dict = {
    "color": "ycbcr_bt601_y",
    "y_rounding": "none",
    "crop_border": "scale",
    "gt_modcrop": "scale",
    "sr_quantize": "uint8-round",
    "ssim": {"win": 11, "sigma": 1.5, "k1": 0.01, "k2": 0.03, "L": 255, "mode": "valid", "downsample": False},
    "average": "mean-of-per-image",
    "lr_resize": "matlab_bicubic_aa",
}

__all__ = ["METRIC_SPEC", "psnr_rgb", "psnr_y", "quantize", "rgb_to_y_bt601", "ssim_rgb", "ssim_y"]
