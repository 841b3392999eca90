"""Comparison reports over finished runs: `build_report(runs_dir, out_dir)` writes report.html, report.md,
results.csv and figures/ (PNG + SVG), built in a temporary folder and moved into place when complete.

    from kd.report import build_report
    report = build_report("runs", "reports/my-grid")
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from kd.report.render import ReportContent, rich_summary, to_html, to_markdown
from kd.report.runs import RunSet, scan_runs
from kd.report.tables import comparison_table, finding, missing_baselines, reconstructed_methods

__all__ = ["Report", "build_report", "scan_runs", "comparison_table"]


@dataclass
class Report:
    out_dir: Path
    content: ReportContent
    runset: RunSet
    files: list[Path] = field(default_factory=list)

    def rich_tables(self):
        return rich_summary(self.content)


def _intro(runset: RunSet, table: pd.DataFrame) -> list[str]:
    runs = runset.runs
    profiles = sorted({r.profile for r in runs})
    steps = sorted({r.summary.get("steps") for r in runs if r.summary.get("steps") is not None})
    weights = sorted({str(r.summary.get("eval_weights") or "last") for r in runs})
    seeds = sorted({r.seed for r in runs})
    text = [f"Profile: {', '.join(profiles)}. {len(runs)} finished runs; seeds {', '.join(map(str, seeds))}; "
            f"{'/'.join(map(str, steps))} training steps; evaluated weights: {', '.join(weights)}."]
    if "smoke" in profiles:
        text.append("This is the smoke profile with tiny networks and a handful of steps on the embedded photos: the "
                    "numbers show that the pipeline is wired correctly, not the methods' merit.")
    rebuilt = reconstructed_methods(table)
    if rebuilt:
        text.append(f"{', '.join(rebuilt)}: reconstructions from the papers' descriptions (no public code); the "
                    "results describe kdbench's re-implementation, not the published method.")
    return text


def build_report(runs_dir: str | Path, out_dir: str | Path, *, title: str | None = None,
                 visual_images: int = 2) -> Report:
    from kd.reference_data import published_results
    from kd.report import plots, visual

    runset = scan_runs(runs_dir)
    table = comparison_table(runset)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        fig_dir = work / "figures"
        notes = list(runset.warnings) + missing_baselines(runset)
        figures: dict[str, list[str]] = {}
        stem = plots.delta_bars(table, fig_dir)
        if stem:
            figures["Δ PSNR per method and teacher"] = [stem]
        stem = plots.training_curves(runset.runs, fig_dir)
        if stem:
            figures["Training curves"] = [stem]
        peers = published_results()
        stem, cost_notes = plots.cost_scatter(table, peers[peers["role"] == "lightweight peer"], fig_dir)
        notes += cost_notes
        if stem:
            figures["PSNR versus parameters and MACs"] = [stem]
        stems, visual_notes = visual.visual_comparison(runset.runs, fig_dir, images=visual_images)
        notes += visual_notes
        if stems:
            figures["Visual comparison (crop coordinates in figures/visual_spec.json)"] = stems
        content = ReportContent(title or f"kdbench report: {Path(runs_dir).name}", _intro(runset, table), table,
                                figures, notes, finding=finding(table))
        (work / "report.html").write_text(to_html(content, fig_dir), encoding="utf-8")
        (work / "report.md").write_text(to_markdown(content), encoding="utf-8")
        table.to_csv(work / "results.csv", index=False)
        _replace_dir(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    files = sorted(p for p in out_dir.rglob("*") if p.is_file())
    return Report(out_dir, content, runset, files)


def _replace_dir(new: Path, target: Path) -> None:
    """Move the finished folder into place; an older report there is removed only after the new one is complete."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{new.name[-8:]}")
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
