"""`kdbench eval`: PSNR/SSIM (Y, crop = scale) and LPIPS of a network on benchmark sets, beside reference values."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from kd.errors import KdError
from kd.fileio import check_new_files
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
    parser.add_argument("--model", help="registered architecture, e.g. bicubic, rcan, asid, swinir (not needed "
                        "with --run, or with a --ckpt written by kdbench: the file names its network)")
    parser.add_argument("--run", type=Path, metavar="DIR", help="evaluate the student of a finished run folder "
                        "(its network, scale, data root and test sets unless given)")
    parser.add_argument("--data", help=f"comma-separated datasets or image folders (default {DEFAULT_DATA}, or the "
                        "run's; 'default' = the embedded set; a folder holds HR images, or HR/ and optional "
                        "LR_bicubic/X<s>/, and is also found by name under --data-root)")
    parser.add_argument("--scale", help="comma-separated scales, e.g. 2,3,4 (default 4, or the checkpoint's)")
    parser.add_argument("--ckpt", type=Path, help="official or kdbench checkpoint to load (one scale)")
    parser.add_argument("--preset", help="model preset: paper (default), mini or tiny")
    parser.add_argument("--data-root", help="folder holding <Dataset>/HR (default $KDBENCH_DATA or the cache)")
    parser.add_argument("--lr-source", default="auto", choices=("auto", "shipped", "generated"),
                        help="LR images: shipped MATLAB files when present (auto), only those, or regenerated")
    parser.add_argument("--degradation", default="bicubic", help="bicubic (default), or a blind-SR test protocol: "
                        "iso_gaussian (Gaussian8: the mean over 8 blur kernels, x2 and x4) or aniso_gaussian "
                        "(anisotropic blur + noise); the degraded LR images are generated once and cached")
    parser.add_argument("--out", type=Path, help="write the per-dataset results to this CSV")
    parser.add_argument("--per-image", action="store_true", help="also write <out>_per_image.csv")
    parser.add_argument("--save-images", type=Path, help="write SR images as <DIR>/<dataset>/x<s>/<name>.png")
    parser.add_argument("--force", action="store_true", help="replace files that --out or --save-images would "
                        "write where they exist already (never without it)")
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


def run_network(run_dir: Path) -> tuple[Path, dict]:
    """A run folder's `student.pt` and its resolved configuration (empty when config.yaml is absent)."""
    import yaml

    ckpt = run_dir / "student.pt"
    if not ckpt.is_file():
        raise KdError(f"--run {run_dir}: no student.pt there; is it a finished kdbench run folder "
                      "(runs/<run-id>/, with summary.json)?")
    config_path = run_dir / "config.yaml"
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    except (OSError, ValueError, yaml.YAMLError) as exc:  # ValueError: not UTF-8
        raise KdError(f"{config_path} could not be read ({exc}); use --ckpt {ckpt} with --model and --preset "
                      "instead") from None
    return ckpt, config if isinstance(config, dict) else {}


def fill_from_run(args: argparse.Namespace) -> dict:
    """`--run DIR`: its student.pt becomes --ckpt; for a run recorded before student.pt named its network, the
    run's config.yaml supplies --model, --preset and --scale. Returns the run's configuration."""
    from kd.models.loading import read_model_spec

    if args.ckpt is not None:
        raise KdError("give either --run or --ckpt, not both")
    args.ckpt, config = run_network(args.run)
    student = config.get("student") or {}
    if args.model is None and read_model_spec(args.ckpt) is None:
        args.model, args.preset = student.get("arch"), args.preset or student.get("preset")
        args.scale = args.scale or (str(config["scale"]) if config.get("scale") else None)
    return config


def _from_run(args: argparse.Namespace) -> None:
    """`--run DIR` for eval: also the run's test sets and data root, unless given."""
    config = fill_from_run(args)
    evaluation, data = config.get("eval") or {}, config.get("data") or {}
    if args.data is None and evaluation.get("datasets"):
        args.data = ",".join(evaluation["datasets"])
    args.data_root = args.data_root or data.get("root")


