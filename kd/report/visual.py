"""Visual comparison crops: HR, bicubic, no-KD student, each KD method, teacher, on a few evaluation images.

The report runs no network: HR and bicubic come from the evaluation images (kd.data), and every network's crop
from the run's record (`visual_crops/`). `kd.crops.record_crops` puts them there from the weights it finds (each
student's `student.pt`, the teacher's zoo entry or checkpoint); `kdbench report` and `kd.build_report` call it
before the figure is drawn, so a run reported once where it was trained keeps its crops in its record after its
weights are gone. The crop coordinates and the metric convention are written to `visual_spec.json` beside the
figures.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from kd.report import CROPS
from kd.report.plots import plt, save
from kd.report.runs import Run
from kd.report.tables import BASELINE

MARGIN_LR = 8  # LR pixels of context around the crop; more than the receptive-field growth that matters here
TEACHER_PREFIX = "teacher_"  # a KD run's record keeps its teacher's crops under this prefix


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


def sr_crop(model: Any, lr: torch.Tensor, scale: int, crop: Crop, hr: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (3, size, size) of model(lr) at `crop`, computed on an LR window with a margin; `model` is any callable
    from a (1, 3, h, w) batch in [0, 1] to its upscaled batch (a network that needs the HR gets `hr`'s window)."""
    from kd.metrics import quantize
    from kd.models import sr_inputs

    lr_top, lr_left, lr_size = crop.top // scale, crop.left // scale, crop.size // scale
    top0, left0 = max(0, lr_top - MARGIN_LR), max(0, lr_left - MARGIN_LR)
    bottom, right = min(lr.shape[-2], lr_top + lr_size + MARGIN_LR), min(lr.shape[-1], lr_left + lr_size + MARGIN_LR)
    window = lr[:, top0:bottom, left0:right].float().div(255.0).unsqueeze(0)
    hr_window = None if hr is None else (
        hr[:, top0 * scale : bottom * scale, left0 * scale : right * scale].float().div(255.0).unsqueeze(0))
    if isinstance(model, torch.nn.Module):
        model.eval()
    with torch.inference_mode():
        sr = model(*sr_inputs(model, window, hr_window))[0]
    y, x = (lr_top - top0) * scale, (lr_left - left0) * scale
    return quantize(sr[:, y : y + crop.size, x : x + crop.size]).cpu()


