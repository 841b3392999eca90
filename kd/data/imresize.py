"""MATLAB-compatible bicubic `imresize` and `modcrop` on torch tensors.

The algorithm is MATLAB's `imresize(img, scale, 'bicubic')` (METRICS.md, section 7.1): Keys cubic kernel with
a = -0.5, kernel stretched by 1/scale when downscaling (antialiasing), output pixel x (1-based) sampling input
position x/scale + 0.5 (1 - 1/scale), weights normalised to sum 1, symmetric (mirror) border padding, output size
ceil(in * scale), height first, then width. `border="replicate"` repeats the edge pixel instead: the torch bicubic of
the blind-SR codes (DASR, KDSR: `utils/util2.py`) clamps its indices so (`kd.data.degradations`).

Each dimension is resized in float64 with a dense (out, in) weight matrix (one BLAS product), or, for inputs longer
than `DENSE_LIMIT`, by gathering each output pixel's taps (about 4/scale of them) and weighting them.
"""

from __future__ import annotations

import math

import torch

KERNEL_WIDTH = 4.0  # support of the Keys cubic kernel
DENSE_LIMIT = 1024  # input sizes up to this use a dense weight matrix, larger ones a gather of the taps


def cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys cubic convolution kernel, a = -0.5."""
    ax = x.abs()
    ax2 = ax * ax
    ax3 = ax2 * ax
    inner = 1.5 * ax3 - 2.5 * ax2 + 1.0
    outer = -0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0
    return torch.where(ax <= 1, inner, torch.where(ax <= 2, outer, torch.zeros_like(ax)))


def output_size(in_size: int, scale: float) -> int:
    """ceil(in * scale), robust to 1/3-style scales that are not exact in binary floating point."""
    return math.ceil(round(in_size * scale, 9))


BORDERS = ("symmetric", "replicate")


def resize_weights(in_size: int, out_size: int, scale: float, antialiasing: bool = True, border: str = "symmetric"):
    """Per output pixel: 0-based input indices (out, taps), mirrored (or clamped, `border="replicate"`) into range,
    and float64 weights (out, taps)."""
    if border not in BORDERS:
        raise ValueError(f"imresize border must be one of {', '.join(BORDERS)}, got {border!r}")
    use_aa = antialiasing and scale < 1
    kernel_width = KERNEL_WIDTH / scale if use_aa else KERNEL_WIDTH
    x = torch.arange(1, out_size + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # 1-based input coordinate that output pixel x samples
    left = torch.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]  # 1-based, may fall outside
    distance = u[:, None] - indices
    weights = scale * cubic(scale * distance) if use_aa else cubic(distance)
    weights = weights / weights.sum(dim=1, keepdim=True)
    if border == "replicate":
        return (indices - 1).clamp(0, in_size - 1).long(), weights
    # Symmetric padding: index sequence ..., 2, 1 | 1, 2, ..., n | n, n-1, ...
    zero_based = (indices - 1).long() % (2 * in_size)
    mirrored = torch.where(zero_based < in_size, zero_based, 2 * in_size - 1 - zero_based)
    return mirrored, weights


def resize_matrix(in_size: int, out_size: int, scale: float, antialiasing: bool = True,
                  border: str = "symmetric") -> torch.Tensor:
    """Dense float64 (out_size, in_size) matrix M with resized = M @ signal along one dimension."""
    indices, weights = resize_weights(in_size, out_size, scale, antialiasing, border)
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    return matrix.scatter_add_(1, indices, weights)


def _resize_last_but_one(x: torch.Tensor, out_size: int, scale: float, antialiasing: bool,
                         border: str) -> torch.Tensor:
    """Resize dimension -2 of a float64 tensor."""
    in_size = x.shape[-2]
    if in_size <= DENSE_LIMIT:  # one BLAS product; fastest for benchmark-sized images
        return torch.matmul(resize_matrix(in_size, out_size, scale, antialiasing, border).to(x.device), x)
    # Large inputs: the dense matrix would be mostly zeros, so gather each output row's taps and weight them.
    indices, weights = resize_weights(in_size, out_size, scale, antialiasing, border)
    taps = indices.shape[1]
    gathered = x.index_select(-2, indices.reshape(-1).to(x.device))
    gathered = gathered.reshape(*x.shape[:-2], out_size, taps, x.shape[-1])
    return torch.matmul(weights.to(x.device)[:, None, :], gathered).squeeze(-2)


def imresize(img: torch.Tensor, scale: float, antialiasing: bool = True, border: str = "symmetric") -> torch.Tensor:
    """Resize a float tensor (..., C, H, W) by `scale` like MATLAB's bicubic `imresize`.

    Computed in float64; returned in the input dtype, unrounded and unclamped (any value range works, the
    operation is linear). Use scale 1/s to downscale by s, and s to upsample (the bicubic baseline).
    """
    if not torch.is_floating_point(img):
        raise TypeError(f"imresize expects a floating-point tensor, got {img.dtype}; convert uint8 with .double()/255")
    if img.ndim < 2:
        raise ValueError(f"imresize expects (..., H, W), got shape {tuple(img.shape)}")
    if not scale > 0:
        raise ValueError(f"imresize scale must be positive, got {scale}")
    in_h, in_w = img.shape[-2:]
    out_h, out_w = output_size(in_h, scale), output_size(in_w, scale)
    x = img.to(torch.float64)
    x = _resize_last_but_one(x, out_h, scale, antialiasing, border)  # height first
    x = _resize_last_but_one(x.transpose(-1, -2), out_w, scale, antialiasing, border).transpose(-1, -2)  # then width
    return x.to(img.dtype)


def modcrop(img: torch.Tensor, scale: int) -> torch.Tensor:
    """Top-left crop of (..., H, W) to H - H mod scale, W - W mod scale."""
    h, w = img.shape[-2:]
    return img[..., : h - h % scale, : w - w % scale]


def downscale_uint8(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """The benchmark LR image: MATLAB bicubic downscale of a (modcropped) uint8 image, rounded to uint8."""
    lr = imresize(hr.to(torch.float64) / 255.0, 1.0 / scale)
    return (lr * 255.0).round().clamp(0, 255).to(torch.uint8)
