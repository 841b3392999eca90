"""Comparison reports over finished runs: `build_report(runs_dir, out_dir)` writes report.html, report.md,
results.csv, figures/ (PNG + SVG) and records/ (each run's summary, configuration, environment, metrics log and
visual-comparison crops, no weights: enough to render the report again, alone or beside new runs), built in a
temporary folder and moved into place when complete.

A report reads records and never runs a network (it imports neither `kd.engine` nor `kd.evaluate`): the crops of
its visual comparison come from the records, where `crop_maker` (`kd.crops.record_crops`, passed by
`kdbench report` and `kd.build_report`) puts those that weights at hand can give.

    from kd.report import build_report
    report = build_report("runs", "reports/my-grid")
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from kd.errors import KdError
from kd.fileio import current_umask
from kd.report.render import ReportContent, Section, summary_tables, to_html, to_markdown
from kd.report.runs import RunSet, scan_runs, select_runs
from kd.report.tables import (comparison_table, finding, missing_baselines, mixed_teacher_dtypes,
                              reconstructed_methods)

__all__ = ["Report", "build_report", "scan_runs", "comparison_table"]

REPORT_MARKER = ".kdbench-report"  # in every report folder: the folders `build_report` may replace
RECORDS = "records"
# What a run is, how it trained, and what was measured of it afterwards (benchmarks/phase_residual.py)
RECORD_FILES = ("summary.json", "config.yaml", "environment.json", "metrics.jsonl", "phase_residual.json")
CROPS = "visual_crops"  # a record's folder of the run's SR crops in the visual comparison (records keep no weights)
# What a report folder holds of kdbench's own; anything else in it was put there by someone else and is kept.
REPORT_PRODUCTS = frozenset({REPORT_MARKER, RECORDS, "figures", "report.html", "report.md", "results.csv"})


@dataclass
class Report:
    out_dir: Path
    content: ReportContent
    runset: RunSet
    files: list[Path] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # entries of the replaced folder that kdbench did not write
    warnings: list[str] = field(default_factory=list)  # for whoever made the report (the runs read, skipped)

    def console_tables(self):
        return summary_tables(self.content)


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
    for key, counts in (("Names", _counts(run.labels["name"] for run in runs)),
                        ("Tags", _counts(tag for run in runs for tag in run.labels["tags"]))):
        if counts:
            text.append(f"{key}: " + ", ".join(f"{label} ({n} run{'s' if n != 1 else ''})" for label, n in counts)
                        + ".")
    rebuilt = reconstructed_methods(table)
    if rebuilt:
        text.append(f"Reconstructed by kdbench, not run from published code: {'; '.join(rebuilt)}. Their results "
                    "describe kdbench's re-implementation, not the published method.")
    return text


def _counts(labels) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for label in labels:
        if label:
            counts[label] = counts.get(label, 0) + 1
    return sorted(counts.items())


def _incomplete_datasets(runset: RunSet) -> list[str]:
    """Datasets evaluated on fewer images than their reference version (the report compares with published
    numbers)."""
    from kd.data.registry import incomplete_note

    notes = []
    for run in runset.runs:
        for dataset, images in (run.summary.get("dataset_images") or {}).items():
            try:
                note = incomplete_note(dataset, images) if isinstance(images, int) else None
            except KdError:  # a folder of the user's own images on another machine: no reference count
                note = None
            if note and note not in notes:
                notes.append(note)
    return notes


def check_out_dir(runs_dir: Path, out_dir: Path, force: bool) -> None:
    """A report replaces only a new folder, an empty one or (with `force`) an earlier kdbench report: never the
    runs, nor a folder that holds anything kdbench did not write there. Its own records/ may be read back: the new
    report copies them before replacing the old one."""
    runs, out = runs_dir.resolve(), out_dir.resolve()
    if out == runs or out.is_relative_to(runs):
        raise KdError(f"--out {out_dir} is inside --runs {runs_dir}: the report would replace runs; give an --out "
                      "folder outside the runs folder (e.g. reports/NAME).")
    if runs.is_relative_to(out) and not (runs == out / RECORDS and (out / REPORT_MARKER).is_file()):
        raise KdError(f"--out {out_dir} contains --runs {runs_dir}: replacing it would delete the runs; give an "
                      "--out folder of its own (e.g. reports/NAME).")
    if not out.exists():
        return
    if not out.is_dir():
        raise KdError(f"--out {out_dir} is a file; give a folder for the report.")
    if (out / REPORT_MARKER).is_file():
        if not force:
            raise KdError(f"--out {out_dir} holds an earlier kdbench report; add --force to replace it, or give "
                          "another --out folder.")
    elif any(out.iterdir()):
        raise KdError(f"--out {out_dir} is a folder that kdbench did not write (no {REPORT_MARKER} in it); kdbench "
                      "replaces only its own reports: give a new or empty --out folder.")


@contextlib.contextmanager
def _out_lock(out_dir: Path) -> Iterator[None]:
    """Exclusive lock on the folder that holds the report folder (no lock file left behind): concurrent reports
    replace their folders one at a time."""
    fd = os.open(out_dir.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_records(runset: RunSet, folder: Path) -> None:
    for run in runset.runs:
        target = folder / run.run_id
        target.mkdir(parents=True)
        for name in RECORD_FILES:
            if (run.run_dir / name).is_file():
                shutil.copyfile(run.run_dir / name, target / name)
        if (run.run_dir / CROPS).is_dir():  # crops an earlier report kept; this report adds those it computes
            shutil.copytree(run.run_dir / CROPS, target / CROPS)


CropMaker = Callable[["visual.VisualPlan", Path], list[str]]


def build_report(runs_dirs: str | Path | list[str | Path], out_dir: str | Path, *, title: str | None = None,
                 visual_images: int = 2, force: bool = False, crop_maker: CropMaker | None = None,
                 filters: list[str] | None = None) -> Report:
    """Write the report into `out_dir`: a new or empty folder, or (with `force`) an earlier kdbench report.
    `runs_dirs`: one runs folder or several (a run id in two of them is read from the first). `crop_maker(plan,
    records_dir)` records the visual comparison's crops that weights can give (`kd.crops.record_crops`); without it
    the figure shows the crops the records already hold. `filters`: `KEY=VALUE[,VALUE]` selections of runs
    (`select_runs`: name=, tag=, teacher=, method=, ...)."""
    from kd.reference_data import published_results
    from kd.report import health, plots, visual

    out_dir = Path(out_dir)
    folders = [Path(runs_dirs)] if isinstance(runs_dirs, (str, Path)) else [Path(p) for p in runs_dirs]
    for folder in folders:
        check_out_dir(folder, out_dir, force)
    runset = select_runs(scan_runs(folders), list(filters or []))
    table = comparison_table(runset)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        fig_dir = work / "figures"
        notes = [*runset.notes, *missing_baselines(runset), *mixed_teacher_dtypes(runset),
                 *_incomplete_datasets(runset)]
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
        _write_records(runset, work / RECORDS)
        plan, visual_notes = visual.plan_visual(runset.runs, images=visual_images) if visual_images else (None, [])
        stems = []
        if plan is not None:
            warnings = crop_maker(plan, work / RECORDS) if crop_maker else []
            stems, more = visual.visual_comparison(plan, work / RECORDS, fig_dir)
            visual_notes += more
            runset.warnings.extend(warnings)
        notes += visual_notes
        if stems:
            figures["Visual comparison (crop coordinates in figures/visual_spec.json)"] = stems
        title = title or f"kdbench report: {', '.join(p.name for p in folders)}"
        content = ReportContent(title, _intro(runset, table), table, figures, notes, finding=finding(table))
        rows = health.health_rows(runset.runs)
        if rows:
            content.sections.append(Section("Method health", [health.CAPTION], health.HEADERS, rows))
        rows = health.fit_cost_rows(runset.runs)
        if rows:
            content.sections.append(Section("Fit cost", [health.FIT_CAPTION], health.FIT_HEADERS, rows))
        (work / "report.html").write_text(to_html(content, fig_dir), encoding="utf-8")
        (work / "report.md").write_text(to_markdown(content), encoding="utf-8")
        table.to_csv(work / "results.csv", index=False)
        sources = ", ".join(str(p.resolve()) for p in folders)
        (work / REPORT_MARKER).write_text(f"kdbench report over {sources}\n", encoding="utf-8")
        os.chmod(work, 0o777 & ~current_umask())  # mkdtemp makes 0700; a report is as readable as any folder
        with _out_lock(out_dir):
            for folder in folders:  # again: another process may have written it meanwhile
                check_out_dir(folder, out_dir, force)
            kept = _copy_foreign_entries(out_dir, work)
            _replace_dir(work, out_dir)
    except OSError as exc:
        shutil.rmtree(work, ignore_errors=True)
        if exc.filename is None:  # a failed write (disk full) names no file: name the report folder
            raise OSError(exc.errno, exc.strerror, str(out_dir)) from exc
        raise
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    files = sorted(p for p in out_dir.rglob("*") if p.is_file())
    return Report(out_dir, content, runset, files, kept, runset.warnings)


def _copy_foreign_entries(out_dir: Path, work: Path) -> list[str]:
    """Copy into the new report what the user added to the one it replaces (a note, a paper table); copied, not
    moved, so that they stay in the old folder until the new one is in place."""
    foreign = sorted(p for p in out_dir.iterdir() if p.name not in REPORT_PRODUCTS) if out_dir.is_dir() else []
    for entry in foreign:
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, work / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, work / entry.name, follow_symlinks=False)
    return [entry.name for entry in foreign]


def _replace_dir(new: Path, target: Path) -> None:
    """Move the finished folder into place (under `_out_lock`); the report it replaces is removed only after the new
    one is in place. The temporary names derive from `new`'s unique mkdtemp name."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{new.name.rsplit('-', 1)[-1]}")
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