def _test_pairs(dataset: str, scale: int, data_root: Any, degradation: str) -> list[Any]:
    """The evaluation pairs the figure shows: on a blind-SR track, those of its middle test kernel (Gaussian8 at x4:
    sigma 2.6, the official default `sig`)."""
    from kd.data.benchmark import load_eval_images
    from kd.data.degradations import BICUBIC, load_degraded_sets

    if degradation == BICUBIC:
        return load_eval_images(dataset, scale, data_root=data_root)
    sets = load_degraded_sets(dataset, scale, degradation, data_root)
    return sets[len(sets) // 2][1]


def _data_root(run: Run) -> Any:
    try:
        config = yaml.safe_load((run.run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
        return (config.get("data") or {}).get("root")
    except (OSError, ValueError, AttributeError, yaml.YAMLError):  # ValueError: not UTF-8
        return None


def has_weights(run: Run) -> bool:
    return (run.run_dir / "student.pt").is_file()


@dataclass(frozen=True)
class View:
    """One evaluation image and the crop shown of it."""
    pair: Any  # kd.data.benchmark.EvalImage
    crop: Crop
    crop_file: str  # name of this view's crop in a record's visual_crops/


@dataclass
class VisualPlan:
    """What the figure shows: one configuration's runs on the first images of its first dataset."""

    dataset: str
    scale: int
    views: list[View]
    seed: int | None  # the seed the panels come from wherever they can
    shown: dict[str, Run]  # panel label -> run, in panel order
    group: list[Run]  # every run of the configuration (those with weights leave their crops in their records)
    teacher: str | None
    teacher_runs: list[Run] = field(default_factory=list)  # the shown KD runs, whose records keep the teacher's crops


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
    """The seed most of the group's runs can be shown for (weights, or crops in their records), lowest first on a
    tie, so that the panels of one figure come from one seed wherever they can."""
    seeds = [r.seed for r in runs if has_weights(r) or _has_crops(r, views)]
    return min(set(seeds), key=lambda seed: (-seeds.count(seed), seed)) if seeds else None


def _pick(runs: list[Run], views: list[View], seed: int | None = None) -> Run:
    """The figure's seed when it can be shown, else the lowest seed that can, else the lowest seed."""
    return min(runs, key=lambda r: (not (has_weights(r) or _has_crops(r, views)), r.seed != seed, r.seed))


def plan_visual(runs: list[Run], *, images: int = 2, crop_size: int = 64) -> tuple[VisualPlan | None, list[str]]:
    """The figure's plan for the configuration of the first no-KD run that can be shown; (None, notes) when its
    evaluation images cannot be read here."""
    baseline = [r for r in runs if r.method == BASELINE]
    anchor = min(baseline or runs, key=lambda r: (not has_weights(r), r.seed))
    group = [r for r in runs if r.configuration == anchor.configuration]
    teacher = next((r.teacher for r in sorted(group, key=lambda r: r.run_id) if r.teacher and r.method != BASELINE),
                   None)
    dataset, scale = next(iter(anchor.summary["datasets"])), anchor.scale
    try:
        pairs = _test_pairs(dataset, scale, _data_root(anchor), anchor.summary.get("degradation") or "bicubic")
        pairs = pairs[:images]
    except Exception as exc:  # missing data must not break the report
        return None, [f"visual comparison left out: the images of {dataset} x{scale} could not be read here ({exc})"]
    views = _views(pairs, dataset, scale, crop_size)
    seed = _shown_seed([r for r in group if r.method == BASELINE or r.teacher == teacher], views)

    def label(name: str, run: Run) -> str:
        return name if run.seed == seed else f"{name} (seed {run.seed})"

    shown: dict[str, Run] = {}
    if baseline:
        run = _pick([r for r in group if r.method == BASELINE], views, seed)
        shown[label("no-KD", run)] = run
    for method in sorted({r.method for r in group if r.method != BASELINE and r.teacher == teacher}):
        run = _pick([r for r in group if r.method == method and r.teacher == teacher], views, seed)
        shown[label(method, run)] = run
    teacher_runs = [run for run in shown.values() if run.method != BASELINE]
    return VisualPlan(dataset, scale, views, seed, shown, group, teacher, teacher_runs), []


def _read_crops(folder: Path, files: list[str]) -> list[torch.Tensor] | None:
    from kd.data.io import read_image

    if not all((folder / name).is_file() for name in files):
        return None
    return [read_image(folder / name) for name in files]


def visual_comparison(plan: VisualPlan, records_dir: Path, out_dir: Path) -> tuple[list[str], list[str]]:
    """The figures of `plan` from the crops in the report's records. Returns (figure stems, notes)."""
    from kd.data.imresize import imresize
    from kd.metrics import psnr_y, ssim_y

    notes: list[str] = []
    scale, views = plan.scale, plan.views
    files = [view.crop_file for view in views]
    columns: list[tuple[str, list[torch.Tensor], str]] = [
        ("bicubic", [sr_crop(lambda x: imresize(x, float(scale)), v.pair.lr, scale, v.crop) for v in views],
         "bicubic (MATLAB-style imresize)")]
    for name, run in plan.shown.items():
        crops = _read_crops(run.record_dir(records_dir) / CROPS, files)
        if crops is None:
            notes.append(f"visual comparison: {name} is not shown: no crops were recorded for its run "
                         f"{run.run_id}, whose weights were not at hand when it was reported")
            continue
        columns.append((name, crops, f"records/{run.run_id}/{CROPS}"))
    if plan.teacher:
        teacher_files = [TEACHER_PREFIX + name for name in files]
        found = next(((run, crops) for run in plan.teacher_runs
                      if (crops := _read_crops(run.record_dir(records_dir) / CROPS, teacher_files)) is not None), None)
        if found is None:
            notes.append(f"visual comparison: the teacher {plan.teacher} is not shown: its crops were not recorded "
                         "and its weights were not at hand (kdbench teacher import restores a zoo teacher)")
        else:
            columns.append((f"teacher {plan.teacher}", found[1], f"records/{found[0].run_id}/{CROPS}"))

    stems, spec = [], {"dataset": plan.dataset, "scale": scale, "seed": plan.seed,
                       "metric": "PSNR/SSIM on Y of the crop (no border crop)", "margin_lr_pixels": MARGIN_LR,
                       "figures": []}
    for index, view in enumerate(views):
        pair, crop = view.pair, view.crop
        hr_crop = pair.hr[:, crop.top : crop.top + crop.size, crop.left : crop.left + crop.size]
        panels = [Panel("HR", hr_crop, source="ground truth")]
        for name, crops, source in columns:
            out = crops[index]
            panels.append(Panel(name, out, float(psnr_y(out, hr_crop, 0)), float(ssim_y(out, hr_crop, 0)), source))
        stem = re.sub(r"[^\w.-]+", "_", f"visual_{plan.dataset}_{pair.name}_x{scale}")  # a folder path names a dataset
        title = f"{plan.dataset}/{pair.name} x{scale}" + ("" if plan.seed is None else f", seed {plan.seed}")
        _figure(pair.hr, crop, panels, title, out_dir, stem)
        stems.append(stem)
        spec["figures"].append({"figure": stem, "image": pair.name, "lr_source": pair.lr_source,
                                "crop_hr": asdict(crop), "panels": [{"label": p.label, "crops": p.source,
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
