"""The comparison a distillation run exists for: the student beside its teacher and its no-KD sibling.

The no-KD sibling is the run with the same configuration but method `none` (default method weights and options,
the same reconstruction loss `method.rec`): same student, data, recipe, profile and seed, hence the same initial
weights and batches. Its run id follows from
that configuration and its inputs (`kd.engine.run.locate_run`), so it is found in the same runs folder without
scanning.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from kd.config import MethodConfig, RunConfig
from kd.errors import KdError


@dataclasses.dataclass(frozen=True)
class Comparison:
    datasets: list[str]
    student: dict[str, Any]  # the run's summary
    sibling: dict[str, Any] | None  # the no-KD run's summary, None when it has not been run
    sibling_id: str
    teacher: dict[str, Any] | None  # {dataset: {psnr_y, ssim_y}} of the teacher, None when unknown

    def delta(self, dataset: str, metric: str = "psnr_y") -> float:
        """Student minus no-KD sibling on `dataset` (NaN when either is missing)."""
        if self.sibling is None:
            return math.nan
        mine = (self.student["datasets"].get(dataset) or {}).get(metric)
        theirs = (self.sibling["datasets"].get(dataset) or {}).get(metric)
        return mine - theirs if mine is not None and theirs is not None else math.nan


def no_kd_config(config: RunConfig) -> RunConfig:
    return dataclasses.replace(config, method=MethodConfig(name="none", rec=config.method.rec))


def compare_with_siblings(config: RunConfig, summary: dict[str, Any], runs_root: str | Path) -> Comparison | None:
    """The comparison for a finished KD run, or None for a no-KD run (it is its own baseline)."""
    if config.method.name == "none":
        return None
    from kd.engine.run import finished_summary, locate_run

    try:
        sibling_dir = locate_run(no_kd_config(config), runs_root)
        sibling = finished_summary(sibling_dir)
    except KdError:  # its data is not there: no sibling can exist
        sibling_dir, sibling = Path(runs_root) / "?", None
    sibling_id = sibling_dir.name
    teacher = (summary.get("teacher") or {}).get("eval") or None
    return Comparison(list(summary["datasets"]), summary, sibling, sibling_id, teacher)
