"""`kdbench data list` and `kdbench data download <name>`."""

from __future__ import annotations

import argparse

from kd.messages import say
from kd.output import TextTable, out_console, print_table, styled


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="list and download datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    data.set_defaults(handler=lambda args: _usage(data))

    listing = data_sub.add_parser("list", help="datasets kdbench knows, and which are on disk")
    listing.add_argument("--data-root", metavar="DIR", help="dataset root (default: $KDBENCH_DATA or the cache)")
    listing.set_defaults(handler=list_command)

    download = data_sub.add_parser("download", help="download and install a dataset")
    download.add_argument("name", help="dataset name, e.g. DIV2K, Set5 (brings Set14, B100, Urban100 "
                          "too), T91 (brings BSD200 too: the 291 set)")
    download.add_argument("--data-root", metavar="DIR", help="dataset root (default: $KDBENCH_DATA or the cache)")
    download.add_argument("--force", action="store_true", help="download and install again even if present")
    download.set_defaults(handler=download_command)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _where(info, root) -> tuple[str, str, str]:
    """(present?, where, image count) of one dataset."""
    from kd.data.embedded import SPLITS, embedded_dir
    from kd.data.io import IMAGE_SUFFIXES

    if info.embedded:
        counts = ", ".join(f"{len(names)} {split}" for split, names in SPLITS.items())
        return "yes", f"{embedded_dir()} (embedded)", counts
    if info.parts:
        present = all(any((root / f / "HR").is_dir() for f in _folders(p)) for p in info.parts)
        return ("yes" if present else "no"), " + ".join(info.parts), str(info.image_count or "?")
    for folder in info.folder_names:
        hr = root / folder / "HR"
        if hr.is_dir():
            count = sum(1 for p in hr.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            lr = sorted(p.name for p in (root / folder / "LR_bicubic").glob("X*") if p.is_dir())
            return "yes", str(root / folder) + (f" (LR {', '.join(lr)})" if lr else ""), str(count)
    return "no", str(root / info.folder_names[0]), str(info.image_count or "?")


def _folders(name: str) -> tuple[str, ...]:
    from kd.data.registry import resolve_dataset

    return resolve_dataset(name).folder_names


def list_command(args: argparse.Namespace) -> int:
    from kd.data.registry import list_datasets
    from kd.data.roots import resolve_data_root

    root = resolve_data_root(args.data_root)
    table = TextTable(title=f"kdbench datasets · data root {root}")
    for column in ("name", "aliases", "role", "present", "images", "where"):
        table.add_column(column, justify="right" if column == "images" else "left", wrap=column in ("aliases", "where"))
    for info in list_datasets():
        present, where, count = _where(info, root)
        style = "green" if present == "yes" else "dim"
        table.add_row(info.name, ", ".join(info.aliases) or "-", info.role, styled((present, style)), count, where)
    print_table(table)
    return 0


def download_command(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from kd.data.download import download_dataset

    err = out_console(stderr=True)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=err
    ) as bar:
        tasks: dict[str, int] = {}

        def progress(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done, total=total)

        installed = download_dataset(
            args.name, args.data_root, force=args.force, log=lambda m: say(bar.console, m),
            progress=progress,
        )
    for folder in installed:
        say(err, str(folder), "ready")
    return 0
