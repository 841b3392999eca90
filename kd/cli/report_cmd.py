"""`kdbench report`: an HTML + Markdown comparison report (tables, plots, visual crops) over finished runs."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from kd.messages import say
from kd.output import out_console, print_table


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write an HTML + Markdown comparison report over finished runs",
        description="Per configuration x teacher x method x dataset: PSNR/SSIM (LPIPS) mean ± std over seeds, paired "
        "Δ PSNR vs the no-KD student of the same configuration, claimed only after Holm-Bonferroni over the "
        "report's comparisons (familywise 5%), share of the teacher-student gap recovered; delta bars, training "
        "curves, PSNR vs cost beside published lightweight peers, visual crops.",
    )
    parser.add_argument("--runs", type=Path, action="append", help="folder of runs (default runs/); repeat it to "
                        "join folders, e.g. new runs beside a committed report's records/ (a run id in two folders "
                        "is read from the first given)")
    parser.add_argument("--out", type=Path, help="output folder (default reports/<name of --runs>)")
    parser.add_argument("--force", action="store_true", help="replace an earlier kdbench report in --out (files "
                        "added to it, at any depth, are kept; a folder kdbench did not write is never replaced)")
    parser.add_argument("--title", help="page title")
    parser.add_argument("--filter", dest="filters", action="append", default=[], metavar="KEY=VALUE[,VALUE]",
                        help="report only the runs whose KEY is one of the values (as in kdbench results: name=, "
                        "tag=, teacher=, method=, seed=, ...; repeatable, all must match); the no-KD runs that pair "
                        "with the kept KD runs stay, for their Δ")
    parser.add_argument("--visual-images", type=int, default=2, help="evaluation images in the visual comparison")
    parser.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace) -> int:
    from kd.api import build_report
    from kd.errors import KdError

    if args.visual_images < 0:
        raise KdError(f"--visual-images must be >= 0, got {args.visual_images}")
    runs = args.runs or [Path("runs")]
    out = args.out or Path("reports") / (runs[0].resolve().name or "report")
    err = out_console(stderr=True)
    report = build_report(runs, out, title=args.title, visual_images=args.visual_images, force=args.force,
                          filters=args.filters)
    console = out_console()
    for line in textwrap.wrap(report.content.finding, width=80):  # a sentence of words, no paths: safe to wrap
        say(console, line)
    for table in report.console_tables():
        print_table(table, console)
    for note in [*report.warnings, *report.content.notes]:
        say(err, note, "note")
    say(console, f"wrote {out / 'report.html'} and {out / 'report.md'} ({len(report.files)} files)")
    if report.kept:
        say(console, f"kept what kdbench did not write in {out}: {', '.join(report.kept)}")
    return 0
