from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kd.data.io import read_image, write_png
from kd.errors import KdError

RNG = np.random.default_rng(0)


def _png16(path: Path, array: np.ndarray, filters: tuple[int, ...] = (0, 1, 2)) -> None:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit RGB), rows cycling through None/Sub/Up filters."""
    h, w, c = array.shape
    color_type = {1: 0, 3: 2, 4: 6}[c]
    raw = array.astype(">u2").view(np.uint8).reshape(h, w * c * 2).astype(np.int16)
    bpp = c * 2
    rows = []
    for y in range(h):
        kind = filters[y % len(filters)]
        line = raw[y]
        if kind == 1:  # Sub: difference to the byte one pixel to the left
            line = line - np.concatenate([np.zeros(bpp, np.int16), raw[y, :-bpp]])
        elif kind == 2:  # Up: difference to the byte above
            line = line - (raw[y - 1] if y else 0)
        rows.append(bytes([kind]) + (line % 256).astype(np.uint8).tobytes())

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def _expected_8bit(values: np.ndarray) -> np.ndarray:
    return np.floor(values.astype(np.float64) / 257 + 0.5).astype(np.uint8)  # round(v / 257), never a tie


def test_rgb_png_roundtrip(tmp_path):
    image = torch.from_numpy(RNG.integers(0, 256, (3, 17, 23), dtype=np.uint8))
    write_png(tmp_path / "a.png", image)
    back = read_image(tmp_path / "a.png")
    assert back.dtype == torch.uint8 and back.shape == (3, 17, 23)
    assert torch.equal(back, image)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temporary file left behind


def test_grey_becomes_three_identical_channels(tmp_path):
    grey = RNG.integers(0, 256, (9, 11), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png")
    assert image.shape == (3, 9, 11)
    for channel in image:
        assert np.array_equal(channel.numpy(), grey)


def test_rgba_drops_alpha_with_warning(tmp_path):
    rgba = RNG.integers(0, 256, (6, 5, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    with pytest.warns(UserWarning, match="alpha"):
        image = read_image(tmp_path / "a.png")
    assert np.array_equal(image.permute(1, 2, 0).numpy(), rgba[:, :, :3])


def test_bmp_and_jpeg(tmp_path):
    rgb = RNG.integers(0, 256, (8, 12, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.bmp")
    assert np.array_equal(read_image(tmp_path / "a.bmp").permute(1, 2, 0).numpy(), rgb)
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    jpeg = read_image(tmp_path / "a.jpg")
    assert jpeg.shape == (3, 8, 12)
    assert np.array_equal(jpeg.permute(1, 2, 0).numpy(), np.asarray(Image.open(tmp_path / "a.jpg").convert("RGB")))


@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_rgb_png_rounds_to_8bit(tmp_path, channels):
    values = RNG.integers(0, 65536, (7, 9, channels), dtype=np.uint16)
    values[0, :4, 0] = [0, 128, 129, 65535]  # 128/257 rounds down, 129/257 up: truncation (v >> 8) gives 0 for both
    _png16(tmp_path / "a.png", values)
    if channels == 4:
        with pytest.warns(UserWarning, match="alpha"):
            image = read_image(tmp_path / "a.png")
    else:
        image = read_image(tmp_path / "a.png")
    assert np.array_equal(image.permute(1, 2, 0).numpy(), _expected_8bit(values[:, :, :3]))
    assert image[0, 0, :4].tolist() == [0, 0, 1, 255]


def test_16bit_grey_png(tmp_path):
    values = RNG.integers(0, 65536, (5, 6, 1), dtype=np.uint16)
    _png16(tmp_path / "g.png", values)
    image = read_image(tmp_path / "g.png")
    for channel in image:
        assert np.array_equal(channel.numpy(), _expected_8bit(values[:, :, 0]))


def test_corrupt_truncated_and_missing_files_name_the_file(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"this is not an image")
    with pytest.raises(KdError, match="junk.png"):
        read_image(tmp_path / "junk.png")
    image = torch.from_numpy(RNG.integers(0, 256, (3, 64, 64), dtype=np.uint8))
    write_png(tmp_path / "full.png", image)
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(KdError, match="cut.png"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(KdError, match="absent.png"):
        read_image(tmp_path / "absent.png")


def test_write_png_rejects_wrong_dtype_and_replaces_atomically(tmp_path):
    with pytest.raises(TypeError):
        write_png(tmp_path / "f.png", torch.zeros(3, 4, 4))
    first = torch.zeros(3, 4, 4, dtype=torch.uint8)
    second = torch.full((1, 4, 4), 200, dtype=torch.uint8)
    write_png(tmp_path / "sub" / "f.png", first)
    write_png(tmp_path / "sub" / "f.png", second)
    assert torch.equal(read_image(tmp_path / "sub" / "f.png"), second.expand(3, 4, 4))
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["f.png"]
