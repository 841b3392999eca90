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
import ctypes
import errno
import fcntl
import glob
import os
import re
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
    sighted = sorted({run.teacher or "" for run in runs if run.teacher_info.get("sees_hr")})
    if sighted:
        text.append(f"The teacher {', '.join(sighted)} sees the HR image (its degradation encoder's input), as the "
                    "official test of KDSR's teacher does: its scores, and the gap recovered towards them, are not "
                    "blind SR.")
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
    if Path.cwd().resolve().is_relative_to(out):
        raise KdError(f"--out {out_dir} is (or holds) the current folder: a report is a folder of its own that "
                      "kdbench replaces as a whole; give one such as --out reports/NAME.")
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
        target = run.record_dir(folder)
        target.mkdir(parents=True)
        for name in RECORD_FILES:
            if (run.run_dir / name).is_file():
                shutil.copyfile(run.run_dir / name, target / name)
        crops = run.run_dir / CROPS
        if crops.is_dir():  # crops an earlier report kept (only those: a note beside them is the user's)
            for crop in sorted(crops.glob("*.png")):
                if crop.is_file() and not crop.is_symlink():
                    (target / CROPS).mkdir(exist_ok=True)
                    shutil.copyfile(crop, target / CROPS / crop.name)


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
    target = Path(os.path.abspath(out_dir))  # `sub/..` and the like name their folder (the checks refuse `.`)
    runset = select_runs(scan_runs(folders), list(filters or []))
    table = comparison_table(runset)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
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
        _write_marker(work, folders)
        os.chmod(work, 0o777 & ~current_umask())  # mkdtemp makes 0700; a report is as readable as any folder
        with _out_lock(target):
            _recover_interrupted(target)
            for folder in folders:  # again: another process may have written it meanwhile
                check_out_dir(folder, out_dir, force)
            kept = _copy_foreign_entries(target, work)
            _replace_dir(work, target)
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


# The marker lists the files kdbench wrote, below this line; anything else in a report folder is someone else's.
_MANIFEST_HEADER = "Files kdbench wrote here (replaced by `kdbench report --force`; anything else is kept):"
# What reports written before the marker listed their files held of kdbench's own.
_LEGACY_PRODUCT = re.compile(
    r"(\.kdbench-report|report\.html|report\.md|results\.csv"
    r"|figures/((delta_bars|training_curves|psnr_vs_cost|visual_[^/]+)\.(png|svg)|visual_spec\.json)"
    r"|records/[^/]+/(" + "|".join(re.escape(name) for name in RECORD_FILES) + rf"|{CROPS}/[^/]+\.png))"
)


def _write_marker(work: Path, folders: list[Path]) -> None:
    """`.kdbench-report`: what the report was built from, and every file kdbench wrote into it."""
    files = sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file() and not p.is_symlink())
    sources = ", ".join(str(p.resolve()) for p in folders)
    text = "\n".join([f"kdbench report over {sources}", _MANIFEST_HEADER, REPORT_MARKER, *files])
    (work / REPORT_MARKER).write_text(text + "\n", encoding="utf-8")


def _is_product(out_dir: Path) -> Callable[[str], bool]:
    """Whether a relative path in the report `out_dir` is a file kdbench wrote there (from its marker's list)."""
    lines = (out_dir / REPORT_MARKER).read_text(encoding="utf-8", errors="replace").splitlines()
    if _MANIFEST_HEADER not in lines:
        return lambda relative: _LEGACY_PRODUCT.fullmatch(relative) is not None
    listed = frozenset(lines[lines.index(_MANIFEST_HEADER) + 1 :])
    return listed.__contains__


def _foreign_entries(out_dir: Path) -> list[Path]:
    """Everything in the report `out_dir`, at any depth, that kdbench did not write: files and links not on its list,
    and folders that hold none of its files (taken whole)."""
    if not (out_dir / REPORT_MARKER).is_file():
        return sorted(out_dir.iterdir()) if out_dir.is_dir() else []  # empty: check_out_dir allows nothing else
    is_product = _is_product(out_dir)
    foreign: list[Path] = []

    def visit(folder: Path) -> bool:
        """Collects the foreign entries below `folder`; whether it holds a product."""
        holds_product = False
        for entry in sorted(folder.iterdir()):
            relative = entry.relative_to(out_dir).as_posix()
            if entry.is_dir() and not entry.is_symlink():
                start = len(foreign)
                if visit(entry):
                    holds_product = True
                else:
                    del foreign[start:]
                    foreign.append(entry)
            elif is_product(relative) and not entry.is_symlink():
                holds_product = True
            else:
                foreign.append(entry)
        return holds_product

    visit(out_dir)
    return foreign


def _copy_foreign_entries(out_dir: Path, work: Path) -> list[str]:
    """Copy into the new report what the user added to the one it replaces (a note, a paper table, a file inside
    figures/ or records/); copied, not moved, so that they stay in the old folder until the new one is in place.
    Returns their paths relative to the report."""
    kept = []
    for entry in _foreign_entries(out_dir):
        relative = entry.relative_to(out_dir)
        target = work / relative
        if target.exists() or target.is_symlink():
            raise KdError(f"{entry} was not written by kdbench, and the new report writes {relative} too: move it "
                          "out of the report folder, then run the same command again.")
        target.parent.mkdir(parents=True, exist_ok=True)
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, target, symlinks=True)
        else:
            shutil.copy2(entry, target, follow_symlinks=False)
        kept.append(relative.as_posix())
    return kept


_OLD = ".old-"  # `.<report>.old-<id>`: a report being replaced where the folders cannot be swapped atomically


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where that is not supported."""
    rename = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if rename is None:
        return False
    at_cwd, exchange = -100, 2
    if rename(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a), str(b))


def _replace_dir(new: Path, target: Path) -> None:
    """Move the finished folder into place (under `_out_lock`), so that a kill at any moment leaves the old report
    or the new one (with the user's files) at `target`: the two folders are swapped atomically and the old report
    removed after. Without an atomic swap the old report is first renamed aside; `_recover_interrupted` puts it
    back if the process dies before the new one is in place."""
    if not target.exists():
        new.rename(target)
        return
    if _exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # `new` now holds the old report
        return
    old = target.with_name(f".{target.name}{_OLD}{new.name.rsplit('-', 1)[-1]}")
    target.rename(old)
    try:
        new.rename(target)
    except BaseException:
        old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _recover_interrupted(target: Path) -> None:
    """A report renamed aside by a replacement that was killed before the new report took its place goes back."""
    if target.exists() or target.is_symlink():
        return
    aside = sorted(target.parent.glob(f".{glob.escape(target.name)}{_OLD}*"), key=lambda p: p.stat().st_mtime_ns)
    if aside:
        aside[-1].rename(target)
