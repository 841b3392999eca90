"""Report figures (matplotlib, Agg): each saved as PNG and SVG; functions return the figure's file stem or None."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from kd.report.runs import Run  # noqa: E402
from kd.report.tables import BASELINE, TEACHER_ROW  # noqa: E402

plt.rcParams.update({"svg.hashsalt": "kdbench", "font.size": 9})  # reproducible SVG ids


def save(fig, out_dir: Path, stem: str) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / f"{stem}.png", dpi=110, bbox_inches="tight")
    fig.savefig(out_dir / f"{stem}.svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return stem


# Where a label may sit around its point (points: dx, dy, horizontal alignment), nearest first; then the same
# directions twice and three times as far. A label never strays further from its point than that.
_OFFSETS = [(5, 0, "left"), (-5, 0, "right"), (5, 7, "left"), (5, -7, "left"), (-5, 7, "right"),
            (-5, -7, "right"), (0, 9, "center"), (0, -13, "center")]
_RINGS = (1, 2, 3)


def place_labels(ax, points: list[tuple[float, float]], labels: list[str], fontsize: float = 7) -> list[str]:
    """Label each point beside it: the first place around the point (`_OFFSETS`, up to three rings out) where the
    label overlaps no other label or point and stays inside the axes. A point with no such place gets a number
    instead, and its label is returned as "n: label" for a caption. Called once the axes' scales are final."""
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    marks = [ax.transData.transform(point) for point in points]
    placed: list = []
    numbered: list[str] = []
    for (x, y), label in sorted(zip(points, labels), key=lambda item: (item[0][1], item[0][0])):
        for ring in _RINGS:
            for dx, dy, align in _OFFSETS:
                text = ax.annotate(label, (x, y), xytext=(dx * ring, dy * ring), textcoords="offset points",
                                   fontsize=fontsize, ha=align, va="center", annotation_clip=True)
                box = text.get_window_extent(renderer).expanded(1.05, 1.1)
                inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
                if inside and not any(box.overlaps(other) for other in placed) and not any(
                        box.contains(*mark) for mark in marks):
                    placed.append(box)
                    break
                text.remove()
            else:
                continue
            break
        else:
            numbered.append(label)
            text = ax.annotate(str(len(numbered)), (x, y), xytext=(4, 4), textcoords="offset points",
                               fontsize=fontsize, annotation_clip=True)
            placed.append(text.get_window_extent(renderer))
    return [f"{n}: {label}" for n, label in enumerate(numbered, 1)]


def delta_bars(table: pd.DataFrame, out_dir: Path) -> str | None:
    """Paired delta PSNR vs the no-KD student per method, one bar per teacher, the table's interval (Holm's level)
    as error bar; one panel per configuration and dataset."""
    kd = table[~table["method"].isin([BASELINE, TEACHER_ROW]) & table["delta"].notna()]
    if kd.empty:
        return None
    panels = list(kd.groupby(["configuration", "scale", "dataset"], sort=False))
    several = kd["configuration"].nunique() > 1
    # One y-scale for every panel: bar heights compare across datasets at a glance.
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False, layout="constrained",
                             sharey=True)
    for ax, ((configuration, scale, dataset), part) in zip(axes[0], panels):
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
        ax.set_title(f"{dataset} x{scale}" + (f"\n{configuration.split(',')[0]}" if several else ""))
    axes[0][0].set_ylabel("Δ PSNR-Y vs no-KD (dB)")
    axes[0][-1].legend(title="teacher", fontsize=8)
    fig.suptitle("Paired Δ PSNR over seeds (bars: mean; whiskers: the results table's interval, at Holm's level "
                 "where 3+ seeds pair)")
    return save(fig, out_dir, "delta_bars")


LINE_STYLES = ["-", "--", ":", "-."]  # by seed
SMOOTHING = 9  # logged points in the moving mean of a training-loss curve (the raw loss of a batch is noisy)


def _moving_mean(values: list[float], window: int = SMOOTHING) -> list[float]:
    half = window // 2
    return [sum(values[max(0, i - half):i + half + 1]) / len(values[max(0, i - half):i + half + 1])
            for i in range(len(values))]


