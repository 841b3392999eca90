"""Report figures (matplotlib, Agg): each saved as PNG and SVG; functions return the figure's file stem or None."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from kd.report.runs import Run  # noqa: E402
from kd.report.tables import BASELINE, TEACHER_ROW  # noqa: E402

plt.rcParams.update({"svg.hashsalt": "kdbench", "font.size": 9})  # reproducible SVG ids


def save(fig, out_dir: Path, stem: str) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / f"{stem}.png", dpi=110, bbox_inches="tight")
    fig.savefig(out_dir / f"{stem}.svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return stem


def place_labels(ax, points: list[tuple[float, float]], labels: list[str], fontsize: float = 7) -> list:
    """Label each point, shifting a label upwards (with a leader line) until its box overlaps no other label.
    Called once the axes' scales are final: the limits are frozen so the boxes keep their relative places."""
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())
    renderer = ax.figure.canvas.get_renderer()
    placed, texts = [], []
    for (x, y), label in sorted(zip(points, labels), key=lambda item: (item[0][1], item[0][0])):
        lift = 2.0
        while True:
            text = ax.annotate(label, (x, y), xytext=(4, lift), textcoords="offset points", fontsize=fontsize,
                               arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.5} if lift > 2 else None)
            box = text.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed) or lift > 400:
                break
            text.remove()
            lift += fontsize * 0.6
        placed.append(box)
        texts.append(text)
    return texts


def delta_bars(table: pd.DataFrame, out_dir: Path) -> str | None:
    """Paired delta PSNR vs the no-KD student per method, one bar per teacher, 95% interval as error bar."""
    kd = table[~table["method"].isin([BASELINE, TEACHER_ROW]) & table["delta"].notna()]
    if kd.empty:
        return None
    panels = list(kd.groupby(["student", "scale", "dataset"], sort=False))
    # One y-scale for every panel: bar heights compare across datasets at a glance.
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False, layout="constrained",
                             sharey=True)
    for ax, ((student, scale, dataset), part) in zip(axes[0], panels):
        methods = list(dict.fromkeys(part["method"]))
        teachers = list(dict.fromkeys(part["teacher"]))
        width = 0.8 / len(teachers)
        for t_index, teacher in enumerate(teachers):
            rows = part[part["teacher"] == teacher].set_index("method")
            xs, ys, errs = [], [], [[], []]
            for m_index, method in enumerate(methods):
                if method not in rows.index:
                    continue
                row = rows.loc[method]
                xs.append(m_index + (t_index - (len(teachers) - 1) / 2) * width)
                ys.append(row["delta"])
                has = math.isfinite(row["delta_low"])
                errs[0].append(row["delta"] - row["delta_low"] if has else 0.0)
                errs[1].append(row["delta_high"] - row["delta"] if has else 0.0)
            with_interval = any(e > 0 for e in errs[0] + errs[1])  # one seed: no interval, no whisker
            ax.bar(xs, ys, width, yerr=errs if with_interval else None, capsize=3, label=teacher)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(methods)), methods, rotation=35, ha="right")
        ax.set_title(f"{dataset} x{scale}")
    axes[0][0].set_ylabel("Δ PSNR-Y vs no-KD (dB)")
    axes[0][-1].legend(title="teacher", fontsize=8)
    fig.suptitle("Paired Δ PSNR over seeds (bars: mean; whiskers: 95% t-interval where there are >= 2 seeds)")
    return save(fig, out_dir, "delta_bars")


def training_curves(runs: list[Run], out_dir: Path) -> str | None:
    """Total training loss per step (every run) and validation PSNR where logged, coloured by method."""
    logs = [(run, run.metrics_log()) for run in runs]
    logs = [(run, log) for run, log in logs if any("loss" in r for r in log)]
    if not logs:
        return None
    has_val = any("val_psnr_y" in r for _, log in logs for r in log)
    fig, axes = plt.subplots(1, 2 if has_val else 1, figsize=(10 if has_val else 5.5, 3.2), squeeze=False)
    colours: dict[str, str] = {}
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labelled = set()
    for run, log in logs:
        label = f"{run.method}" + (f" ({run.teacher})" if run.teacher and run.method != BASELINE else "")
        colour = colours.setdefault(label, cycle[len(colours) % len(cycle)])
        shown = None if label in labelled else label
        labelled.add(label)
        steps = [r["step"] for r in log if "loss" in r]
        axes[0][0].plot(steps, [r["loss"] for r in log if "loss" in r], color=colour, alpha=0.8, label=shown,
                        linestyle=["-", "--", ":", "-."][run.seed % 4])
        if has_val:
            val = [(r["step"], r["val_psnr_y"]) for r in log if r.get("val_psnr_y") is not None]
            if val:
                axes[0][1].plot(*zip(*val), marker="o", color=colour, alpha=0.8,
                                linestyle=["-", "--", ":", "-."][run.seed % 4])
    axes[0][0].set(xlabel="step", ylabel="training loss (all terms)", yscale="log", title="training loss")
    axes[0][0].legend(fontsize=7, title="method (line style: seed)", title_fontsize=7)
    if has_val:
        axes[0][1].set(xlabel="step", ylabel="PSNR-Y (dB)", title="validation PSNR")
    return save(fig, out_dir, "training_curves")


def cost_scatter(table: pd.DataFrame, peers: pd.DataFrame, out_dir: Path) -> tuple[str | None, list[str]]:
    """PSNR vs parameters and vs MACs (1280x720 output), ours (mean over seeds) beside the published lightweight
    peers for the same dataset and scale. Returns the stem and notes on what could not be placed."""
    ours = table[~table["method"].isin([TEACHER_ROW]) & table["params"].notna()]
    if ours.empty:
        return None, []
    notes = []
    panels = list(ours.groupby(["scale", "dataset"], sort=False))
    fig, axes = plt.subplots(len(panels), 2, figsize=(9, 3.0 * len(panels)), squeeze=False)
    for row, ((scale, dataset), part) in enumerate(panels):
        peer = peers[(peers["dataset_key"] == dataset) & (peers["scale"] == scale)]
        if peer.empty:
            notes.append(f"{dataset} x{scale}: no published lightweight peers for this dataset")
        for col, (key, label) in enumerate((("params", "parameters"), ("macs", "MACs, 1280x720 output"))):
            ax = axes[row][col]
            for method, rows in part.groupby("method", sort=False):
                ax.scatter(rows[key].astype(float), rows["psnr_mean"], label=f"{method} (ours)", marker="o")
            if key == "params" and not peer.empty:
                ax.scatter(peer["params"], peer["psnr"], marker="s", color="grey", label="published peers")
            ax.set(xscale="log", xlabel=label, ylabel="PSNR-Y (dB)", title=f"{dataset} x{scale}")
            ax.legend(fontsize=7)
            if key == "params" and not peer.empty:
                place_labels(ax, list(zip(peer["params"], peer["psnr"])), list(peer["model"]))
    if len(notes) < len(panels):
        notes.append("published peers have no MAC counts in published_results.csv: the MACs panel shows ours only")
    return save(fig, out_dir, "psnr_vs_cost"), notes
