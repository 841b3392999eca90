"""`kdbench paper <table>`: a published table in its original layout with our measured cell beside each one."""

from __future__ import annotations

import argparse
from pathlib import Path

from kd.messages import say
from kd.output import TextTable, out_console, print_table

# The keys of kd.report.paper.PAPER_TABLES, spelled out so that --help does not import pandas (a test checks them).
TABLE_NAMES = ("bicubic", "teachers", "fakd", "dckd", "lightweight", "kdsr")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "paper",
        help="lay out a published table with our measured cells, the difference and the evidence level",
        description="Tables: " + ", ".join(TABLE_NAMES) + ". A cell we have not measured shows a dash and the "
        "command that would fill it (student runs with the table's own recipe: profile paper-fakd or paper-dckd; "
        "kdsr: blind SR on Gaussian8, --set data.degradation=iso_gaussian). While no such student run exists, fakd, "
        "dckd and kdsr show their miniature first: the same pair shapes at the cpu budget, our paired gains over "
        "scratch (kdsr: over the student without its KD term) beside the published ones, and which published "
        "orderings of methods hold.",
    )
    parser.add_argument("table", help="published table: " + ", ".join(TABLE_NAMES))
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="folder of finished runs (default runs/)")
    parser.add_argument("--miniature-runs", type=Path, action="append",
                        help="folder of the runs of the miniature pairs, written by the sweep commands that "
                        "`paper fakd|dckd|kdsr` print (it must exist); repeat it to join several. Given, it replaces "
                        "the default folders: runs/miniature and, from a kdbench checkout, the committed "
                        "reports/miniature/records and (once run and committed) reports/miniature-kdsr/records")
    parser.add_argument("--eval-csv", type=Path, action="append", default=[],
                        help="per-dataset CSV from kdbench eval --out (repeatable)")
    parser.add_argument("--data-root", help="data root for the on-the-fly bicubic cells")
    parser.add_argument("--no-compute", action="store_true", help="bicubic: never evaluate on the fly")
    parser.add_argument("--format", default="table", help="table (default), markdown or csv")
    parser.set_defaults(handler=run_paper)


def run_paper(args: argparse.Namespace) -> int:
    import pandas as pd

    from kd.errors import unknown_choice
    from kd.report.paper import (
        FORMATS, PAPER_TABLES, collect_measured, compact_grid, extra_grid, footnote_lines, paper_table, to_text,
    )

    if args.table not in PAPER_TABLES:
        raise unknown_choice("paper table", args.table, PAPER_TABLES)
    if args.format not in FORMATS:
        raise unknown_choice("--format", args.format, FORMATS)
    measured, notes = collect_measured(args.runs if args.runs.is_dir() else None, args.eval_csv,
                                       args.miniature_runs)
    if args.table == "bicubic" and not args.no_compute and not (measured.models["arch"] == "bicubic").any():
        computed, compute_notes = bicubic_on_the_fly(args.data_root, progress=args.format == "table")
        measured.models = pd.concat([measured.models, computed], ignore_index=True)
        notes += compute_notes
    table = paper_table(args.table, measured=measured)
    table.notes = notes + table.notes
    if args.format != "table":
        print(to_text(table, args.format), end="")
        return 0
    console = out_console()
    if table.miniature is not None:
        _print_miniature(table.miniature, console)
        console.print()
    key = len(table.row_names)
    if table.extra:
        print_table(_view(table.title, table.extra_caption, *extra_grid(table), key=key), console)
        console.print()
    ssim_where = "below" if table.terminal_ssim else "in --format markdown or csv"
    parts = table.parts()  # a table with column groups (FAKD's RCAN and SAN) prints one table per group
    for n, (title, columns) in enumerate(parts):
        if n:
            console.print()
        caption = ("PSNR-Y (dB), crop = scale: published → ours (ours − published); SSIM "
                   f"{ssim_where}; [n]: the command that fills the cell") if n == len(parts) - 1 else ""
        print_table(_view("PSNR-Y" if table.extra else title, caption, *compact_grid(table, columns), key=key),
                    console)
    if table.terminal_ssim:
        console.print()
        print_table(_view("SSIM-Y", "SSIM-Y, crop = scale: published → ours (ours − published)",
                          *compact_grid(table, metric="ssim"), key=key), console)
    for line in footnote_lines(table, console.width):
        say(console, line)
    for note in table.notes:
        _say_wrapped(console, note, "note")
    return 0


def _say_wrapped(console, text: str, label: str | None = None) -> None:
    """A message of words wrapped at the console's width; a long path or command word stays whole on its line."""
    import textwrap

    prefix = f"{label}: " if label else ""
    lines = textwrap.wrap(prefix + text, console.width, subsequent_indent="  ", break_long_words=False,
                          break_on_hyphens=False)
    for line in lines:
        say(console, line)


def _print_miniature(mini, console) -> None:
    from kd.report import miniature

    header, body = miniature.rows(mini)
    console.print()
    _say_wrapped(console, mini.finding())
    if mini.source:
        _say_wrapped(console, mini.source)
    print_table(_view(mini.spec.title, mini.spec.caption(), header, body, key=2), console)
    if mini.orderings:
        header, body = miniature.ordering_rows(mini)
        print_table(_view("Published orderings", miniature.orderings_caption(mini), header, body, key=3), console)
    for note in miniature.notes(mini):
        _say_wrapped(console, note, "note")


def _view(title: str, caption: str, header: list[str], body: list[list[str]], key: int) -> TextTable:
    """Key columns left-aligned, figures right-aligned; only the evidence column wraps."""
    view = TextTable(title=title, caption=caption, key=key)
    for i, name in enumerate(header):
        view.add_column(name, justify="left" if i < key else "right", wrap=name == "Evidence")
    for row in body:
        view.add_row(*row)
    return view


def bicubic_on_the_fly(data_root: str | Path | None, progress: bool = True):
    """Bicubic PSNR/SSIM on every paper dataset whose files are present (model rows for `Measured`)."""
    import pandas as pd

    from kd.data.files import dataset_files
    from kd.evaluate import evaluate
    from kd.models import create
    from kd.reference_data import canonical_dataset
    from kd.report.paper import PAPER_DATASETS

    present, notes = [], []
    for dataset in PAPER_DATASETS:
        try:
            dataset_files(dataset, data_root, purpose="eval")
            present.append(dataset)
        except Exception:  # absent or unknown here: that column keeps its dash and command
            notes.append(f"bicubic not computed on {dataset}: its files are not under the data root")
    frames = []
    for scale in (2, 3, 4):
        if present:
            result = evaluate(create("bicubic", scale), present, scale, data_root=data_root, with_lpips=False,
                              progress=progress, model_name="bicubic")
            frames.append(result.per_dataset)
    if not frames:
        return pd.DataFrame(columns=["arch", "preset", "scale", "dataset_key", "psnr", "ssim"]), notes
    table = pd.concat(frames, ignore_index=True)
    return pd.DataFrame({"arch": "bicubic", "preset": None, "scale": table["scale"].astype(int),
                         "dataset_key": table["dataset"].map(canonical_dataset), "psnr": table["psnr_y"],
                         "ssim": table["ssim_y"]}), notes
