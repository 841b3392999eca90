"""Seed statistics shared by reports, paper tables and tuning: mean ± std, paired differences with their t-interval
and two-sided p-value, Holm–Bonferroni over a family of comparisons, teacher-student gap recovered.

The protocol's rules:

* comparisons pair runs by seed (seed k of every configuration shares initial weights and batches);
* a difference is called only from at least `MIN_SEEDS_TO_RANK` paired seeds (two give an interval, but too wide
  and too fragile to rank on);
* every comparison a report, a paper table or a tuning claims is one of a family (all the comparisons of that
  report), and is claimed only when Holm–Bonferroni rejects "no difference" at familywise level
  `FAMILYWISE_ALPHA`. `holm` returns each comparison's interval at the level Holm tested it at, so that
  "claimed" and "interval excludes 0" are the same statement (see `holm`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

MIN_SEEDS_TO_RANK = 3
FAMILYWISE_ALPHA = 0.05
CONFIDENCE = 0.95  # a single comparison's interval, outside any family


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; NaN for a single value). NaNs are ignored."""
    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if data.size == 0:
        return math.nan, math.nan
    return float(data.mean()), float(data.std(ddof=1)) if data.size > 1 else math.nan


@dataclass(frozen=True)
class PairedDelta:
    """Mean of per-seed differences (method - baseline), its two-sided t-interval at `confidence` and the two-sided
    paired t-test p-value; NaN bounds and p for n < 2."""

    n: int
    mean: float
    std: float
    low: float
    high: float
    confidence: float = CONFIDENCE
    p: float = math.nan

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

    def at(self, confidence: float) -> PairedDelta:
        """The same differences with their t-interval at another confidence level."""
        if self.n < 2:
            return replace(self, confidence=confidence)
        half = _t_quantile(confidence, self.n - 1) * self.std / math.sqrt(self.n)
        return replace(self, low=self.mean - half, high=self.mean + half, confidence=confidence)


def _t_quantile(confidence: float, df: int) -> float:
    return float(stats.t.ppf((1.0 + confidence) / 2.0, df))


def _p_value(mean: float, sd: float, n: int) -> float:
    if sd == 0.0:  # every seed moved by the same amount: no spread to test against
        return 1.0 if mean == 0.0 else 0.0
    return float(2.0 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))


def paired_delta(method: Mapping[int, float], baseline: Mapping[int, float],
                 confidence: float = CONFIDENCE) -> PairedDelta:
    """Pair runs by seed and t-interval the differences: mean ± t_{(1+c)/2, n-1} · sd / √n; p from the paired
    t-test of mean 0."""
    seeds = sorted(s for s in method if s in baseline and math.isfinite(method[s]) and math.isfinite(baseline[s]))
    diffs = np.asarray([method[s] - baseline[s] for s in seeds], dtype=np.float64)
    n = int(diffs.size)
    if n == 0:
        return PairedDelta(0, math.nan, math.nan, math.nan, math.nan, confidence)
    mean = float(diffs.mean())
    if n == 1:
        return PairedDelta(1, mean, math.nan, math.nan, math.nan, confidence)
    sd = float(diffs.std(ddof=1))
    return PairedDelta(n, mean, sd, math.nan, math.nan, confidence, _p_value(mean, sd, n)).at(confidence)


@dataclass(frozen=True)
class Judged:
    """One comparison after Holm–Bonferroni: `delta` carries the interval at the level Holm tested it at (the plain
    95 % interval outside the family); `p_holm` is the Holm-adjusted p-value; `family` the number of comparisons
    corrected for (0: not in the family, fewer than MIN_SEEDS_TO_RANK paired seeds)."""

    delta: PairedDelta
    p_holm: float = math.nan
    family: int = 0

    @property
    def claimed(self) -> bool:
        return self.family > 0 and self.p_holm <= FAMILYWISE_ALPHA

    @property
    def above_zero(self) -> bool:
        return self.claimed and self.delta.mean > 0

    @property
    def below_zero(self) -> bool:
        return self.claimed and self.delta.mean < 0


def holm(deltas: Sequence[PairedDelta], alpha: float = FAMILYWISE_ALPHA) -> list[Judged]:
    """Holm–Bonferroni step-down over the comparisons that can be ranked (at least MIN_SEEDS_TO_RANK paired seeds).

    With the m p-values in increasing order, the k-th (k = 1..m) is rejected when it and every smaller one satisfy
    p_(j) ≤ alpha / (m − j + 1); its adjusted p-value is max_{j ≤ k} min(1, (m − j + 1) p_(j)). The interval given
    with each comparison is its paired t-interval at the level Holm tested it at: 1 − alpha / (m − k + 1) for a
    rejected k-th comparison, and 1 − alpha / (m − s + 1) for every comparison Holm did not reject, s being the
    step where it stopped. So a comparison is claimed exactly when its interval excludes 0."""
    family = [i for i, delta in enumerate(deltas) if delta.can_rank]
    m = len(family)
    order = sorted(family, key=lambda i: deltas[i].p)
    adjusted: dict[int, float] = {}
    step: dict[int, int] = {}
    running, stopped = 0.0, None
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * deltas[index].p))
        adjusted[index] = running
        if stopped is None and running > alpha:
            stopped = rank
        step[index] = rank if stopped is None else stopped
    return [Judged(delta.at(1.0 - alpha / (m - step[i])), adjusted[i], m) if i in adjusted else Judged(delta)
            for i, delta in enumerate(deltas)]


def gap_recovered(method_psnr: float, scratch_psnr: float, teacher_psnr: float | None) -> float:
    """(PSNR_KD - PSNR_scratch) / (PSNR_teacher - PSNR_scratch); NaN when the teacher is unknown or not better."""
    if teacher_psnr is None or not all(math.isfinite(v) for v in (method_psnr, scratch_psnr, teacher_psnr)):
        return math.nan
    gap = teacher_psnr - scratch_psnr
    return (method_psnr - scratch_psnr) / gap if gap > 0 else math.nan
