"""`kdbench` command line. Each sub-command lives in its own module with a `register(subparsers)` function."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
import warnings

from kd import __version__
from kd.errors import describe_failure
from kd.messages import say

# Modules of kd.cli that add sub-commands, in the order they appear in --help.
COMMAND_MODULES = [
    "data_cmd", "eval_cmd", "sr_cmd", "list_cmd", "weights_cmd", "run_cmd", "teacher_cmd", "results_cmd", "sweep_cmd",
    "tune_cmd", "report_cmd", "paper_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdbench",
        description="Knowledge-distillation benchmark for single-image super-resolution.",
    )
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error (also "
                        "KDBENCH_DEBUG=1); accepted anywhere on the command line")
    parser.add_argument("--version", action="version", version=f"kdbench {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"kd.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("KDBENCH_DEBUG", "") not in ("", "0")
    parser = build_parser()
    args = parser.parse_args([item for item in argv if item != "--debug"])
    args.argv = argv  # for relaunching the same command (--nproc)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    from rich.console import Console

    err = Console(stderr=True)
    try:
        with warnings.catch_warnings():
            if not debug:  # a warning is a message to the user: one line, without our source file and line
                warnings.showwarning = lambda message, *_rest, **_kw: say(err, str(message), "warning")
            return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        say(err, "interrupted", "warning")
        return 130
    except Exception as exc:  # the error boundary: one line naming the culprit; the traceback only on request
        if debug:
            traceback.print_exc()
        message, code = describe_failure(exc)
        say(err, message, "error")
        return code


if __name__ == "__main__":
    sys.exit(main())
