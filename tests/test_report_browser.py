"""The report page renders in headless Chromium: non-blank screenshot of the requested size, tables and images in
the DOM. Chromium comes from the Debian `chromium` package (`make test` installs it when apt-get is available)."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib

import pytest

from kd.report.render import ReportContent, to_html
from kd.report.tables import COLUMNS

WIDTH, HEIGHT = 1000, 800


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium not installed (apt-get install chromium; `make test` does it when apt-get is available)")


def _png(path, width: int, height: int, rgb) -> None:
    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data)))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_report_renders_in_headless_chromium(tmp_path):
    import pandas as pd

    browser = _chromium()
    (tmp_path / "figures").mkdir()
    _png(tmp_path / "figures" / "delta_bars.png", 120, 60, (200, 30, 30))
    row = dict.fromkeys(COLUMNS, float("nan"))
    row.update(profile="smoke", student="asid (tiny)", scale=4, teacher="rcan (tiny)", method="logits",
               dataset="default", seeds=2, psnr_mean=25.0, psnr_std=0.1, ssim_mean=0.7, ssim_std=0.01, delta=0.05,
               delta_low=-0.1, delta_high=0.2, delta_n=2, best=True)
    content = ReportContent("kdbench browser check", ["Profile: smoke."], pd.DataFrame([row], columns=COLUMNS),
                            {"Δ PSNR per method and teacher": ["delta_bars"]}, ["a note"])
    page = tmp_path / "report.html"
    page.write_text(to_html(content))
    shot = tmp_path / "shot.png"
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={WIDTH},{HEIGHT}",
            "--allow-file-access-from-files"]
    shot_run = subprocess.run([*args, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    assert shot.is_file(), shot_run.stderr.decode(errors="replace")[-2000:]
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (WIDTH, HEIGHT)
        colours = {colour for _, colour in image.convert("RGB").getcolors(WIDTH * HEIGHT)}
    assert len(colours) > 10  # text and rules: not a blank page
    assert (200, 30, 30) in colours  # the figure PNG beside the page was loaded and drawn
    dom = subprocess.run([*args, "--dump-dom", page.as_uri()], capture_output=True, timeout=120, text=True).stdout
    assert "<table class=\"results\">" in dom and "logits ★" in dom and "+0.050 [-0.100, +0.200]" in dom
    assert 'src="figures/delta_bars.png"' in dom
