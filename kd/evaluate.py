"""Benchmark evaluation of an SR network: PSNR/SSIM on Y (and LPIPS on RGB) per dataset and scale.

The pipeline is METRICS.md section 2: HR modcropped to the scale, LR (shipped MATLAB files or regenerated with the
MATLAB-style resize) fed to the network as float32 RGB in [0, 1], output quantised to uint8, `scale` pixels cropped
from every border, metrics per image in float64, dataset score = mean of per-image values.

On the blind-SR track (`degradation`, `kd.data.degradations`) every test image is degraded with each of the
protocol's fixed kernels (Gaussian8: 8), one per-image row per image and kernel, and the dataset score is the mean
over the kernels of each kernel's mean, as the official blind-SR test averages. A network that needs the HR (KDSR's
teacher) is fed it, as the official test of that teacher does; a note says so.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from kd.errors import KdError
from kd.fileio import atomic_write_text
from kd.metrics import METRIC_SPEC, psnr_y, quantize, ssim_y
from kd.metrics.psnr_ssim import SSIM_WINDOW

PER_DATASET_COLUMNS = ["model", "dataset", "scale", "images", "psnr_y", "ssim_y", "lpips", "lr_source", "seconds"]
PER_IMAGE_COLUMNS = ["model", "dataset", "scale", "image", "psnr_y", "ssim_y", "lpips", "lr_source"]


@dataclass
class EvalResult:
    per_dataset: pd.DataFrame  # one row per (dataset, scale): PER_DATASET_COLUMNS
    per_image: pd.DataFrame  # one row per image: PER_IMAGE_COLUMNS
    metric_spec: dict = field(default_factory=lambda: dict(METRIC_SPEC))
    lpips_variant: dict | None = None  # {net, version, trunk_source}; None when LPIPS was off or unavailable
    notes: list[str] = field(default_factory=list)


def _tile_starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def _kept_spans(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """The part of each tile that goes into the output: neighbouring tiles split their overlap at its middle,
    so every kept pixel lies at least overlap/2 away from any tile edge that is not an image edge."""
    spans = []
    for i, start in enumerate(starts):
        lo = 0 if i == 0 else (start + starts[i - 1] + tile) // 2
        hi = length if i == len(starts) - 1 else (starts[i + 1] + start + tile) // 2
        spans.append((lo, hi))
    return spans


def forward_tiled(model: nn.Module, lr: torch.Tensor, scale: int, tile: int | None, overlap: int = 32,
                  hr: torch.Tensor | None = None) -> torch.Tensor:
    """Run `model` on (B, 3, h, w) `lr` in overlapping `tile` x `tile` pieces and stitch (B, 3, h*scale, w*scale).

    Each output pixel is taken from the tile where it lies farthest from a cut, so a network whose receptive field
    (in LR pixels) is smaller than `overlap` gives the same result as an untiled forward pass. A network that needs
    the HR (`sr_inputs`) gets `hr`, tiled alike.
    """
    from kd.models import sr_inputs

    height, width = lr.shape[-2:]
    if tile is None or (height <= tile and width <= tile):
        return model(*sr_inputs(model, lr, hr))
    if overlap < 0 or tile <= overlap:
        raise KdError(f"--tile ({tile}) must be larger than --tile-overlap ({overlap}), and the overlap >= 0")
    stride = tile - overlap
    rows, cols = _tile_starts(height, tile, stride), _tile_starts(width, tile, stride)
    row_spans, col_spans = _kept_spans(rows, tile, height), _kept_spans(cols, tile, width)
    out = None
    for top, (row_lo, row_hi) in zip(rows, row_spans):
        for left, (col_lo, col_hi) in zip(cols, col_spans):
            hr_piece = None if hr is None else hr[..., top * scale : (top + tile) * scale,
                                                  left * scale : (left + tile) * scale]
            piece = model(*sr_inputs(model, lr[..., top : top + tile, left : left + tile], hr_piece))
            if out is None:
                out = piece.new_empty(*piece.shape[:-2], height * scale, width * scale)
            out[..., row_lo * scale : row_hi * scale, col_lo * scale : col_hi * scale] = piece[
                ...,
                (row_lo - top) * scale : (row_hi - top) * scale,
                (col_lo - left) * scale : (col_hi - left) * scale,
            ]
    return out


def _model_scale(model: nn.Module, scales: list[int]) -> None:
    spec = getattr(model, "kd_spec", None)
    if spec is None:
        return
    wrong = [s for s in scales if s != spec["scale"]]
    if wrong:
        raise KdError(
            f"the '{spec['arch']}' model was built for x{spec['scale']} but x{wrong[0]} was requested; "
            f"build one model per scale (kd.models.create(arch, scale))"
        )


def _progress(enabled: bool):
    if not enabled:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    # On stderr, and only on a terminal: a piped stdout holds results, not a blank line left by a transient bar.
    console = Console(stderr=True)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True, disable=not console.is_terminal)


def evaluate(
    model: nn.Module,
    datasets: Sequence[str],
    scales: int | Sequence[int],
    *,
    data_root=None,
    lr_source: str = "auto",
    tile: int | None = None,
    tile_overlap: int = 32,
    with_lpips: bool = True,
    save_images: Path | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    model_name: str | None = None,
    degradation: str = "bicubic",
) -> EvalResult:
    """Score `model` on every (dataset, scale); see the module docstring for the exact pipeline."""
    from kd.data.io import write_png
    from kd.data.registry import incomplete_note, resolve_dataset
    from kd.devices import resolve_device
    from kd.metrics.lpips import LPIPS_UNAVAILABLE_NOTE, build_lpips, lpips_rgb

    scales = [int(scales)] if isinstance(scales, int) else [int(s) for s in scales]
    datasets = [datasets] if isinstance(datasets, str) else list(datasets)
    datasets = [resolve_dataset(d, data_root).name for d in datasets]  # canonical names; unknown ones fail before any work
    _model_scale(model, scales)
    spec = getattr(model, "kd_spec", None)
    name = model_name or (spec["arch"] if spec else type(model).__name__)
    device = torch.device(resolve_device(str(device)))
    notes: list[str] = []
    needs_hr = getattr(model, "needs_hr", False)
    if needs_hr:
        notes.append(f"{name} sees the HR image (its degradation encoder's input), as the official test of the KDSR "
                     "teacher feeds it: its scores are a reference for the students, not blind SR.")
    lpips_metric = build_lpips(device) if with_lpips else None
    if with_lpips and lpips_metric is None:
        notes.append(LPIPS_UNAVAILABLE_NOTE)
    nan = float("nan")

    was_training = model.training
    model.eval().to(device)
    image_rows, dataset_rows = [], []
    try:
        with _progress(progress) as bar, torch.inference_mode():
            for dataset in datasets:
                for scale in scales:
                    started = time.perf_counter()
                    test_sets = _test_sets(dataset, scale, data_root, lr_source, degradation)
                    count = len(test_sets[0][1])
                    partial = incomplete_note(dataset, count)
                    if partial and partial not in notes:
                        notes.append(partial)
                    total = sum(len(found) for _, found in test_sets)
                    task = bar.add_task(f"{name} {dataset} x{scale}", total=total) if bar else None
                    tables = []
                    for kernel, images in test_sets:
                        rows = []
                        for image in images:
                            if min(image.hr.shape[-2:]) - 2 * scale < SSIM_WINDOW:
                                raise KdError(f"{image.path or image.name} is too small to score at x{scale}: the "
                                              f"metrics crop {scale} px at each border and SSIM needs {SSIM_WINDOW}x"
                                              f"{SSIM_WINDOW} px after that; remove the image or use larger ones")
                            lr = image.lr.to(device, torch.float32).div(255.0).unsqueeze(0)
                            hr = image.hr.to(device, torch.float32).div(255.0).unsqueeze(0) if needs_hr else None
                            sr = _forward(model, lr, hr, scale, tile, tile_overlap, image, f"{dataset} x{scale}")
                            if tuple(sr.shape[-3:]) != tuple(image.hr.shape):
                                raise KdError(
                                    f"{name} returned {tuple(sr.shape[-3:])} for {dataset}/{image.name} x{scale}, "
                                    f"expected {tuple(image.hr.shape)}; is the model built for x{scale}?"
                                )
                            sr = quantize(sr[0]).cpu()
                            rows.append({
                                "model": name, "dataset": dataset, "scale": scale, "image": image.name,
                                "psnr_y": psnr_y(sr, image.hr, scale), "ssim_y": ssim_y(sr, image.hr, scale),
                                "lpips": lpips_rgb(sr, image.hr, scale, lpips_metric) if lpips_metric else nan,
                                "lr_source": image.lr_source,
                            })
                            if save_images is not None:
                                stem = image.name if kernel is None else f"{image.name}_{kernel}"
                                write_png(saved_image_path(save_images, dataset, scale, stem), sr)
                            if bar:
                                bar.advance(task)
                        tables.append(pd.DataFrame(rows, columns=PER_IMAGE_COLUMNS))
                    if bar:
                        bar.remove_task(task)
                    image_rows += tables
                    # Each kernel's mean, then their mean (= the mean over images x kernels: equal image counts).
                    means = pd.DataFrame([table[["psnr_y", "ssim_y", "lpips"]].mean() for table in tables])
                    lr_sources = sorted({s for table in tables for s in table["lr_source"]})
                    dataset_rows.append({
                        "model": name, "dataset": dataset, "scale": scale, "images": count,
                        "psnr_y": means["psnr_y"].mean(), "ssim_y": means["ssim_y"].mean(),
                        "lpips": means["lpips"].mean() if lpips_metric else nan,
                        "lr_source": ",".join(lr_sources) if len(tables) == 1 else (
                            f"{degradation}: mean of {len(tables)} kernels"),
                        "seconds": time.perf_counter() - started,
                    })
    finally:
        model.train(was_training)

    return EvalResult(
        per_dataset=pd.DataFrame(dataset_rows, columns=PER_DATASET_COLUMNS),
        per_image=pd.concat(image_rows, ignore_index=True) if image_rows else pd.DataFrame(columns=PER_IMAGE_COLUMNS),
        lpips_variant=lpips_metric.variant.as_dict() if lpips_metric else None,
        notes=notes,
    )


def saved_image_path(folder: str | Path, dataset: str, scale: int, image: str) -> Path:
    """Where `save_images` puts an SR image: `<folder>/<dataset>/x<s>/<image>.png`, the dataset's name made one plain
    folder name (a dataset given by path never leads the output outside `folder`)."""
    from kd.fileio import path_component

    return Path(folder) / (path_component(dataset) or "dataset") / f"x{scale}" / f"{image}.png"


def planned_images(folder: str | Path, datasets: Sequence[str], scales: Sequence[int], data_root=None,
                   degradation: str = "bicubic") -> tuple[list[Path], list[Path]]:
    """(the SR images `evaluate(..., save_images=folder)` would write, the HR images it reads)."""
    from kd.data.degradations import BICUBIC, protocol
    from kd.data.files import dataset_files
    from kd.data.registry import resolve_dataset

    targets, inputs = [], []
    for dataset in datasets:
        name = resolve_dataset(dataset, data_root).name
        hr = [path for files in dataset_files(name, data_root, purpose="eval") for path in files.hr]
        inputs += hr
        for scale in scales:
            suffixes = [""] if degradation == BICUBIC else [f"_{k.label}" for k in protocol(degradation).kernels(scale)]
            targets += [saved_image_path(folder, name, scale, path.stem + suffix) for path in hr for suffix in suffixes]
    return targets, inputs


def _test_sets(dataset: str, scale: int, data_root, lr_source: str, degradation: str) -> list[tuple[str | None, list]]:
    """(kernel label, HR/LR pairs) per test kernel of the blind-SR `degradation`; one (None, pairs) for bicubic."""
    from kd.data.benchmark import load_eval_images
    from kd.data.degradations import BICUBIC, load_degraded_sets

    if degradation == BICUBIC:
        return [(None, load_eval_images(dataset, scale, data_root=data_root, lr_source=lr_source))]
    if lr_source == "shipped":
        raise KdError(f"--lr-source shipped reads bicubic LR files; the {degradation} track degrades the HR itself")
    return [(kernel.label, images) for kernel, images in load_degraded_sets(dataset, scale, degradation, data_root)]


def _forward(model: nn.Module, lr: torch.Tensor, hr: torch.Tensor | None, scale: int, tile: int | None, tile_overlap: int,
             image, where: str) -> torch.Tensor:
    """The network on one image; a failure names the image (too small for the network, out of memory, ...)."""
    try:
        return forward_tiled(model, lr, scale, tile, tile_overlap, hr)
    except (RuntimeError, ValueError, KdError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        at = f"{image.path or image.name} ({where}, LR {lr.shape[-1]}x{lr.shape[-2]})"
        if "out of memory" in first.lower():
            message = f"out of memory on {at}: evaluate in tiles, e.g. --tile 128"
        else:
            message = (f"the network failed on {at}: {first}. If the image is too small for the network, remove it "
                       "from the dataset or use larger images.")
        raise KdError(message) from None


def per_image_path(out: Path) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}_per_image{out.suffix or '.csv'}")


def result_files(out: Path, *, per_image: bool = False) -> list[Path]:
    """The files `save_result` writes: the CSV, its per-image twin (with `per_image`) and `<out>.meta.json`."""
    out = Path(out)
    return [out, *([per_image_path(out)] if per_image else []), out.with_name(out.name + ".meta.json")]


def save_result(result: EvalResult, out: Path, *, per_image: bool = False, extra_meta: dict | None = None) -> list[Path]:
    """Write the per-dataset CSV (and optionally the per-image CSV) plus `<out>.meta.json` holding the metric
    spec and LPIPS variant; every file is written to a temporary name first and renamed."""
    written = result_files(out, per_image=per_image)
    atomic_write_text(written[0], result.per_dataset.to_csv(index=False))
    if per_image:
        atomic_write_text(written[1], result.per_image.to_csv(index=False))
    meta = {"metric_spec": result.metric_spec, "lpips": result.lpips_variant, "notes": result.notes,
            "psnr_ssim": "Y (BT.601), crop = scale; LPIPS on RGB of the same quantised, cropped images",
            **(extra_meta or {})}
    atomic_write_text(written[-1], json.dumps(meta, indent=2, default=str) + "\n")
    return written
