"""Report rendering: cell formatting, HTML page (one self-contained file: figures embedded as data URIs),
Markdown twin, rich terminal summary."""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from kd.output import TextTable, markdown_table
from kd.report.tables import BASELINE, TEACHER_ROW
from kd.stats import CONFIDENCE, FAMILYWISE_ALPHA, MIN_SEEDS_TO_RANK

HEADERS = ["Method", "Dataset", "Seeds", "PSNR-Y (dB)", "SSIM-Y", "LPIPS", "Δ PSNR vs no-KD [interval]",
           "Holm p", "Gap recovered"]


@dataclass
class Section:
    """An extra report section after the results (e.g. a per-method health table): paragraphs and an optional
    table of plain-text cells, rendered the same way in HTML, Markdown and the terminal."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


@dataclass
class ReportContent:
    title: str
    intro: list[str]  # paragraphs (plain text)
    table: pd.DataFrame
    figures: dict[str, list[str]] = field(default_factory=dict)  # section title -> figure stems
    notes: list[str] = field(default_factory=list)
    finding: str = ""  # the one-sentence answer shown first (kd.report.tables.finding)
    sections: list[Section] = field(default_factory=list)  # extra sections between the results and the figures


def _finite(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def fmt_mean_std(mean, std, digits: int) -> str:
    if not _finite(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if _finite(std) else f"{mean:.{digits}f}"


def fmt_delta(row) -> str:
    if row["method"] in (BASELINE, TEACHER_ROW) or not _finite(row["delta"]):
        return "" if row["method"] in (BASELINE, TEACHER_ROW) else "n/a"
    digits = 3 if abs(row["delta"]) < 0.1 else 2
    text = f"{row['delta']:+.{digits}f}"
    if _finite(row["delta_low"]):
        return f"{text} [{row['delta_low']:+.{digits}f}, {row['delta_high']:+.{digits}f}]"
    return f"{text} [n/a: 1 seed]"


def fmt_holm(row) -> str:
    if row["method"] in (BASELINE, TEACHER_ROW) or not _finite(row["delta_p_holm"]):
        return ""
    p = row["delta_p_holm"]
    return ("<0.001" if p < 0.001 else f"{p:.3f}") + (" ✓" if row["claimed"] else "")


def fmt_gap(row) -> str:
    if row["method"] in (BASELINE, TEACHER_ROW):
        return ""
    return f"{100 * row['gap_recovered']:.0f}%" if _finite(row["gap_recovered"]) else "n/a"


def row_cells(row) -> list[str]:
    method = row["method"] + (" ★" if row["best"] else "")
    return [method, row["dataset"], str(int(row["seeds"])) if _finite(row["seeds"]) else "",
            fmt_mean_std(row["psnr_mean"], row["psnr_std"], 2), fmt_mean_std(row["ssim_mean"], row["ssim_std"], 4),
            fmt_mean_std(row["lpips_mean"], row["lpips_std"], 4), fmt_delta(row), fmt_holm(row), fmt_gap(row)]


def table_sections(table: pd.DataFrame):
    """(heading, rows) per configuration and teacher."""
    for (configuration, teacher), part in table.groupby(["configuration", "teacher"], sort=False):
        heading = f"{configuration}: " + ("no teacher" if teacher == "-" else f"teacher {teacher}")
        yield heading, [row_cells(row) for _, row in part.iterrows()]


def caption(table: pd.DataFrame) -> str:
    family = int(table["family"].max()) if table["family"].notna().any() else 0
    alpha = f"{FAMILYWISE_ALPHA:g}"
    if family:
        intervals = (f"Holm–Bonferroni over the report's m = {family} comparisons with {MIN_SEEDS_TO_RANK}+ paired "
                     f"seeds (familywise {100 * FAMILYWISE_ALPHA:g} %): each interval is the paired t-interval at the "
                     f"level Holm tested that comparison at, 1 − {alpha}/(m − k + 1) for the k-th smallest p-value "
                     "(for a comparison Holm did not reject, the level of the step where it stopped), so an interval "
                     "excludes 0 exactly when Holm claims the difference. Holm p: the Holm-adjusted p-value of the "
                     f"paired t-test; ✓ claimed. Rows with fewer paired seeds show a plain {100 * CONFIDENCE:g} % interval "
                     "and claim nothing.")
    else:
        intervals = (f"Intervals: paired {100 * CONFIDENCE:g} % t-intervals; with fewer than {MIN_SEEDS_TO_RANK} "
                     "paired seeds nothing is claimed.")
    return ("PSNR/SSIM on Y (BT.601), crop = scale; mean ± std over seeds. Runs are compared only within one "
            "configuration (data, profile, budget, scale, student and recipe: each heading). Δ: mean of per-seed "
            f"differences to the no-KD student of the same configuration (paired by seed). {intervals} Gap "
            "recovered: (KD − no-KD) / (teacher − no-KD). ★ = best KD method for that teacher and dataset among "
            "those claimed above no-KD.")


CSS = """body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #bbb;padding:3px 8px;text-align:right}
th{background:#eee}td:first-child,td:nth-child(2){text-align:left}.note{color:#555;font-size:0.9em}
figure{margin:1em 0}img{max-width:100%;border:1px solid #ddd}.warn{background:#fff6d6;padding:0.5em}
.finding{background:#dff0e4;border-left:6px solid #2e7d4f;padding:0.6em 0.9em;font-size:1.15em;margin:0.5em 0 1em}"""


def figure_src(figure_dir: Path | None, stem: str) -> str:
    """The PNG as a base64 data URI (the page stays one file); a relative path only when the file is absent."""
    path = figure_dir / f"{stem}.png" if figure_dir is not None else None
    if path is None or not path.is_file():
        return f"figures/{stem}.png"
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _html_table(headers: list[str], rows: list[list[str]], css_class: str) -> list[str]:
    esc = html.escape
    return ([f"<table class='{css_class}'><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers)
             + "</tr></thead><tbody>"] + ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>"
                                         for cells in rows] + ["</tbody></table>"])


def to_html(content: ReportContent, figure_dir: Path | None = None) -> str:
    """The report page; with `figure_dir`, every figure PNG is embedded so the page is one self-contained file."""
    esc = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(content.title)}</title>",
             f"<style>{CSS}</style></head><body>", f"<h1>{esc(content.title)}</h1>"]
    if content.finding:
        parts.append(f"<p class='finding'>{esc(content.finding)}</p>")
    parts += [f"<p>{esc(text)}</p>" for text in content.intro]
    parts.append("<h2>Results</h2>")
    parts.append(f"<p class='note'>{esc(caption(content.table))}</p>")
    for heading, rows in table_sections(content.table):
        parts.append(f"<h3>{esc(heading)}</h3>")
        parts += _html_table(HEADERS, rows, "results")
    for section in content.sections:
        parts.append(f"<h2>{esc(section.title)}</h2>")
        parts += [f"<p>{esc(text)}</p>" for text in section.paragraphs]
        if section.headers:
            parts += _html_table(section.headers, section.rows, "section")
    for section, stems in content.figures.items():
        parts.append(f"<h2>{esc(section)}</h2>")
        for stem in stems:
            parts.append(f"<figure><img src=\"{figure_src(figure_dir, stem)}\" alt='{esc(stem)}'>"
                         f"<figcaption class='note'>{esc(stem)} (PNG and SVG in figures/)</figcaption></figure>")
    if content.notes:
        parts.append("<h2>Notes</h2><ul class='warn'>" + "".join(f"<li>{esc(n)}</li>" for n in content.notes)
                     + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def to_markdown(content: ReportContent) -> str:
    lines = [f"# {content.title}", ""]
    if content.finding:
        lines += [f"**{content.finding}**", ""]
    for text in content.intro:
        lines += [text, ""]
    lines += ["## Results", "", f"_{caption(content.table)}_", ""]
    for heading, rows in table_sections(content.table):
        lines += [f"### {heading}", "", *markdown_table(HEADERS, rows, 2), ""]
    for section in content.sections:
        lines += [f"## {section.title}", ""]
        for text in section.paragraphs:
            lines += [text, ""]
        if section.headers:
            lines += [*markdown_table(section.headers, section.rows, 1), ""]
    for section, stems in content.figures.items():
        lines += [f"## {section}", ""]
        lines += [f"![{stem}](figures/{stem}.png) ([SVG](figures/{stem}.svg))" for stem in stems]
        lines.append("")
    if content.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in content.notes] + [""]
    return "\n".join(lines)


def summary_tables(content: ReportContent) -> list[TextTable]:
    tables = []
    for heading, rows in table_sections(content.table):
        table = TextTable(title=heading, caption="PSNR/SSIM on Y, crop = scale; Δ interval at Holm's level (see "
                          "report.md); ✓ claimed after Holm–Bonferroni; ★ best claimed KD method", key=2)
        for i, name in enumerate(HEADERS):
            table.add_column(name, justify="left" if i < 2 else "right")
        for cells in rows:
            table.add_row(*cells, style="bold" if cells[0].endswith("★") else None)
        tables.append(table)
    for section in content.sections:
        if section.headers:
            table = TextTable(title=section.title)
            for i, name in enumerate(section.headers):
                table.add_column(name, justify="left" if i == 0 else "right")
            for cells in section.rows:
                table.add_row(*cells)
            tables.append(table)
    return tables
