"""Results store: every run directory as one tidy DataFrame, filters, paper-style tables, and sweeps.

    df = load_runs("runs")                                # one row per run x dataset x scale x metric
    df = filter_runs(df, ["teacher=rcan,none", "dataset=Set5"])
"""

from kd.results.filters import filter_runs
from kd.results.store import COLUMNS, METRICS, NO_TEACHER, CorruptRunWarning, load_runs

__all__ = ["COLUMNS", "METRICS", "NO_TEACHER", "CorruptRunWarning", "filter_runs", "load_runs"]
