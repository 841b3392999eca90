"""`kdbench teacher train|list|export|import`: the teacher zoo (teachers trained once, cached, reused by every run)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kd.cli.run_cmd import add_config_arguments, build_config, relaunch_under_torchrun
from kd.messages import say
from kd.output import TextTable, out_console, print_table


def train_command(args: argparse.Namespace) -> int:
    from kd.devices import resolve_device
    from kd.engine.distributed import from_environment
    from kd.engine.teachers import complete_entry, train_teacher, zoo_dir
    from kd.models import get_entry

    flags: dict[str, Any] = {"teacher": {"arch": args.teacher}}
    if args.preset:
        flags["teacher"]["preset"] = args.preset
    if args.teacher_seed is not None:
        flags["teacher"]["seed"] = args.teacher_seed
    if args.data:
        flags["data"] = {"train": args.data}
    get_entry(args.teacher)  # unknown architecture: fail before resolving anything else
    config = build_config(args, flags)
    relaunched = relaunch_under_torchrun(args, config)
    if relaunched is not None:
        return relaunched
    dist = from_environment(resolve_device(config.device))
    err = out_console(stderr=True, quiet=not dist.is_main)
    folder = zoo_dir(config)
    if complete_entry(folder) and not args.retrain:
        say(err, f"teacher {folder.name} is already in the zoo ({folder}); --retrain to train it again")
        return 0
    if args.retrain and dist.is_main:
        for name in ("teacher.pt", "teacher.json", "metrics.jsonl"):
            (folder / name).unlink(missing_ok=True)
        for name in ("last.pt", "previous.pt", "best.pt"):
            (folder / "checkpoints" / name).unlink(missing_ok=True)
    say(err, f"training teacher {folder.name} ({config.teacher.train.steps} steps) into {folder}")
    _, info = train_teacher(config, console=err, progress=not args.no_progress and dist.is_main, dist=dist)
    if not dist.is_main:
        return 0
    table = TextTable(title=f"teacher {info['key']} · {info['steps']} steps in {info['train_seconds']:.0f} s")
    table.add_column("dataset")
    table.add_column("PSNR-Y", justify="right")
    table.add_column("SSIM-Y", justify="right")
    for dataset, scores in info["eval"].items():
        table.add_row(dataset, f"{scores['psnr_y']:.3f}", f"{scores['ssim_y']:.4f}")
    print_table(table)
    return 0


def list_command(args: argparse.Namespace) -> int:
    from kd.engine.teachers import list_zoo, zoo_root

    damaged: list[str] = []
    entries = list_zoo(damaged)
    console = out_console()
    for message in damaged:
        say(out_console(stderr=True), message, "warning")
    if not entries:
        say(console, f"no cached teachers in {zoo_root()}")
        return 0
    datasets = list(dict.fromkeys(name for info in entries for name in info.get("eval", {})))
    table = TextTable(title=f"teacher zoo ({zoo_root()}); evaluation PSNR-Y (dB)")
    table.add_column("key")
    for column in ("steps", "train s", *datasets):
        table.add_column(column, justify="right")
    for info in entries:
        scores = info.get("eval", {})
        table.add_row(info["key"], str(info["steps"]), f"{info['train_seconds']:.0f}",
                      *(f"{scores[d]['psnr_y']:.2f}" if d in scores else "-" for d in datasets))
    print_table(table, console)
    return 0


def export_command(args: argparse.Namespace) -> int:
    from kd.engine.teachers import export_entry

    target = export_entry(args.key, args.out)
    say(out_console(), f"exported teacher {args.key} to {target}; `kdbench teacher import {target}` adds it to "
                       "another machine's zoo")
    return 0


def import_command(args: argparse.Namespace) -> int:
    from kd.engine.teachers import exported_entries, import_entry

    console = out_console()
    for folder in (entry for given in args.folders for entry in exported_entries(given)):
        target, added = import_entry(folder)
        say(console, f"teacher {target.name} {'added to the zoo' if added else 'is already in the zoo'} ({target})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("teacher", help="train, list, export and import cached teachers (the zoo)")
    commands = parser.add_subparsers(dest="teacher_command", metavar="ACTION", required=True)
    train = commands.add_parser(
        "train",
        help="train a teacher with the profile's teacher recipe and cache it",
        description="Train a teacher and cache it under <cache>/teachers/, keyed by architecture, preset, scale, "
        "training data, seed and recipe. `kdbench run` uses it when no --teacher-ckpt is given.",
    )
    train.add_argument("--teacher", required=True, help="teacher architecture: any network of `kdbench list "
                       "models`, e.g. rcan, han, swinir, edsr, san, swinfir, emsrdpn, mdsr")
    train.add_argument("--preset", help="teacher preset (default: the profile's)")
    train.add_argument("--teacher-seed", type=int, help="teacher training seed (default 0)")
    train.add_argument("--data", help="training dataset (default: the profile's)")
    train.add_argument("--retrain", action="store_true", help="train again even if the zoo has this teacher")
    add_config_arguments(train)
    train.set_defaults(handler=train_command)
    listing = commands.add_parser("list", help="list cached teachers")
    listing.set_defaults(handler=list_command)
    export = commands.add_parser(
        "export", help="copy a cached teacher (weights, record, sha256) to a folder, for another machine",
        description="Copy the zoo entry KEY (teacher.pt, teacher.json, its training log and teacher.pt.sha256; not "
        "the resumable checkpoints) to OUT/KEY/. `kdbench teacher import` puts it into another machine's zoo, so "
        "runs there pair with runs made here instead of training the teacher again.",
    )
    export.add_argument("key", help="zoo key, as `kdbench teacher list` shows it")
    export.add_argument("--out", type=Path, required=True, help="folder to write OUT/KEY/ into (never overwritten)")
    export.set_defaults(handler=export_command)
    importing = commands.add_parser(
        "import", help="add exported teachers to the zoo (sha256 and weights checked; never replaces a finished one)",
        description="Add folders written by `kdbench teacher export` (or every such folder inside a FOLDER, as in "
        "reports/teachers) to this machine's zoo. The weights must match "
        "their sha256 and load (weights_only) into the network their record names; an identical entry already "
        "there is kept, a different finished one is never replaced, and an unfinished one (what a failed or "
        "interrupted training of that teacher left, kdbench's own files only) is replaced.",
    )
    importing.add_argument("folders", nargs="+", type=Path, metavar="FOLDER", help="exported teacher folder(s), or folder(s) holding them")
    importing.set_defaults(handler=import_command)
