"""The report's method-health table: each KD term's gradient-norm ratio to the reconstruction term, from the
`health` records the trainer writes into metrics.jsonl (`kd.methods.health`)."""

from __future__ import annotations

import statistics

from kd.methods.health import HEALTHY
from kd.report.runs import Run

HEADERS = ["Method", "Teacher", "Term", "Runs", "Step 0", "Median", "Range", "Status"]
CAPTION = (f"‖∇ weighted KD term‖ / ‖∇ reconstruction term‖ on the student's parameters, logged at step 0 and every "
           f"log_every × 10 steps; Step 0 and Median are means over runs (seeds). Healthy: {HEALTHY[0]:g} to "
           f"{HEALTHY[1]:g}: below, the term is inert; above, it drowns the reconstruction.")


def health_rows(runs: list[Run]) -> list[list[str]]:
    """One row per (method, teacher, term) over the runs that logged health records."""
    series: dict[tuple[str, str, str], list[list[float]]] = {}
    for run in runs:
        per_term: dict[str, list[float]] = {}
        for record in run.metrics_log():
            for term, ratio in (record.get("health") or {}).items():
                per_term.setdefault(term, []).append(float(ratio))
        for term, ratios in per_term.items():
            series.setdefault((run.method, run.teacher or "-", term), []).append(ratios)
    rows = []
    low, high = HEALTHY
    for (method, teacher, term), runs_ratios in sorted(series.items()):
        every = [r for ratios in runs_ratios for r in ratios]
        first = statistics.fmean(ratios[0] for ratios in runs_ratios)
        median = statistics.fmean(statistics.median(ratios) for ratios in runs_ratios)
        outside = [r for r in every if not low <= r <= high]
        status = "ok" if not outside else f"⚠ {len(outside)}/{len(every)} outside"
        rows.append([method, teacher, term, str(len(runs_ratios)), f"{first:.3g}", f"{median:.3g}",
                     f"{min(every):.3g}-{max(every):.3g}", status])
    return rows
