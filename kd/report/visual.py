"""Visual comparison crops: HR, bicubic, no-KD student, each KD method, teacher, on a few evaluation images.

Each network runs on an LR window around the crop (with a margin, so the crop is unaffected by the window's edges)
rather than on the whole image. The crop coordinates, the weights used and the metric convention are written to
`visual_spec.json` beside the figures so the figure can be rebuilt.

A report's records keep no weights, so each student crop computed from weights is also kept in the run's record
(`visual_crops/`): a report rebuilt on another machine, after the weights are gone, still shows every run that was
once reported where it was trained.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from kd.report import CROPS
from kd.report.plots import plt, save
from kd.report.runs import Run
from kd.report.tables import BASELINE

MARGIN_LR = 8  # LR pixels of context around the crop; more than the receptive-field growth that matters here


@dataclass(frozen=True)
class Crop:
    top: int  # HR pixels
    left: int
    size: int


@dataclass
class Panel:
    label: str
    image: torch.Tensor  # uint8 (3, size, size)
    psnr: float | None = None
    ssim: float | None = None
    source: str = ""


def choose_crop(hr: torch.Tensor, scale: int, size: int) -> Crop:
    """The size x size window (aligned to the scale grid) with the most luminance gradient energy: texture shows
    differences between methods best."""
    size = max(scale, min(size, hr.shape[-2], hr.shape[-1]) // scale * scale)
    grey = hr.float().mean(dim=0)
    energy = (grey[1:, :-1] - grey[:-1, :-1]).abs() + (grey[:-1, 1:] - grey[:-1, :-1]).abs()
    stride = max(scale, size // 4 // scale * scale)
    best, best_at = -1.0, (0, 0)
    for top in range(0, hr.shape[-2] - size + 1, stride):
        for left in range(0, hr.shape[-1] - size + 1, stride):
            value = float(energy[top : top + size - 1, left : left + size - 1].sum())
            if value > best:
                best, best_at = value, (top, left)
    return Crop(best_at[0], best_at[1], size)


def sr_crop(model: torch.nn.Module, lr: torch.Tensor, scale: int, crop: Crop) -> torch.Tensor:
    """uint8 (3, size, size) of model(lr) at `crop`, computed on an LR window with a margin."""
    from kd.metrics import quantize

    lr_top, lr_left, lr_size = crop.top // scale, crop.left // scale, crop.size // scale
    top0, left0 = max(0, lr_top - MARGIN_LR), max(0, lr_left - MARGIN_LR)
    bottom, right = min(lr.shape[-2], lr_top + lr_size + MARGIN_LR), min(lr.shape[-1], lr_left + lr_size + MARGIN_LR)
    window = lr[:, top0:bottom, left0:right].float().div(255.0).unsqueeze(0)
    model.eval()
    with torch.inference_mode():
        sr = model(window)[0]
    y, x = (lr_top - top0) * scale, (lr_left - left0) * scale
    return quantize(sr[:, y : y + crop.size, x : x + crop.size]).cpu()


def _build(arch: str, scale: int, preset: str | None, weights: Path | None) -> torch.nn.Module:
    from kd.models import create, load_official

    model = create(arch, scale, preset)
    if weights is not None:
        load_official(model, weights)
    return model


def teacher_weights(run: Run) -> Path | None:
    info = run.teacher_info
    if info.get("source") == "checkpoint" and info.get("path"):
        return Path(info["path"])
    if info.get("source") == "zoo" and info.get("key"):
        from kd.engine.teachers import zoo_root

        return zoo_root() / info["key"] / "teacher.pt"
    return None


def _data_root(run: Run) -> Any:
    try:
        config = yaml.safe_load((run.run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
        return (config.get("data") or {}).get("root")
    except (OSError, ValueError, AttributeError, yaml.YAMLError):  # ValueError: not UTF-8
        return None


def _has_weights(run: Run) -> bool:
    return (run.run_dir / "student.pt").is_file()


@dataclass(frozen=True)
class View:
    """One evaluation image and the crop shown of it."""
    pair: Any  # kd.data.benchmark.EvalPair
    crop: Crop
    crop_file: str  # name of this view's crop in a record's visual_crops/


def _views(pairs: list[Any], dataset: str, scale: int, crop_size: int) -> list[View]:
    views = []
    for pair in pairs:
        crop = choose_crop(pair.hr, scale, crop_size)
        name = f"{dataset}_{pair.name}_x{scale}_{crop.top}_{crop.left}_{crop.size}_m{MARGIN_LR}"
        views.append(View(pair, crop, re.sub(r"[^\w.-]+", "_", name) + ".png"))
    return views


def _has_crops(run: Run, views: list[View]) -> bool:
    return all((run.run_dir / CROPS / view.crop_file).is_file() for view in views)


def _shown_seed(runs: list[Run], views: list[View]) -> int | None:
    """The seed most of the group's runs can still be shown for (weights, or crops recorded by an earlier report),
    lowest first on a tie, so that the panels of one figure come from one seed wherever they can."""
    seeds = [r.seed for r in runs if _has_weights(r) or _has_crops(r, views)]
    return min(set(seeds), key=lambda seed: (-seeds.count(seed), seed)) if seeds else None


def _pick(runs: list[Run], views: list[View], seed: int | None = None) -> Run:
    """The figure's seed when it can be shown, else the lowest seed that can, else the lowest seed."""
    return min(runs, key=lambda r: (not (_has_weights(r) or _has_crops(r, views)), r.seed != seed, r.seed))


