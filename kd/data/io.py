"""Image files <-> uint8 RGB tensors (3, H, W).

Every kdbench image enters through `read_image`: one channel layout (RGB), one dtype (uint8), whatever the file
holds (grey, palette, RGBA, 16-bit). Files are written with `write_png`, atomically.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from kd.errors import KdError
from kd.fileio import atomic_write

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg")
MAX_PIXELS_ENV = "KDBENCH_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 100_000_000

# Pillow decodes 16-bit RGB(A) PNGs by keeping only the high byte. Decoding the same data a second time with the
# little-endian raw mode (same bytes per pixel, so the same PNG unfiltering) yields the low bytes instead.
_HIGH_TO_LOW_RAWMODE = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L"}


def read_image(path: Path | str) -> torch.Tensor:
    """Read a PNG, BMP or JPEG file as a uint8 tensor (3, H, W), RGB.

    Grey images become 3 identical channels; an alpha channel is dropped (with a warning); 16-bit samples are
    mapped to 8 bits as round(v / 257). A missing, corrupt or truncated file raises `KdError` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise KdError(f"image file not found: {path}")
    limit = max_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies below
            with Image.open(path) as im:
                _check_size(im.size, path, limit)
                array = _decode(im, path)
    except KdError:
        raise
    except Image.DecompressionBombError as exc:
        raise KdError(f"image {path} is too large to decode safely ({exc}); kdbench reads images up to "
                      f"{limit:,} pixels (${MAX_PIXELS_ENV}).") from None
    except MemoryError:
        raise KdError(f"not enough memory to decode image {path}; lower ${MAX_PIXELS_ENV} or free memory.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise KdError(f"cannot read image {path}: {exc} (the file is corrupt, truncated or not an image)") from exc
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def max_pixels() -> int:
    """Largest image (width x height) kdbench decodes: `$KDBENCH_MAX_PIXELS`, default 100 million."""
    value = os.environ.get(MAX_PIXELS_ENV, "")
    if not value:
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(float(value))
    except ValueError:
        limit = 0
    if limit <= 0:
        raise KdError(f"${MAX_PIXELS_ENV} must be a positive number of pixels, got '{value}'.")
    return limit


def _check_size(size: tuple[int, int], path: Path, limit: int) -> None:
    """The header's size, before any pixel is decoded: a tiny file may declare a huge image."""
    width, height = size
    if width * height > limit:
        raise KdError(f"image {path} declares {width}x{height} = {width * height:,} pixels, over kdbench's limit of "
                      f"{limit:,}; shrink or crop it, or raise the limit with ${MAX_PIXELS_ENV}=N.")


def _decode(im: Image.Image, path: Path) -> np.ndarray:
    """Decoded pixels as uint8 (H, W, 3)."""
    rawmode = _png_rawmode(im)
    if rawmode in _HIGH_TO_LOW_RAWMODE:
        high = np.asarray(_load(im, path)).astype(np.uint32)
        with Image.open(path) as again:
            again.tile = [tile._replace(args=_HIGH_TO_LOW_RAWMODE[rawmode]) for tile in again.tile]
            low = np.asarray(_load(again, path)).astype(np.uint32)
        array = _to_8bit(high * 256 + low)
        if array.shape[2] == 4:
            _warn_alpha(path)
            array = array[:, :, :3]
        return array

    im = _load(im, path)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(im).astype(np.int64)
        if values.min() < 0 or values.max() > 65535:
            raise KdError(f"cannot read image {path}: integer samples outside the 16-bit range")
        return np.repeat(_to_8bit(values)[:, :, None], 3, axis=2)
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        _warn_alpha(path)
        im = im.convert("L") if im.mode in ("LA", "La") else im.convert("RGB")
    if im.mode in ("L", "1"):
        return np.repeat(np.asarray(im.convert("L"))[:, :, None], 3, axis=2)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im)


def _load(im: Image.Image, path: Path) -> Image.Image:
    try:
        im.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise KdError(f"cannot read image {path}: {exc} (the file is corrupt or truncated)") from exc
    return im


def _png_rawmode(im: Image.Image) -> str | None:
    if im.format != "PNG" or not im.tile:
        return None
    args = im.tile[0].args
    return args if isinstance(args, str) else None


def _to_8bit(values: np.ndarray) -> np.ndarray:
    # round(v / 257) without floating point; v / 257 is never exactly k + 0.5 because 257 is odd.
    return ((values.astype(np.int64) * 2 + 257) // 514).astype(np.uint8)


def _warn_alpha(path: Path) -> None:
    warnings.warn(f"{path}: alpha channel dropped (kdbench works on RGB)", stacklevel=4)


def write_png(path: Path | str, image: torch.Tensor) -> Path:
    """Write a uint8 image (3, H, W), (1, H, W) or (H, W) as PNG, via a temporary file and a rename."""
    path = Path(path)
    if image.dtype != torch.uint8:
        raise TypeError(f"write_png expects a uint8 tensor, got {image.dtype}")
    array = image.detach().cpu()
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 3 and array.shape[0] == 3:
        pil = Image.fromarray(array.permute(1, 2, 0).contiguous().numpy())
    elif array.ndim == 2:
        pil = Image.fromarray(array.contiguous().numpy())
    else:
        raise ValueError(f"write_png expects (3, H, W), (1, H, W) or (H, W), got shape {tuple(image.shape)}")
    return atomic_write(path, lambda handle: pil.save(handle, format="PNG"))
