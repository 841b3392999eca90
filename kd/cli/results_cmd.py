"""`kdbench results`: every finished run as a paper-style table, or the tidy results as CSV / Parquet / LaTeX."""

from __future__ import annotations

import argparse
import warnings

from kd.errors import KdError
from kd.messages import say
from kd.output import out_console, print_table


def results_command(args: argparse.Namespace) -> int:
    from kd.results import CorruptRunWarning, filter_runs, load_runs
    from kd.results.formats import check_parquet_support, text_table, write_results

    err = out_console(stderr=True)
    if args.format == "parquet":
        if not args.out:
            raise KdError("--format parquet writes a file: give --out FILE.parquet.")
        check_parquet_support()  # before reading every run
    if args.out:
        from pathlib import Path

        from kd.fileio import check_new_files

        if Path(args.out).is_dir():
            raise KdError(f"--out {args.out} is a folder; give a file name such as {Path(args.out) / 'results.csv'}.")
        check_new_files([Path(args.out)], option="--out", force=args.force)
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CorruptRunWarning)
            frame = load_runs(args.runs, include_unfinished=args.include_unfinished)
    finally:  # also when no run is left: the damaged ones are why
        for warning in caught:
            if issubclass(warning.category, CorruptRunWarning):
                say(err, str(warning.message), "warning")
            else:
                warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    frame = filter_runs(frame, args.filters)

    if args.out:
        write_results(frame, args.format, args.out)
        say(err, f"wrote {args.format} results of {frame['run_id'].nunique()} run(s) to {args.out}")
    elif args.format == "table":
        print_table(text_table(frame, title=f"kdbench results ({args.runs})"))
    elif args.format == "csv":
        print(frame.to_csv(index=False), end="")
    elif args.format == "latex":
        from kd.results.formats import latex_table

        print(latex_table(frame), end="")
    return 0


# kd.results.formats.FORMATS, spelled out so that --help does not import pandas (a test checks them).
FORMATS = ("table", "csv", "parquet", "latex")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "results",
        help="tabulate the finished runs (PSNR/SSIM per dataset) or export them",
        description="Read every run under --runs into one tidy table (one row per run x dataset x scale x "
        "metric). The default output is a paper-style table (PSNR/SSIM per dataset, mean over seeds); csv and "
        "parquet export the tidy rows, latex the paper-style table.",
    )
    parser.add_argument("--runs", default="runs", metavar="DIR", help="runs root (default: ./runs)")
    parser.add_argument("--filter", dest="filters", action="append", default=[], metavar="KEY=VALUE[,VALUE]",
                        help="keep rows whose column KEY is one of the values, e.g. teacher=rcan, "
                        "method=fitnet,logits, dataset=Set5 (repeatable; all must match)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    parser.add_argument("--out", metavar="FILE", help="write to FILE (atomically) instead of the terminal; "
                        "required for parquet")
    parser.add_argument("--force", action="store_true", help="replace --out where it exists already (never "
                        "without it)")
    parser.add_argument("--include-unfinished", action="store_true",
                        help="also list runs without summary.json (their evaluation, when it got that far)")
    parser.set_defaults(handler=results_command)
