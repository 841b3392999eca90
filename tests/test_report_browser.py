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
FINDING_BACKGROUND = (0xDF, 0xF0, 0xE4)  # .finding in kd.report.render.CSS; used nowhere else on the page


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
    row.update(configuration="asid (tiny) x4, smoke profile, 6 steps", profile="smoke", student="asid (tiny)",
               scale=4, teacher="rcan (tiny)", method="logits", dataset="default", seeds=2, psnr_mean=25.0,
               psnr_std=0.1, ssim_mean=0.7, ssim_std=0.01, delta=0.05, delta_low=-0.1, delta_high=0.2, delta_n=2,
               family=0, claimed=False, best=True)
    content = ReportContent("kdbench browser check", ["Profile: smoke."], pd.DataFrame([row], columns=COLUMNS),
                            {"Δ PSNR per method and teacher": ["delta_bars"]}, ["a note"])
    page = tmp_path / "report.html"
    page.write_text(to_html(content, tmp_path / "figures"))
    shutil.rmtree(tmp_path / "figures")  # the page is one self-contained file: its figures travel inside it
    image, dom = _render(browser, page, tmp_path, WIDTH, HEIGHT)
    assert image.size == (WIDTH, HEIGHT)
    colours = {colour for _, colour in image.getcolors(WIDTH * HEIGHT)}
    assert len(colours) > 10  # text and rules: not a blank page
    assert (200, 30, 30) in colours  # the embedded figure was decoded and drawn
    assert "<table class=\"results\">" in dom and "logits ★" in dom and "+0.050 [-0.100, +0.200]" in dom
    assert 'src="data:image/png;base64,' in dom and 'src="figures/' not in dom


def _render(browser: str, page, tmp_path, width: int, height: int):
    """(screenshot as an RGB PIL image, serialised DOM) of `page` in a width x height window."""
    from PIL import Image

    shot = tmp_path / f"shot-{width}.png"
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={width},{height}",
            "--allow-file-access-from-files", "--hide-scrollbars"]
    shot_run = subprocess.run([*args, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    assert shot.is_file(), shot_run.stderr.decode(errors="replace")[-2000:]
    with Image.open(shot) as image:
        rgb = image.convert("RGB")
    dom = subprocess.run([*args, "--dump-dom", page.as_uri()], capture_output=True, timeout=120, text=True).stdout
    return rgb, dom


def test_summary_sentence_is_above_the_fold_at_1400px(tmp_path):
    """A real report (finding, intro, three result tables, a figure) at 1400 x 900: the one-sentence finding is the
    first thing in view, not below the tables."""
    from kd.report.render import ReportContent, to_html
    from kd.report.tables import finding

    import pandas as pd

    browser = _chromium()
    width, height = 1400, 900
    rows = []
    for dataset in ("Set5", "Set14", "B100"):
        for method, delta in (("none", None), ("logits", 0.0), ("fitnet", -0.02), ("facd", 0.01)):
            row = dict.fromkeys(COLUMNS, float("nan"))
            row.update(configuration="asid x4, cpu profile, 1000 steps on 291-train", profile="cpu",
                       student="asid", scale=4, teacher="rcan", method=method, dataset=dataset, seeds=3,
                       psnr_mean=28.0, psnr_std=0.05, ssim_mean=0.8, ssim_std=0.001, best=False, claimed=False)
            if delta is not None:
                row.update(delta=delta, delta_low=delta - 0.05, delta_high=delta + 0.05, delta_n=3, family=9,
                           delta_p_holm=1.0)
            rows.append(row)
    table = pd.DataFrame(rows, columns=COLUMNS)
    sentence = finding(table)
    content = ReportContent("kdbench report: cpu-rcan-x4", ["Profile: cpu. 12 finished runs; seeds 0, 1, 2."] * 3,
                            table, {}, ["a note"], finding=sentence)
    page = tmp_path / "report.html"
    page.write_text(to_html(content))
    image, dom = _render(browser, page, tmp_path, width, height)
    assert sentence in " ".join(dom.split())
    pixels = image.load()
    box_rows = [y for y in range(height) if sum(pixels[x, y] == FINDING_BACKGROUND for x in range(0, width, 7)) > 20]
    assert box_rows, "the finding box is not in the first screen"
    top, bottom = min(box_rows), max(box_rows)
    assert bottom < height // 2  # wholly visible, in the upper half of the first screen
    dark = sum(1 for y in range(top, bottom + 1) for x in range(width) if sum(pixels[x, y]) < 200)
    assert dark > 200  # the sentence's text is drawn inside the box


def test_report_figures_read_in_the_browser(tmp_path, monkeypatch):
    """The PSNR-versus-cost and training-curve figures of the committed cpu grid, drawn in Chromium: one panel per
    dataset on the axis that has data, peer labels beside their points inside the axes, and a legend on every
    training-curve panel. The screenshot stays in tmp_path (figures.png) for a person to look at."""
    import base64
    from pathlib import Path

    from kd.reference_data import published_results
    from kd.report import plots
    from kd.report.runs import scan_runs
    from kd.report.tables import comparison_table

    records = Path(__file__).resolve().parents[1] / "reports" / "cpu-x4-3seeds" / "records"
    if not records.is_dir():
        pytest.skip("the committed cpu grid's records are not here")
    browser = _chromium()
    figures = {}
    save = plots.save

    def keep(fig, out_dir, stem):
        figures[stem] = [(ax.get_title(), ax.get_legend() is not None, ax.get_window_extent(), [
            (text.get_window_extent(), ax.transData.transform(text.xy)) for text in ax.texts
            if hasattr(text, "xy")]) for ax in fig.axes]
        return save(fig, out_dir, stem)

    monkeypatch.setattr(plots, "save", keep)
    runset = scan_runs(records)
    peers = published_results()
    stem, notes = plots.cost_scatter(comparison_table(runset), peers[peers["role"] == "lightweight peer"], tmp_path)
    plots.training_curves(runset.runs, tmp_path)
    cost = figures["psnr_vs_cost"]
    assert [title for title, *_ in cost] == ["Set5 x4", "Set14 x4", "B100 x4"]  # MACs: one value, no panel
    assert any("PSNR versus MACs is not drawn" in note for note in notes)
    for _, _, frame, labels in cost:
        assert len(labels) == 8  # seven published peers and our student
        for box, point in labels:
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            assert abs(box.y0 + box.height / 2 - point[1]) < 45  # beside its point, not far above it
    curves = figures["training_curves"]
    assert [title for title, *_ in curves] == ["training loss, from rcan (mini)", "validation PSNR, from rcan (mini)",
                                               "training loss, from swinir (mini)",
                                               "validation PSNR, from swinir (mini)"]
    assert all(has_legend for _, has_legend, *_ in curves)

    page = tmp_path / "figures.html"
    images = "".join(f"<img src='data:image/png;base64,{base64.b64encode((tmp_path / f'{name}.png').read_bytes()).decode()}'>"
                     for name in ("psnr_vs_cost", "training_curves"))
    page.write_text(f"<!DOCTYPE html><html><body style='margin:0'>{images}</body></html>")
    image, dom = _render(browser, page, tmp_path, 1300, 2400)
    image.save(tmp_path / "figures.png")
    colours = {colour for _, colour in image.getcolors(1300 * 2400)}
    assert (128, 128, 128) in colours and len(colours) > 50  # the peers' grey squares, the curves' colours
    assert dom.count("<img") == 2
