"""The report's method-health tables, from the records the trainer writes into metrics.jsonl:

* health: each KD term's gradient-norm ratio to the reconstruction term (`kd.methods.health`);
* fit cost: how much higher the training reconstruction loss ends than in the no-KD run of the same seed. A
  method whose gradient ratios are in range can still hurt a short-budget student: its terms take optimisation
  steps from a student that has not yet fitted the training data, and this table shows it.
"""

from __future__ import annotations

import statistics

from kd.errors import KdError
from kd.methods import get_method
from kd.methods.health import HEALTHY, inert_as_published
from kd.report.runs import Run

HEADERS = ["Method", "Teacher", "Term", "Runs", "Step 0", "Median", "Range", "Status"]
CAPTION = (f"‖∇ weighted KD term‖ / ‖∇ reconstruction term‖ on the student's parameters, logged at step 0 and every "
           f"log_every × 10 steps; Step 0 and Median are means over runs (seeds). Healthy: {HEALTHY[0]:g} to "
           f"{HEALTHY[1]:g}: below, the term is inert; above, it drowns the reconstruction. \"low as published\": a term "
           "the method's published configuration weights so lightly that it is nearly inert.")


def health_rows(runs: list[Run]) -> list[list[str]]:
    """One row per (method, teacher, term) over the runs that logged health records."""
    series: dict[tuple[str, str, str], list[list[float]]] = {}
    published: dict[tuple[str, str, str], bool] = {}  # every run keeps the term at its published, nearly inert weight
    for run in runs:
        per_term: dict[str, list[float]] = {}
        for record in run.metrics_log():
            for term, ratio in (record.get("health") or {}).items():
                per_term.setdefault(term, []).append(float(ratio))
        inert = _inert_as_published(run)
        for term, ratios in per_term.items():
            key = (run.method, run.teacher or "-", term)
            series.setdefault(key, []).append(ratios)
            published[key] = published.get(key, True) and term in inert
    rows = []
    low, high = HEALTHY
    for (method, teacher, term), runs_ratios in sorted(series.items()):
        every = [r for ratios in runs_ratios for r in ratios]
        first = statistics.fmean(ratios[0] for ratios in runs_ratios)
        median = statistics.fmean(statistics.median(ratios) for ratios in runs_ratios)
        outside = [r for r in every if not low <= r <= high]
        if outside and published[(method, teacher, term)] and max(outside) < low:
            status = f"low as published ({len(outside)}/{len(every)})"
        else:
            status = "ok" if not outside else f"⚠ {len(outside)}/{len(every)} outside"
        rows.append([method, teacher, term, str(len(runs_ratios)), f"{first:.3g}", f"{median:.3g}",
                     f"{min(every):.3g}-{max(every):.3g}", status])
    return rows


def _inert_as_published(run: Run) -> frozenset[str]:
    try:
        method = get_method(run.method)
    except KdError:  # recorded by a plugin that is not installed here
        return frozenset()
    return inert_as_published(method, run.summary.get("loss_weights") or {})


FIT_HEADERS = ["Method", "Teacher", "Seeds", "Rec. loss", "Range"]
FIT_CAPTION = ("Training reconstruction loss (L1, unweighted) averaged over the last third of training, relative to "
               "the no-KD run of the same seed, mean and range over seeds. Above 0: the KD terms slow the student's "
               "fit of its training data.")


def late_reconstruction_loss(run: Run) -> float | None:
    """Mean logged `rec` term over the last third of the run's steps (the last record per step counts, so the
    records a resumed run logs twice count once); None without such records."""
    by_step = {int(r["step"]): float(r["terms"]["rec"]) for r in run.metrics_log()
               if isinstance(r.get("terms"), dict) and "rec" in r["terms"]}
    if not by_step:
        return None
    start = max(by_step) * 2 / 3
    return statistics.fmean(value for step, value in by_step.items() if step > start)


def fit_cost_rows(runs: list[Run]) -> list[list[str]]:
    """One row per (method, teacher) with a no-KD run of the same configuration and seed."""
    baselines = {(run.configuration, run.seed): late_reconstruction_loss(run) for run in runs if run.method == "none"}
    costs: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        baseline = baselines.get((run.configuration, run.seed))
        own = late_reconstruction_loss(run) if run.method != "none" and baseline else None
        if own is not None:
            costs.setdefault((run.method, run.teacher or "-"), []).append(own / baseline - 1)
    return [[method, teacher, str(len(values)), f"{statistics.fmean(values):+.1%}",
             f"{min(values):+.1%} to {max(values):+.1%}"] for (method, teacher), values in sorted(costs.items())]