def _student_crops(run: Run, views: list[View], scale: int, records_dir: Path | None) -> tuple[list[torch.Tensor], str]:
    """The run's SR crops and where they came from: computed from its weights (and then kept in its record under
    `records_dir`), else read from the crops an earlier report recorded. Raises FileNotFoundError with neither."""
    from kd.data.io import read_image, write_png

    weights = run.run_dir / "student.pt"
    if weights.is_file():
        model = _build(run.summary["student"], scale, run.summary.get("student_preset"), weights)
        crops = [sr_crop(model, view.pair.lr, scale, view.crop) for view in views]
        if records_dir is not None:
            for view, image in zip(views, crops):
                write_png(records_dir / run.run_id / CROPS / view.crop_file, image)
        return crops, str(weights)
    if _has_crops(run, views):
        return [read_image(run.run_dir / CROPS / view.crop_file) for view in views], str(run.run_dir / CROPS)
    raise FileNotFoundError(f"weights not found and no crops recorded: {weights}")


def visual_comparison(runs: list[Run], out_dir: Path, *, images: int = 2, crop_size: int = 64,
                      records_dir: Path | None = None) -> tuple[list[str], list[str]]:
    """Figures for the first comparable group of runs. Returns (figure stems, notes); failures become notes.
    `records_dir`: the report's records folder, where the crops of every run of the group that has weights are kept.
    """
    from kd.data.benchmark import load_eval_images
    from kd.metrics import psnr_y, ssim_y

    notes: list[str] = []
    baseline = [r for r in runs if r.method == BASELINE]
    anchor = min(baseline or runs, key=lambda r: (not _has_weights(r), r.seed))
    group = [r for r in runs if r.group == anchor.group]
    teacher = next((r.teacher for r in sorted(group, key=lambda r: r.run_id) if r.teacher and r.method != BASELINE),
                   None)
    dataset = next(iter(anchor.summary["datasets"]))
    scale = anchor.scale
    try:
        pairs = load_eval_images(dataset, scale, data_root=_data_root(anchor))[:images]
    except Exception as exc:  # missing data must not break the report
        return [], [f"visual comparison skipped: {dataset} x{scale} could not be loaded ({exc})"]
    views = _views(pairs, dataset, scale, crop_size)
    seed = _shown_seed([r for r in group if r.method == BASELINE or r.teacher == teacher], views)

    def label(name: str, run: Run) -> str:
        return name if run.seed == seed else f"{name} (seed {run.seed})"

    shown: dict[str, Run] = {}  # panel label -> run, in panel order
    if baseline:
        run = _pick([r for r in group if r.method == BASELINE], views, seed)
        shown[label("no-KD", run)] = run
    for method in sorted({r.method for r in group if r.method != BASELINE and r.teacher == teacher}):
        run = _pick([r for r in group if r.method == method and r.teacher == teacher], views, seed)
        shown[label(method, run)] = run

    bicubic = _build("bicubic", scale, None, None)
    columns: list[tuple[str, list[torch.Tensor], str]] = [
        ("bicubic", [sr_crop(bicubic, view.pair.lr, scale, view.crop) for view in views], "bicubic")]
    for run in sorted(group, key=lambda r: r.run_id):  # every run with weights leaves its crops in its record
        name = next((key for key, value in shown.items() if value is run), None)
        if name is None and not (records_dir is not None and _has_weights(run)):
            continue
        try:
            crops, source = _student_crops(run, views, scale, records_dir)
        except Exception as exc:
            notes.append(f"visual comparison: {name or run.run_id} left out ({exc})")
            continue
        if name is not None:
            columns.append((name, crops, source))
    order = list(shown)
    columns[1:] = sorted(columns[1:], key=lambda column: order.index(column[0]))
    teacher_run = next((r for r in group if r.teacher == teacher and r.method != BASELINE), None)
    if teacher_run is not None:
        name, weights = f"teacher {teacher}", teacher_weights(teacher_run)
        try:
            if weights is None or not weights.is_file():
                raise FileNotFoundError(f"weights not found: {weights}")
            model = _build(teacher_run.teacher_info["arch"], scale, teacher_run.teacher_info.get("preset"), weights)
            columns.append((name, [sr_crop(model, v.pair.lr, scale, v.crop) for v in views], str(weights)))
        except Exception as exc:
            notes.append(f"visual comparison: {name} left out ({exc})")

    stems, spec = [], {"dataset": dataset, "scale": scale, "seed": seed, "metric": "PSNR/SSIM on Y of the crop (no border crop)",
                       "margin_lr_pixels": MARGIN_LR, "figures": []}
    for index, view in enumerate(views):
        pair, crop = view.pair, view.crop
        hr_crop = pair.hr[:, crop.top : crop.top + crop.size, crop.left : crop.left + crop.size]
        panels = [Panel("HR", hr_crop, source="ground truth")]
        for name, crops, source in columns:
            out = crops[index]
            panels.append(Panel(name, out, float(psnr_y(out, hr_crop, 0)), float(ssim_y(out, hr_crop, 0)), source))
        stem = re.sub(r"[^\w.-]+", "_", f"visual_{dataset}_{pair.name}_x{scale}")  # a folder path names a dataset too
        _figure(pair.hr, crop, panels, f"{dataset}/{pair.name} x{scale}" + ("" if seed is None else f", seed {seed}"), out_dir, stem)
        stems.append(stem)
        spec["figures"].append({"figure": stem, "image": pair.name, "lr_source": pair.lr_source,
                                "crop_hr": asdict(crop), "panels": [{"label": p.label, "weights": p.source,
                                                                    "psnr_y": p.psnr, "ssim_y": p.ssim}
                                                                   for p in panels]})
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "visual_spec.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    return stems, notes


def _figure(hr: torch.Tensor, crop: Crop, panels: list[Panel], title: str, out_dir: Path, stem: str) -> str:
    from matplotlib.patches import Rectangle

    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(2.2 * (len(panels) + 1) + 1.4, 3.0),
                             gridspec_kw={"width_ratios": [1.6] + [1] * len(panels)})
    axes[0].imshow(hr.permute(1, 2, 0).numpy())
    axes[0].add_patch(Rectangle((crop.left, crop.top), crop.size, crop.size, fill=False, edgecolor="red", lw=1.5))
    axes[0].set_title(title, fontsize=11)
    for ax, panel in zip(axes[1:], panels):
        ax.imshow(panel.image.permute(1, 2, 0).numpy(), interpolation="nearest")
        caption = panel.label if panel.psnr is None else f"{panel.label}\n{panel.psnr:.2f}/{panel.ssim:.4f}"
        ax.set_title(caption, fontsize=11)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.text(0.5, 0.0, f"crop top={crop.top} left={crop.left} size={crop.size} (HR pixels)", ha="center",
             fontsize=10)
    return save(fig, out_dir, stem)
