"""Finished runs for a report: what each run is (summary.json), plus the tidy results frame.

The tidy frame comes from `kd.results.load_runs` when that module is installed; otherwise it is built here from the
same summaries with the same columns. Runs that cannot be read are skipped with a warning, never fatal.
"""

from __future__ import annotations

import json
import math
import warnings as warnings_module
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from kd.errors import KdError

TIDY_COLUMNS = ["run_id", "run_dir", "student", "teacher", "method", "profile", "seed", "scale", "dataset", "metric",
                "value", "params", "macs", "train_seconds", "steps", "commit", "finished"]
REQUIRED_SUMMARY_KEYS = ("run_id", "student", "method", "scale", "seed", "datasets")


@dataclass
class Run:
    """One finished run as the report needs it."""

    run_dir: Path
    summary: dict[str, Any]
    _records: list[dict[str, Any]] | None = field(default=None, repr=False, compare=False)

    @property
    def run_id(self) -> str:
        return str(self.summary["run_id"])

    @property
    def method(self) -> str:
        return str(self.summary["method"])

    @property
    def seed(self) -> int:
        return int(self.summary["seed"])

    @property
    def scale(self) -> int:
        return int(self.summary["scale"])

    @property
    def profile(self) -> str:
        return str(self.summary.get("profile") or "?")

    @property
    def student(self) -> str:
        """The student and its preset, and its reconstruction loss unless L1 (`method.rec`): students trained with
        another one form their own group, with their own no-KD baseline."""
        rec = self.summary.get("reconstruction") or "l1"
        loss = "" if rec == "l1" else f", rec {rec}"
        return f"{self.summary['student']} ({self.summary.get('student_preset') or '?'}{loss})"

    @property
    def teacher_info(self) -> dict[str, Any]:
        return self.summary.get("teacher") or {}

    @property
    def teacher(self) -> str | None:
        info = self.teacher_info
        return f"{info['arch']} ({info.get('preset') or '?'})" if info.get("arch") else None

    @property
    def group(self) -> tuple[str, str, int]:
        """Runs comparable with each other: same profile, student and scale."""
        return (self.profile, self.student, self.scale)

    def score(self, dataset: str, metric: str) -> float:
        value = (self.summary["datasets"].get(dataset) or {}).get(metric)
        return float(value) if value is not None else math.nan

    def metrics_log(self) -> list[dict[str, Any]]:
        """metrics.jsonl records, read once per report (curves, health and fit cost all use them); lines cut short
        by a kill are ignored."""
        if self._records is None:
            path = self.run_dir / "metrics.jsonl"
            self._records = []
            for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
                try:
                    self._records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return self._records


@dataclass
class RunSet:
    runs: list[Run]
    tidy: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)


def _read_summary(run_dir: Path) -> dict[str, Any]:
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    if not isinstance(summary, dict):
        raise ValueError("summary.json is not a JSON object")
    missing = [key for key in REQUIRED_SUMMARY_KEYS if key not in summary]
    if missing:
        raise ValueError(f"summary.json lacks {', '.join(missing)}")
    if not isinstance(summary["datasets"], dict) or not summary["datasets"]:
        raise ValueError("summary.json has no dataset results")
    int(summary["scale"]), int(summary["seed"])
    return summary


def scan_runs(runs_dirs: str | Path | Sequence[str | Path]) -> RunSet:
    """Every finished run under one runs folder or several (a local `runs/` beside the records a committed report
    keeps); a run id found twice is taken from the first folder given. Raises `KdError` saying what is missing when
    there is none."""
    folders = [Path(runs_dirs)] if isinstance(runs_dirs, (str, Path)) else [Path(p) for p in runs_dirs]
    runs, warnings, unfinished, seen = [], [], [], {}
    duplicates: dict[tuple[Path, Path], list[str]] = {}
    for runs_dir in folders:
        if not runs_dir.is_dir():
            raise KdError(f"runs directory '{runs_dir}' not found: train some runs first (kdbench run ...) "
                          "or point --runs at the folder that holds them.")
        for run_dir in sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not (run_dir / "summary.json").is_file():
                if (run_dir / "config.yaml").is_file():
                    unfinished.append(run_dir.name)
                continue
            try:
                run = Run(run_dir, _read_summary(run_dir))
            except (OSError, ValueError, TypeError, KeyError) as exc:
                warnings.append(f"skipped run '{run_dir.name}': unreadable summary.json ({exc})")
                continue
            if run.run_id in seen:
                duplicates.setdefault((seen[run.run_id], runs_dir), []).append(run.run_id)
                continue
            seen[run.run_id] = runs_dir
            runs.append(run)
    for (first, later), ids in duplicates.items():
        warnings.append(f"{len(ids)} run(s) are both in {first} and in {later}, read from {first}: {', '.join(ids)}")
    unfinished = [name for name in unfinished if name not in seen]
    where = " and ".join(f"'{p}'" for p in folders)
    if unfinished:
        warnings.append(f"{len(unfinished)} unfinished run(s) left out (no summary.json): {', '.join(unfinished)}; "
                        "run the same kdbench run command again to finish them.")
    if not runs:
        what = (f"only unfinished runs ({', '.join(unfinished)}): finish them by running the same "
                "kdbench run command again" if unfinished else "no run folders with a summary.json")
        raise KdError(f"runs directory {where} holds {what}. A report needs finished runs "
                      "(runs/<run-id>/summary.json), at least a no-KD run (--method none) and one KD method.")
    return RunSet(runs, tidy_frame(folders, runs, warnings), warnings, unfinished)


def tidy_frame(runs_dirs: list[Path], runs: list[Run], warnings: list[str]) -> pd.DataFrame:
    """One row per run x dataset x scale x metric, restricted to the runs this report reads."""
    try:
        from kd.results import load_runs
    except ImportError:
        return tidy_from_summaries(runs)
    try:
        with warnings_module.catch_warnings():
            warnings_module.simplefilter("ignore")  # scan_runs already reported the runs it skips
            frame = pd.concat([load_runs(runs_dir) for runs_dir in runs_dirs], ignore_index=True)
    except Exception as exc:  # the report must not break on the loader; the summaries hold the same numbers
        warnings.append(f"kd.results.load_runs failed ({exc}); using summary.json directly")
        return tidy_from_summaries(runs)
    return frame[frame["run_dir"].isin({str(run.run_dir) for run in runs})].reset_index(drop=True)


def tidy_from_summaries(runs: list[Run]) -> pd.DataFrame:
    rows = []
    for run in runs:
        s = run.summary
        base = {"run_id": run.run_id, "run_dir": str(run.run_dir), "student": s["student"],
                "teacher": run.teacher_info.get("arch"), "method": run.method, "profile": s.get("profile"),
                "seed": run.seed, "scale": run.scale, "params": s.get("params"), "macs": s.get("macs_1280x720"),
                "train_seconds": s.get("train_seconds"), "steps": s.get("steps"), "commit": None,
                "finished": True}
        for dataset, scores in s["datasets"].items():
            for metric, value in (scores or {}).items():
                rows.append({**base, "dataset": dataset, "metric": metric,
                             "value": math.nan if value is None else float(value)})
    return pd.DataFrame(rows, columns=TIDY_COLUMNS)
