"""`kdbench` command line. Each sub-command lives in its own module with a `register(subparsers)` function."""

from __future__ import annotations

import argparse
import importlib
import sys

from rich.console import Console

from kd.errors import KdError
from kd.messages import say

# Modules of kd.cli that add sub-commands, in the order they appear in --help.
COMMAND_MODULES = [
    "data_cmd", "eval_cmd", "sr_cmd", "list_cmd", "weights_cmd", "run_cmd", "teacher_cmd", "results_cmd", "sweep_cmd",
    "report_cmd", "paper_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdbench",
        description="Knowledge-distillation benchmark for single-image super-resolution.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"kd.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for relaunching the same command (--nproc)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    err = Console(stderr=True)
    try:
        return int(args.handler(args) or 0)
    except KdError as exc:
        say(err, str(exc), "error")
        return 2
    except KeyboardInterrupt:
        say(err, "interrupted", "warning")
        return 130


if __name__ == "__main__":
    sys.exit(main())