def training_curves(runs: list[Run], out_dir: Path) -> str | None:
    """Per teacher, one row of panels: total training loss per step (moving mean) and, where logged, validation
    PSNR; each panel with its own legend (the teacher's methods and the no-KD runs of the same configurations; one
    colour per method throughout, line style by seed)."""
    logs = {run.run_id: run.metrics_log() for run in runs}
    runs = [run for run in runs if any("loss" in r for r in logs[run.run_id])]
    if not runs:
        return None
    has_val = any("val_psnr_y" in r for log in logs.values() for r in log)
    teachers = sorted({run.teacher for run in runs if run.teacher and run.method != BASELINE}) or [None]
    colours: dict[str, str] = {}
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    columns = 2 if has_val else 1
    fig, axes = plt.subplots(len(teachers), columns, figsize=(5.4 * columns, 3.1 * len(teachers)), squeeze=False,
                             layout="constrained")
    for row, teacher in enumerate(teachers):
        kd = [run for run in runs if run.method != BASELINE and run.teacher == teacher]
        configurations = {run.configuration for run in kd}
        shown = [*(run for run in runs if run.method == BASELINE and (not kd or run.configuration in configurations)),
                 *kd]
        for run in sorted(shown, key=lambda r: (r.method != BASELINE, r.method, r.seed)):
            label = "no-KD" if run.method == BASELINE else run.method
            colour = colours.setdefault(label, cycle[len(colours) % len(cycle)])
            style = {"color": colour, "alpha": 0.85, "linestyle": LINE_STYLES[run.seed % len(LINE_STYLES)],
                     "label": label}
            log = logs[run.run_id]
            axes[row][0].plot([r["step"] for r in log if "loss" in r],
                              _moving_mean([r["loss"] for r in log if "loss" in r]), **style)
            val = [(r["step"], r["val_psnr_y"]) for r in log if r.get("val_psnr_y") is not None]
            if has_val and val:
                axes[row][1].plot(*zip(*val), marker="o", markersize=3, **style)
        source = f"from {teacher}" if teacher else "no teacher"
        axes[row][0].set(xlabel="step", ylabel=f"training loss, all terms (mean of {SMOOTHING} logs)",
                         yscale="log", title=f"training loss, {source}")
        if has_val:
            axes[row][1].set(xlabel="step", ylabel="PSNR-Y (dB)", title=f"validation PSNR, {source}")
        for ax in axes[row]:
            labels = list(dict.fromkeys(ax.get_legend_handles_labels()[1]))  # one entry per method, not per seed
            if labels:
                ax.legend([Line2D([], [], color=colours[label]) for label in labels], labels, fontsize=7,
                          title="seed 0 solid, 1 dashed, 2 dotted", title_fontsize=7)
    return save(fig, out_dir, "training_curves")


def cost_scatter(table: pd.DataFrame, peers: pd.DataFrame, out_dir: Path) -> tuple[str | None, list[str]]:
    """PSNR versus parameters (and versus MACs of a 1280x720 output where our runs differ in them), one panel per
    dataset and scale: each student of the report (mean over seeds) as its no-KD point and the range of its KD
    methods' means, beside the published lightweight peers, each labelled beside its point. Returns the stem and
    notes in the reader's terms."""
    ours = table[~table["method"].isin([TEACHER_ROW]) & table["params"].notna()]
    if ours.empty:
        return None, []
    notes = []
    axes_with_data = [("params", "parameters")]
    if ours["macs"].dropna().nunique() > 1:
        axes_with_data.append(("macs", "MACs, 1280x720 output"))
    else:
        macs = ours["macs"].dropna()
        known = f" ({float(macs.iloc[0]) / 1e9:.1f} G for a 1280x720 output)" if len(macs) else ""
        notes.append(f"PSNR versus MACs is not drawn: every run of this report has the same MACs{known}, and the "
                     "published peers have no MAC counts")
    panels = list(ours.groupby(["scale", "dataset"], sort=False))
    fig, axes = plt.subplots(len(panels), len(axes_with_data), figsize=(5.6 * len(axes_with_data),
                             3.4 * len(panels)), squeeze=False, layout="constrained")
    for row, ((scale, dataset), part) in enumerate(panels):
        peer = peers[(peers["dataset_key"] == dataset) & (peers["scale"] == scale)]
        if peer.empty:
            notes.append(f"{dataset} x{scale}: no published lightweight peers to compare with")
        for col, (key, label) in enumerate(axes_with_data):
            ax = axes[row][col]
            points, names = [], []
            if key == "params" and not peer.empty:
                ax.scatter(peer["params"], peer["psnr"], marker="s", color="grey", label="published peers")
                points += list(zip(peer["params"].astype(float), peer["psnr"].astype(float)))
                names += list(peer["model"])
            for student, rows in part.groupby("student", sort=False):
                x = float(rows[key].dropna().iloc[0]) if rows[key].notna().any() else None
                if x is None:
                    continue
                kd = rows[rows["method"] != BASELINE]["psnr_mean"].dropna()
                base = rows[rows["method"] == BASELINE]["psnr_mean"].dropna()
                if len(kd):
                    ax.vlines(x, kd.min(), kd.max(), color="tab:blue", linewidth=3, alpha=0.5,
                              label="ours: KD methods (range of their means)")
                if len(base):
                    ax.scatter([x], [base.mean()], marker="o", color="tab:blue", zorder=3, label="ours: no-KD")
                y = float(base.mean()) if len(base) else float(kd.mean())
                points.append((x, y))
                names.append(f"{student} (ours)")
            ax.set(xscale="log", xlabel=label, ylabel="PSNR-Y (dB)", title=f"{dataset} x{scale}")
            ax.margins(x=0.25, y=0.12)
            fig.canvas.draw()  # final scales before the labels are placed
            numbered = place_labels(ax, points, names)
            if numbered:
                ax.text(0.01, 0.99, "; ".join(numbered), transform=ax.transAxes, fontsize=6, va="top")
    legend = {label: handle for ax in axes.flat for handle, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncols=len(legend), fontsize=8)
    return save(fig, out_dir, "psnr_vs_cost"), notes
