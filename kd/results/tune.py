"""Fair tuning: a short-budget grid over configuration values, scored on the validation split only.

Each grid point is a sweep cell with extra `--set` overrides and a shortened schedule (`train.steps`); its final
evaluation runs on the profile's validation split (`eval.val_dataset`, e.g. `291-val`), never on a test set. Points
are ranked by mean validation PSNR-Y over the seeds. The grid always holds the current values (added when missing),
and a point replaces them only when it beats them on paired seeds after Holm–Bonferroni over every point compared
with them (`kd.stats.holm`); where none does, the current values stay and the finding says so. The evidence is a
CSV per (method, teacher, profile) and one line per tuning in `<report dir>/README.md`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from kd.data.registry import resolve_dataset
from kd.errors import KdError
from kd.fileio import atomic_write_text
from kd.results.sweep import Cell, CellOutcome, CellPlan, plan_sweep
from kd.stats import FAMILYWISE_ALPHA, MIN_SEEDS_TO_RANK, holm, paired_delta

BUDGET_FRACTION = 4  # default tuning budget: a quarter of the profile's training steps


@dataclass(frozen=True)
class GridAxis:
    key: str
    values: tuple[str, ...]


@dataclass
class TuningPoint:
    values: dict[str, str]  # config key -> value, as given on the command line
    plans: list[CellPlan]  # one per seed


def parse_grid(items: list[str]) -> list[GridAxis]:
    """`key=v1,v2,...` items (one per --grid) -> axes; a key given twice or without values is an error."""
    axes: list[GridAxis] = []
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        parsed = tuple(v.strip() for v in values.split(",") if v.strip())
        if not sep or not key or not parsed:
            raise KdError(f"--grid '{item}' must look like KEY=V1,V2,... (e.g. method.weights.fd=0.03,0.1,0.3).")
        if any(axis.key == key for axis in axes):
            raise KdError(f"--grid names {key} twice; give all its values in one --grid.")
        axes.append(GridAxis(key, parsed))
    if not axes:
        raise KdError("give at least one --grid KEY=V1,V2,... to tune.")
    return axes


@dataclass
class TuningPlan:
    points: list[TuningPoint]
    val: str  # the validation dataset
    budget: int  # training steps per run
    current: dict[str, str]  # each grid key's value without the grid (what a run would use today)
    added: dict[str, str]  # current values the grid lacked, added so that the choice is made against them


def current_value(config, key: str) -> str:
    """A config key's value as a run would use it; loss weights include the method's own defaults."""
    if key.startswith("method.weights."):
        from kd.methods import loss_weights

        term = key.split(".", 2)[2]
        return str(loss_weights(config.method.name, config.method.weights, _built_method(config)).get(term))
    value: Any = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
    return str(value)


def _built_method(config):
    """The method built on tiny presets of the run's networks, or None. A method may set its default weights by the
    teacher it pairs with (attention: per mode), and tiny presets build it in milliseconds."""
    from kd.methods import create_method
    from kd.models import create

    try:
        teacher = create(config.teacher.arch, config.scale, "tiny") if config.teacher.arch else None
        return create_method(config.method.name, create(config.student.arch, config.scale, "tiny"), teacher,
                             config.method.options)
    except Exception:  # a network without a tiny preset (a plugin): the class defaults stand
        return None


def same_value(a: str, b: str) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except ValueError:
        return a == b


def plan_tuning(cells: list[Cell], layers: list[tuple[str, dict[str, Any]]], overrides: list[str],
                axes: list[GridAxis], steps: int | None, out_dir: str | Path) -> TuningPlan:
    """Every grid point's runs (one cell per seed), the validation dataset, the step budget, the current values."""
    probe = plan_sweep(cells[:1], layers, overrides, out_dir)[0]
    if probe.config is None:
        raise KdError(probe.error or "the tuning cell is invalid")
    val = probe.config.eval.val_dataset
    if not val:
        raise KdError("tuning scores on the validation split, and eval.val_dataset is not set; use a profile with "
                      "one (cpu: 291-val) or --set eval.val_dataset=NAME (never a test set).")
    if resolve_dataset(val).role == "eval":
        raise KdError(f"eval.val_dataset {val} is a test set; tune on a held-out split (cpu profile: 291-val, "
                      "paper profile: DIV2K-val10).")
    budget = steps or max(1, probe.config.train.steps // BUDGET_FRACTION)
    fixed = [*overrides, f"train.steps={budget}", "train.val_every=0", f"eval.datasets=[{val}]", "eval.lpips=false"]
    current = {axis.key: current_value(probe.config, axis.key) for axis in axes}
    added = {axis.key: current[axis.key] for axis in axes
             if current[axis.key] != "None" and not any(same_value(v, current[axis.key]) for v in axis.values)}
    axes = [GridAxis(axis.key, (*axis.values, added[axis.key]) if axis.key in added else axis.values)
            for axis in axes]
    points = []
    for combination in itertools.product(*(axis.values for axis in axes)):
        values = {axis.key: value for axis, value in zip(axes, combination)}
        point_overrides = [*fixed, *(f"{key}={value}" for key, value in values.items())]
        plans = plan_sweep(cells, layers, point_overrides, out_dir)
        invalid = next((p for p in plans if p.status == "invalid"), None)
        if invalid is not None:
            raise KdError(f"grid point {_label(values)}: {invalid.error}")
        points.append(TuningPoint(values, plans))
    return TuningPlan(points, val, budget, current, added)


def _label(values: dict[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in values.items())


def _validation_psnr(summary: dict[str, Any], val: str) -> float:
    try:
        return float(summary["datasets"][val]["psnr_y"])
    except (KeyError, TypeError, ValueError):
        return math.nan


def tuning_results(points: list[TuningPoint], val: str, outcomes: list[CellOutcome]) -> pd.DataFrame:
    """One row per run: the grid values, seed, validation PSNR-Y (NaN when the run did not finish) and run id;
    `outcomes` are the sweep outcomes of the points' plans, in order."""
    rows = []
    runs = iter(outcomes)
    for point in points:
        for plan in point.plans:
            outcome = next(runs)
            rows.append({**point.values, "seed": plan.cell.seed, "val_dataset": val,
                         "val_psnr_y": _validation_psnr(outcome.summary, val),
                         "run_id": outcome.summary.get("run_id") or plan.run_id})
    return pd.DataFrame(rows)


def rank_points(results: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean, std and count of validation PSNR per grid point, best first; points with no finished run last."""
    ranked = (results.groupby(keys, sort=False)["val_psnr_y"]
              .agg(mean="mean", std="std", seeds="count").reset_index())
    return ranked.sort_values("mean", ascending=False, na_position="last").reset_index(drop=True)


def _per_seed(results: pd.DataFrame, keys: list[str], point: pd.Series) -> dict[int, float]:
    rows = results
    for key in keys:
        rows = rows[rows[key].astype(str) == str(point[key])]
    return dict(zip(rows["seed"].astype(int), rows["val_psnr_y"].astype(float)))


def finding(ranked: pd.DataFrame, keys: list[str], val: str, budget: int, results: pd.DataFrame,
            current: dict[str, str]) -> tuple[dict[str, str], str]:
    """The chosen values and the sentences saying why.

    Every other point is compared with the current values on paired seeds; Holm–Bonferroni over those comparisons
    (familywise 5 %) decides which beat them, and the best of those is chosen. Where none does (too few seeds, or
    every interval at Holm's level includes 0), the current values stay: a short run cannot tell apart margins of
    a few hundredths of a dB. A best point at the end of a numeric axis is said to be one: the optimum may lie
    beyond the grid."""
    chosen, text = _decision(ranked, keys, val, budget, results, current)
    return chosen, text + _edge_note(ranked, keys)


def _edge_note(ranked: pd.DataFrame, keys: list[str]) -> str:
    finished = ranked.dropna(subset=["mean"])
    if len(keys) != 1 or len(finished) < 3:
        return ""
    try:
        values = [float(v) for v in finished[keys[0]]]
    except ValueError:
        return ""
    best = values[0]  # ranked best first
    if best not in (min(values), max(values)):
        return ""
    side, direction = ("smallest", "below") if best == min(values) else ("largest", "above")
    return (f" The best point is the grid's {side} value of {keys[0]}: extend the grid {direction} it before "
            "trusting the choice.")


def _decision(ranked: pd.DataFrame, keys: list[str], val: str, budget: int, results: pd.DataFrame,
              current: dict[str, str]) -> tuple[dict[str, str], str]:
    def label(point: pd.Series) -> str:
        return ", ".join(f"{key}={point[key]}" for key in keys)

    finished = ranked.dropna(subset=["mean"])
    if finished.empty:
        return dict(current), "no grid point finished; the current values stay."
    is_current = [all(same_value(str(row[k]), current[k]) for k in keys) for _, row in finished.iterrows()]
    incumbents = finished[is_current]
    if incumbents.empty:
        return dict(current), (f"kept the current values ({_label(current)}): they are not among the finished "
                               "points, so no point could be compared with them.")
    incumbent = incumbents.iloc[0]
    others = finished[[not flag for flag in is_current]]
    base = _per_seed(results, keys, incumbent)
    judged = holm([paired_delta(_per_seed(results, keys, point), base) for _, point in others.iterrows()])
    family = judged[0].family if judged else 0
    score = f"{incumbent['mean']:.3f} dB PSNR-Y on {val} (mean of {int(incumbent['seeds'])} seed(s), {budget} steps)"
    if not judged:
        return {k: str(incumbent[k]) for k in keys}, f"kept {label(incumbent)}, the only point: {score}."
    holm_words = (f"Holm–Bonferroni over the {family} point(s) compared with it (familywise "
                  f"{100 * FAMILYWISE_ALPHA:g} %)")
    winners = [(point, j) for (_, point), j in zip(others.iterrows(), judged) if j.above_zero]
    if winners:
        point, j = max(winners, key=lambda item: item[1].delta.mean)
        return ({k: str(point[k]) for k in keys},
                f"chosen {label(point)}: {j.delta.mean:+.3f} dB over the current {label(incumbent)} ({score}), "
                f"{_interval(j.delta)} after {holm_words}.")
    best, j = max(zip((point for _, point in others.iterrows()), judged), key=lambda item: item[0]["mean"])
    nearest = f"the best other point, {label(best)}, is {best['mean'] - incumbent['mean']:+.3f} dB from it"
    if not family:
        why = (f"{j.delta.n} paired seed(s) are too few to rank on (the protocol needs {MIN_SEEDS_TO_RANK}; tune "
               f"with --seeds 0,1,2); {nearest}")
    else:
        why = f"no point separates from it after {holm_words}; {nearest} ({_interval(j.delta)})"
    return {k: str(incumbent[k]) for k in keys}, f"kept {label(incumbent)}, the current value ({score}): {why}."


def _interval(delta) -> str:
    return (f"paired interval over {delta.n} seeds [{delta.low:+.3f}, {delta.high:+.3f}] dB at Holm's level "
            f"{100 * delta.confidence:.4g} %")


def write_evidence(results: pd.DataFrame, sentence: str, report_dir: str | Path, name: str,
                   context: dict[str, str]) -> Path:
    """`<report_dir>/<name>.csv` (every run) and this tuning's line in `<report_dir>/README.md` (replacing an
    earlier line of the same name)."""
    report_dir = Path(report_dir)
    csv_path = report_dir / f"{name}.csv"
    atomic_write_text(csv_path, results.to_csv(index=False, float_format="%.4f"))
    index = report_dir / "README.md"
    header = ("# Tuning evidence\n\nWritten by `kdbench tune`: short-budget grids scored on the validation split "
              "only. One line per tuning; the CSV beside it has every run.\n\n")
    lines = []
    if index.is_file():
        lines = [line for line in index.read_text(encoding="utf-8").splitlines()
                 if line.startswith("- ") and f"[{name}.csv]" not in line]
    described = ", ".join(f"{k} {v}" for k, v in context.items())
    lines.append(f"- **{name}** ({described}): {sentence} Evidence: [{name}.csv]({name}.csv)")
    atomic_write_text(index, header + "\n".join(sorted(lines)) + "\n")
    return csv_path
