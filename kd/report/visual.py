"""Visual comparison crops: HR, bicubic, no-KD student, each KD method, teacher, on a few evaluation images.

Each network runs on an LR window around the crop (with a margin, so the crop is unaffected by the window's edges)
rather than on the whole image. The crop coordinates, the weights used and the metric convention are written to
`visual_spec.json` beside the figures so the figure can be rebuilt.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

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
    except (OSError, yaml.YAMLError):
        return None


def _has_weights(run: Run) -> bool:
    return (run.run_dir / "student.pt").is_file()


def _shown_seed(runs: list[Run]) -> int | None:
    """The seed most of the group's runs still have weights for (a committed report's records keep none), lowest first
    on a tie, so that the panels of one figure come from one seed wherever they can."""
    seeds = [r.seed for r in runs if _has_weights(r)]
    return min(set(seeds), key=lambda seed: (-seeds.count(seed), seed)) if seeds else None


def _pick(runs: list[Run], seed: int | None = None) -> Run:
    """The figure's seed when its weights are here, else the lowest seed that has weights, else the lowest seed."""
    return min(runs, key=lambda r: (not _has_weights(r), r.seed != seed, r.seed))


def visual_comparison(runs: list[Run], out_dir: Path, *, images: int = 2, crop_size: int = 64) -> tuple[list[str], list[str]]:
    """Figures for the first comparable group of runs. Returns (figure stems, notes); failures become notes."""
    from kd.data.benchmark import load_eval_images
    from kd.metrics import psnr_y, ssim_y

    notes: list[str] = []
    baseline = [r for r in runs if r.method == BASELINE]
    anchor = _pick(baseline or runs)
    group = [r for r in runs if r.group == anchor.group]
    seed = _shown_seed(group)
    teacher = next((r.teacher for r in sorted(group, key=lambda r: r.run_id) if r.teacher and r.method != BASELINE),
                   None)
    dataset = next(iter(anchor.summary["datasets"]))
    scale = anchor.scale
    try:
        pairs = load_eval_images(dataset, scale, data_root=_data_root(anchor))[:images]
    except Exception as exc:  # missing data must not break the report
        return [], [f"visual comparison skipped: {dataset} x{scale} could not be loaded ({exc})"]

    def label(name: str, run: Run) -> str:
        return name if run.seed == seed else f"{name} (seed {run.seed})"

    entries: list[tuple[str, Path | None, dict[str, Any]]] = []
    if baseline:
        run = _pick([r for r in group if r.method == BASELINE], seed)
        entries.append((label("no-KD", run), run.run_dir / "student.pt", {"run": run, "kind": "student"}))
    for method in sorted({r.method for r in group if r.method != BASELINE and r.teacher == teacher}):
        run = _pick([r for r in group if r.method == method and r.teacher == teacher], seed)
        entries.append((label(method, run), run.run_dir / "student.pt", {"run": run, "kind": "student"}))
    teacher_run = next((r for r in group if r.teacher == teacher and r.method != BASELINE), None)
    if teacher_run is not None:
        entries.append((f"teacher {teacher}", teacher_weights(teacher_run), {"run": teacher_run, "kind": "teacher"}))

    models: list[tuple[str, torch.nn.Module, str]] = [("bicubic", _build("bicubic", scale, None, None), "bicubic")]
    for label, weights, info in entries:
        run, kind = info["run"], info["kind"]
        if weights is None or not weights.is_file():
            notes.append(f"visual comparison: {label} left out (weights not found: {weights})")
            continue
        try:
            if kind == "student":
                model = _build(run.summary["student"], scale, run.summary.get("student_preset"), weights)
            else:
                model = _build(run.teacher_info["arch"], scale, run.teacher_info.get("preset"), weights)
        except Exception as exc:
            notes.append(f"visual comparison: {label} left out ({exc})")
            continue
        models.append((label, model, str(weights)))

    stems, spec = [], {"dataset": dataset, "scale": scale, "seed": seed, "metric": "PSNR/SSIM on Y of the crop (no border crop)",
                       "margin_lr_pixels": MARGIN_LR, "figures": []}
    for pair in pairs:
        crop = choose_crop(pair.hr, scale, crop_size)
        hr_crop = pair.hr[:, crop.top : crop.top + crop.size, crop.left : crop.left + crop.size]
        panels = [Panel("HR", hr_crop, source="ground truth")]
        for label, model, source in models:
            try:
                out = sr_crop(model, pair.lr, scale, crop)
            except Exception as exc:
                notes.append(f"visual comparison: {label} failed on {pair.name} ({exc})")
                continue
            panels.append(Panel(label, out, float(psnr_y(out, hr_crop, 0)), float(ssim_y(out, hr_crop, 0)), source))
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
