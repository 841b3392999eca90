"""Seed statistics for KD tables: mean +- std, paired delta with a t-interval, teacher-student gap recovered."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

# The protocol's rule: a method is called better (or worse) than another only from at least this many paired seeds,
# and only when the 95% interval of the paired difference excludes 0. Two seeds give an interval, but too wide and
# too fragile to rank on.
MIN_SEEDS_TO_RANK = 3


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; NaN for a single value). NaNs are ignored."""
    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if data.size == 0:
        return math.nan, math.nan
    return float(data.mean()), float(data.std(ddof=1)) if data.size > 1 else math.nan


@dataclass(frozen=True)
class PairedDelta:
    """Mean of per-seed differences (method - baseline) and its two-sided t-interval; NaN bounds for n < 2."""

    n: int
    mean: float
    std: float
    low: float
    high: float

    @property
    def has_interval(self) -> bool:
        return self.n >= 2 and math.isfinite(self.low)

    @property
    def can_rank(self) -> bool:
        return self.n >= MIN_SEEDS_TO_RANK and self.has_interval

    @property
    def above_zero(self) -> bool:
        return self.can_rank and self.low > 0

    @property
    def below_zero(self) -> bool:
        return self.can_rank and self.high < 0


def paired_delta(method: Mapping[int, float], baseline: Mapping[int, float], confidence: float = 0.95) -> PairedDelta:
    """Pair runs by seed (seed k of every method shares initial weights and batches) and t-interval the differences:
    mean +- t_{(1+c)/2, n-1} * sd / sqrt(n)."""
    seeds = sorted(s for s in method if s in baseline and math.isfinite(method[s]) and math.isfinite(baseline[s]))
    diffs = np.asarray([method[s] - baseline[s] for s in seeds], dtype=np.float64)
    n = int(diffs.size)
    if n == 0:
        return PairedDelta(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(diffs.mean())
    if n == 1:
        return PairedDelta(1, mean, math.nan, math.nan, math.nan)
    sd = float(diffs.std(ddof=1))
    half = float(stats.t.ppf((1.0 + confidence) / 2.0, n - 1)) * sd / math.sqrt(n)
    return PairedDelta(n, mean, sd, mean - half, mean + half)


def gap_recovered(method_psnr: float, scratch_psnr: float, teacher_psnr: float | None) -> float:
    """(PSNR_KD - PSNR_scratch) / (PSNR_teacher - PSNR_scratch); NaN when the teacher is unknown or not better."""
    if teacher_psnr is None or not all(math.isfinite(v) for v in (method_psnr, scratch_psnr, teacher_psnr)):
        return math.nan
    gap = teacher_psnr - scratch_psnr
    return (method_psnr - scratch_psnr) / gap if gap > 0 else math.nan
