"""`kdbench sr`: super-resolve a folder of LR images that have no HR (a trained student or any registered network)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from kd.errors import KdError
from kd.messages import say
from kd.output import out_console


def register(subparsers) -> None:
    from kd.cli.run_cmd import add_device_argument

    parser = subparsers.add_parser(
        "sr",
        help="super-resolve a folder of low-resolution images with a trained network",
        description="Run a network on every PNG/BMP/JPEG image of --input and write <out>/<name>.png. Large "
        "images are processed in overlapping tiles. Existing files in --out are never overwritten without --force.",
    )
    parser.add_argument("--ckpt", type=Path, help="checkpoint: a kdbench student.pt names its own network; an "
                        "official file needs --model (and --preset, --scale)")
    parser.add_argument("--run", type=Path, metavar="DIR", help="use the student of a finished run folder")
    parser.add_argument("--model", help="architecture when the checkpoint does not name it, e.g. rcan")
    parser.add_argument("--preset", help="model preset when the checkpoint does not name it (default paper)")
    parser.add_argument("--scale", type=int, help="upscaling factor when the checkpoint does not name it")
    parser.add_argument("--input", type=Path, required=True, metavar="DIR", help="folder of LR images")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the SR PNGs")
    parser.add_argument("--tile", type=int, default=256, help="LR tile size; 0 = whole image at once "
                        "(default 256: images larger than that are processed in tiles)")
    parser.add_argument("--tile-overlap", type=int, default=32, help="overlap between tiles in LR pixels")
    parser.add_argument("--force", action="store_true", help="overwrite existing files in --out")
    add_device_argument(parser, default="auto")
    parser.set_defaults(handler=run_sr)


def _inputs(folder: Path) -> list[Path]:
    from kd.data.io import IMAGE_SUFFIXES

    if not folder.is_dir():
        raise KdError(f"--input {folder}: no such folder; give a folder of PNG/BMP/JPEG images")
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise KdError(f"--input {folder}: no PNG/BMP/JPEG images there")
    stems = [p.stem for p in images]
    twins = sorted({s for s in stems if stems.count(s) > 1})
    if twins:
        raise KdError(f"--input {folder}: {', '.join(twins[:3])} exist with two extensions; both would be written "
                      "as the same PNG: move one away")
    return images


def planned_outputs(images: list[Path], out: Path, force: bool) -> list[Path]:
    """<out>/<stem>.png per input; refuses, before any work, to overwrite an input or (without --force) any file."""
    from kd.fileio import check_new_files

    if out.exists() and not out.is_dir():
        raise KdError(f"--out {out} is a file; give a folder for the SR images")
    targets = [out / f"{image.stem}.png" for image in images]
    check_new_files(targets, option="--out", force=force, inputs=images)
    return targets


def run_sr(args: argparse.Namespace) -> int:
    import torch

    from kd.cli.eval_cmd import fill_from_run
    from kd.data.io import read_image, write_png
    from kd.devices import resolve_device
    from kd.evaluate import forward_tiled
    from kd.metrics import quantize
    from kd.models.loading import model_from_checkpoint

    if args.run is not None:
        fill_from_run(args)
        args.scale = int(args.scale) if args.scale else None
    if args.ckpt is None:
        raise KdError("name the network: --ckpt FILE (a checkpoint) or --run DIR (a finished run)")
    if args.tile < 0 or (args.tile and args.tile <= args.tile_overlap) or args.tile_overlap < 0:
        raise KdError(f"--tile ({args.tile}) must be 0 or larger than --tile-overlap ({args.tile_overlap})")
    images = _inputs(args.input)
    targets = planned_outputs(images, args.out, args.force)
    model = model_from_checkpoint(args.ckpt, arch=args.model, scale=args.scale, preset=args.preset)
    scale = model.kd_spec["scale"]
    device = torch.device(resolve_device(args.device))
    model.eval().to(device)
    console = out_console()
    spec = model.kd_spec
    say(console, f"{spec['arch']} ({spec['preset']}) x{scale}: {len(images)} image(s) from {args.input} to {args.out}")
    with torch.inference_mode():
        for number, (image, target) in enumerate(zip(images, targets), start=1):
            started = time.perf_counter()
            lr = read_image(image).to(device, torch.float32).div(255.0).unsqueeze(0)
            sr = quantize(forward_tiled(model, lr, scale, args.tile or None, args.tile_overlap)[0]).cpu()
            write_png(target, sr)
            say(console, f"[{number}/{len(images)}] {target} ({lr.shape[-1]}x{lr.shape[-2]} -> "
                f"{sr.shape[-1]}x{sr.shape[-2]}, {time.perf_counter() - started:.1f} s)")
    return 0
