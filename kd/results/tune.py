"""Fair tuning: a short-budget grid over configuration values, scored on the validation split only.

Each grid point is a sweep cell with extra `--set` overrides and a shortened schedule (`train.steps`); its final
evaluation runs on the profile's validation split (`eval.val_dataset`, e.g. `291-val`), never on a test set. Points
are ranked by mean validation PSNR-Y over the seeds. The evidence is a CSV per (method, teacher, profile) and one
line per tuning in `<report dir>/README.md`.
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
    points = []
    for combination in itertools.product(*(axis.values for axis in axes)):
        values = {axis.key: value for axis, value in zip(axes, combination)}
        point_overrides = [*fixed, *(f"{key}={value}" for key, value in values.items())]
        plans = plan_sweep(cells, layers, point_overrides, out_dir)
        invalid = next((p for p in plans if p.status == "invalid"), None)
        if invalid is not None:
            raise KdError(f"grid point {_label(values)}: {invalid.error}")
        points.append(TuningPoint(values, plans))
    return TuningPlan(points, val, budget, {axis.key: current_value(probe.config, axis.key) for axis in axes})


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

    The current values stay unless the best point beats them with a paired 95 % interval that excludes 0 (or they
    are not in the grid): a short run on one seed cannot tell apart margins of a few hundredths of a dB. A best
    point at the end of a numeric axis is said to be one: the optimum may lie beyond the grid."""
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
    from kd.stats import MIN_SEEDS_TO_RANK, paired_delta

    def label(point: pd.Series) -> str:
        return ", ".join(f"{key}={point[key]}" for key in keys)

    def interval(paired) -> str:
        if not paired.can_rank:
            return f"{paired.n} paired seed(s) are too few to rank on (the protocol needs {MIN_SEEDS_TO_RANK})"
        return f"paired 95 % interval over {paired.n} seeds [{paired.low:+.3f}, {paired.high:+.3f}] dB"

    best = ranked.iloc[0]
    if math.isnan(best["mean"]):
        return dict(current), "no grid point finished; the current values stay."
    score = f"{best['mean']:.3f} dB PSNR-Y on {val} (mean of {int(best['seeds'])} seed(s), {budget} steps)"
    incumbent = ranked[[all(same_value(str(row[k]), current[k]) for k in keys) for _, row in ranked.iterrows()]]
    if incumbent.empty:
        return ({k: str(best[k]) for k in keys},
                f"chosen {label(best)}: {score}; the current value ({_label(current)}) was not in the grid.")
    incumbent = incumbent.iloc[0]
    if incumbent.name == best.name:
        text = f"kept {label(best)}, the best point: {score}"
        if len(ranked) > 1 and not math.isnan(ranked.iloc[1]["mean"]):
            runner = ranked.iloc[1]
            paired = paired_delta(_per_seed(results, keys, best), _per_seed(results, keys, runner))
            separated = "separates them" if paired.above_zero else "does not separate them"
            text += f", {best['mean'] - runner['mean']:+.3f} dB over {label(runner)} ({interval(paired)}; {separated})"
        return {k: str(best[k]) for k in keys}, text + "."
    paired = paired_delta(_per_seed(results, keys, best), _per_seed(results, keys, incumbent))
    margin = f"{best['mean'] - incumbent['mean']:+.3f} dB"
    if paired.above_zero:
        return ({k: str(best[k]) for k in keys},
                f"chosen {label(best)}: {score}, {margin} over the current {label(incumbent)} ({interval(paired)}).")
    why = interval(paired) if not paired.can_rank else f"its {interval(paired)} includes 0"
    return ({k: str(incumbent[k]) for k in keys},
            f"kept {label(incumbent)}: the best point, {label(best)}, is {margin} above it, but {why}.")


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