def _check_args(args: argparse.Namespace, scales: list[int]) -> None:
    if args.model is None and args.ckpt is None:
        raise KdError("name the network: --model ARCH (e.g. --model bicubic), --ckpt FILE or --run DIR")
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
    if args.out is not None:
        from kd.evaluate import result_files

        check_new_files(result_files(args.out, per_image=args.per_image), option="--out", force=args.force)


def _build_model(args: argparse.Namespace, scale: int | None):
    """The network to evaluate: `--model` built fresh, or what `--ckpt` holds (its own description first)."""
    if args.ckpt is None:
        from kd.models import create

        return create(args.model, scale or 4, args.preset)
    from kd.models.loading import model_from_checkpoint

    return model_from_checkpoint(args.ckpt, arch=args.model, scale=scale, preset=args.preset)


def run_eval(args: argparse.Namespace) -> int:
    import pandas as pd

    from kd.data.registry import resolve_dataset
    from kd.devices import resolve_device
    from kd.evaluate import evaluate, save_result
    from kd.models import get_entry

    if args.run is not None:
        _from_run(args)
    scales = parse_scales(args.scale) if args.scale else [None]
    datasets = [resolve_dataset(name, args.data_root).name for name in _split(args.data or DEFAULT_DATA, "--data")]
    _check_args(args, scales)
    device = resolve_device(args.device)
    console = out_console()

    models = [_build_model(args, scale) for scale in scales]
    if args.degradation != "bicubic":
        from kd.data.degradations import check_degradation

        for model in models:
            check_degradation(args.degradation, model.kd_spec["scale"])
    if args.save_images is not None:
        from kd.evaluate import planned_images

        targets, inputs = planned_images(args.save_images, datasets, [m.kd_spec["scale"] for m in models],
                                         args.data_root, args.degradation)
        check_new_files(targets, option="--save-images", force=args.force, inputs=inputs)
    results = []
    for model in models:
        scale = model.kd_spec["scale"]
        entry, preset = get_entry(model.kd_spec["arch"]), model.kd_spec["preset"]
        results.append(evaluate(
            model, datasets, scale, data_root=args.data_root, lr_source=args.lr_source, tile=args.tile,
            tile_overlap=args.tile_overlap, with_lpips=not args.no_lpips, save_images=args.save_images,
            device=device, progress=not args.no_progress, model_name=entry.arch, degradation=args.degradation,
        ))
    result = results[0]
    result.per_dataset = pd.concat([r.per_dataset for r in results], ignore_index=True)
    result.per_image = pd.concat([r.per_image for r in results], ignore_index=True)
    result.per_dataset = _order(result.per_dataset, datasets)

    print_table(results_table(result, entry.arch, preset, args.degradation), console)
    for note in result.notes:
        say(console, note, "note")
    if args.out is not None:
        meta = {"model": {"arch": entry.arch, "preset": preset, "ckpt": str(args.ckpt) if args.ckpt else None},
                "lr_source": args.lr_source, "tile": args.tile, "degradation": args.degradation}
        for path in save_result(result, args.out, per_image=args.per_image, extra_meta=meta):
            say(console, f"wrote {path}")
    return 0


def _order(table, datasets: list[str]):
    rank = {name: i for i, name in enumerate(datasets)}
    return table.sort_values(["dataset", "scale"], key=lambda col: col.map(rank) if col.name == "dataset" else col,
                             ignore_index=True)


def _cell(psnr: float, ssim: float) -> str:
    return f"{psnr:.2f}/{ssim:.4f}" if math.isfinite(psnr) else f"inf/{ssim:.4f}"


def results_table(result, arch: str, preset: str, degradation: str = "bicubic") -> TextTable:
    """Table: ours beside `bicubic_reference.csv` (bicubic only) and the published value for this model; both are
    of the bicubic track, so a blind-SR evaluation stands alone."""
    from kd.reference_data import bicubic_reference, published_results, reference_row

    golden, published = bicubic_reference(), published_results()
    classical = degradation == "bicubic"
    rows = []
    for rec in result.per_dataset.itertuples(index=False):
        ref = reference_row(golden, rec.dataset, rec.scale) if arch == "bicubic" and classical else None
        pub = reference_row(published, rec.dataset, rec.scale, model=arch) if preset == "paper" and classical else None
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
