"""`kdbench eval`: PSNR/SSIM (Y, crop = scale) and LPIPS of a network on benchmark sets, beside reference values."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from kd.errors import KdError
from kd.messages import say
from kd.output import TextTable, out_console, print_table

DEFAULT_DATA = "Set5,Set14,B100"


def register(subparsers) -> None:
    from kd.cli.run_cmd import add_device_argument

    parser = subparsers.add_parser(
        "eval",
        help="evaluate a network (or the bicubic baseline) on benchmark sets",
        description="PSNR/SSIM on the Y channel (BT.601, crop = scale) and LPIPS (alex, v0.1) on RGB, "
        "per dataset and scale, following the SR-paper protocol.",
    )
    parser.add_argument("--model", required=True, help="registered architecture, e.g. bicubic, rcan, asid, swinir")
    parser.add_argument("--data", default=DEFAULT_DATA, help=f"comma-separated datasets (default {DEFAULT_DATA}; "
                        "'default' = the embedded set, no data root needed)")
    parser.add_argument("--scale", default="4", help="comma-separated scales, e.g. 2,3,4 (default 4)")
    parser.add_argument("--ckpt", type=Path, help="official or kdbench checkpoint to load (one scale)")
    parser.add_argument("--preset", help="model preset: paper (default), mini or tiny")
    parser.add_argument("--data-root", help="folder holding <Dataset>/HR (default $KDBENCH_DATA or the cache)")
    parser.add_argument("--lr-source", default="auto", choices=("auto", "shipped", "generated"),
                        help="LR images: shipped MATLAB files when present (auto), only those, or regenerated")
    parser.add_argument("--out", type=Path, help="write the per-dataset results to this CSV")
    parser.add_argument("--per-image", action="store_true", help="also write <out>_per_image.csv")
    parser.add_argument("--save-images", type=Path, help="write SR images as <DIR>/<dataset>/x<s>/<name>.png")
    parser.add_argument("--tile", type=int, help="run the network on LR tiles of this size (saves memory)")
    parser.add_argument("--tile-overlap", type=int, default=32, help="overlap between tiles in LR pixels")
    parser.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    add_device_argument(parser, default="auto")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_eval)


def _split(value: str, option: str) -> list[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise KdError(f"{option} is empty: give a comma-separated list")
    return items


def parse_scales(value: str) -> list[int]:
    try:
        return [int(item) for item in _split(value, "--scale")]
    except ValueError as exc:
        raise KdError(f"--scale {value!r}: expected comma-separated integers such as 2,3,4") from exc


def _check_args(args: argparse.Namespace, scales: list[int]) -> None:
    if args.ckpt is not None:
        if not args.ckpt.is_file():
            raise KdError(f"--ckpt {args.ckpt}: no such file")
        if len(scales) > 1:
            raise KdError(f"--ckpt holds weights for one scale; pass a single --scale (got {args.scale})")
    if args.tile is not None and (args.tile <= 0 or args.tile_overlap < 0 or args.tile <= args.tile_overlap):
        raise KdError(f"--tile ({args.tile}) must be positive and larger than --tile-overlap ({args.tile_overlap})")
    if args.per_image and args.out is None:
        raise KdError("--per-image writes a CSV beside --out; pass --out results.csv as well")
    if args.out is not None and args.out.is_dir():
        raise KdError(f"--out {args.out} is a folder; give a file name such as {args.out / 'results.csv'}")


def _build_model(args: argparse.Namespace, scale: int):
    from kd.models import create

    model = create(args.model, scale, args.preset)
    if args.ckpt is not None:
        from kd.models.loading import load_official

        load_official(model, args.ckpt)
    return model


def run_eval(args: argparse.Namespace) -> int:
    import pandas as pd

    from kd.data.registry import resolve_dataset
    from kd.engine.services import resolve_device
    from kd.evaluate import evaluate, save_result
    from kd.models import get_entry

    scales = parse_scales(args.scale)
    datasets = [resolve_dataset(name).name for name in _split(args.data, "--data")]
    entry = get_entry(args.model)
    _check_args(args, scales)
    device = resolve_device(args.device)
    console = out_console()

    results = []
    for scale in scales:
        model = _build_model(args, scale)
        results.append(evaluate(
            model, datasets, scale, data_root=args.data_root, lr_source=args.lr_source, tile=args.tile,
            tile_overlap=args.tile_overlap, with_lpips=not args.no_lpips, save_images=args.save_images,
            device=device, progress=not args.no_progress, model_name=entry.arch,
        ))
    result = results[0]
    result.per_dataset = pd.concat([r.per_dataset for r in results], ignore_index=True)
    result.per_image = pd.concat([r.per_image for r in results], ignore_index=True)
    result.per_dataset = _order(result.per_dataset, datasets)

    preset = args.preset or entry.default_preset
    print_table(results_table(result, entry.arch, preset), console)
    for note in result.notes:
        say(console, note, "note")
    if args.out is not None:
        meta = {"model": {"arch": entry.arch, "preset": preset, "ckpt": str(args.ckpt) if args.ckpt else None},
                "lr_source": args.lr_source, "tile": args.tile}
        for path in save_result(result, args.out, per_image=args.per_image, extra_meta=meta):
            say(console, f"wrote {path}")
    return 0


def _order(table, datasets: list[str]):
    rank = {name: i for i, name in enumerate(datasets)}
    return table.sort_values(["dataset", "scale"], key=lambda col: col.map(rank) if col.name == "dataset" else col,
                             ignore_index=True)


def _cell(psnr: float, ssim: float) -> str:
    return f"{psnr:.2f}/{ssim:.4f}" if math.isfinite(psnr) else f"inf/{ssim:.4f}"


def results_table(result, arch: str, preset: str) -> TextTable:
    """Table: ours beside `bicubic_reference.csv` (bicubic only) and the published value for this model."""
    from kd.reference_data import bicubic_reference, published_results, reference_row

    golden, published = bicubic_reference(), published_results()
    rows = []
    for rec in result.per_dataset.itertuples(index=False):
        ref = reference_row(golden, rec.dataset, rec.scale) if arch == "bicubic" else None
        pub = reference_row(published, rec.dataset, rec.scale, model=arch) if preset == "paper" else None
        rows.append((rec, ref, pub))
    show_ref = any(ref is not None for _, ref, _ in rows)
    sources = sorted({f"{pub.source.split(' (')[0]} {pub.table}" for _, _, pub in rows if pub is not None})
    lr_sources = sorted(set(result.per_dataset["lr_source"]))

    lpips = result.lpips_variant
    caption = ["PSNR/SSIM on Y (BT.601), crop = scale, mean of per-image values", f"LR: {', '.join(lr_sources)}"]
    caption.append(f"LPIPS {lpips['net']} v{lpips['version']} on RGB, {lpips['trunk_source']} trunk" if lpips
                   else "LPIPS n/a")
    if show_ref:
        caption.append("ref = kdbench bicubic_reference.csv")
    if sources:
        caption.append(f"published = {', '.join(sources)}")
    table = TextTable(title=f"{arch} ({preset})", caption="; ".join(caption), key=2)
    table.add_column("Dataset")
    for name in ("Scale", "N", "PSNR/SSIM"):
        table.add_column(name, justify="right")
    if show_ref:
        table.add_column("ref", justify="right")
        table.add_column("Δ", justify="right")
    if sources:
        table.add_column("published", justify="right")
    table.add_column("LPIPS", justify="right")
    for rec, ref, pub in rows:
        cells = [rec.dataset, f"x{rec.scale}", str(rec.images), _cell(rec.psnr_y, rec.ssim_y)]
        if show_ref:
            cells += [_cell(ref.psnr_y, ref.ssim_y), f"{rec.psnr_y - ref.psnr_y:+.3f}"] if ref is not None else ["", ""]
        if sources:
            cells.append(_cell(pub.psnr, pub.ssim) if pub is not None else "")
        cells.append(f"{rec.lpips:.4f}" if math.isfinite(rec.lpips) else "n/a")
        table.add_row(*cells)
    return table
