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
import yaml

from kd.config import NON_RESULT_KEYS
from kd.errors import KdError
from kd.fileio import check_child_name, read_json_lines
from kd.results.store import read_summary

TIDY_COLUMNS = ["run_id", "run_dir", "student", "teacher", "method", "profile", "seed", "scale", "dataset", "metric",
                "value", "params", "macs", "train_seconds", "steps", "commit", "finished"]
# What a comparison varies (the method and its teacher), pairs on (the seed) or ignores (labels, and what changes how a
# run executes but not its result); the rest of a run's configuration is its setting, which a comparison holds fixed.
VARIED_KEYS = ("method", "teacher", "seed", "accel.teacher_dtype", "accel.channels_last", "accel.compile",
               *NON_RESULT_KEYS)


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# Method keys that are part of the setting: a student trained with another reconstruction loss has its own
# baseline (the no-KD run with the same `method.rec`).
SETTING_METHOD_KEYS = ("method.rec",)


def _varied(key: str) -> bool:
    if key in SETTING_METHOD_KEYS:
        return False
    return any(key == varied or key.startswith(f"{varied}.") for varied in VARIED_KEYS)


@dataclass
class Run:
    """One finished run as the report needs it."""

    run_dir: Path
    summary: dict[str, Any]
    _records: list[dict[str, Any]] | None = field(default=None, repr=False, compare=False)
    _setting: dict[str, str] | None = field(default=None, repr=False, compare=False)

    @property
    def run_id(self) -> str:
        return str(self.summary["run_id"])

    def record_dir(self, records_dir: Path) -> Path:
        """The run's folder in a report's `records_dir`, named by its run id, which must be a plain name: a record
        is never written outside the report."""
        return records_dir / check_child_name(self.run_id, f"the run id in {self.run_dir / 'summary.json'}")

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
    def labels(self) -> dict[str, Any]:
        """The run's name and tags (`kdbench run --name/--tag`): labels, never part of its configuration."""
        label = self.summary.get("label") or {}
        return {"name": label.get("name"), "tags": list(label.get("tags") or [])}

    @property
    def setting(self) -> dict[str, str]:
        """Everything a comparison holds fixed (data, profile, budget, scale, student, recipe), flattened to
        `train.steps: "1000"`: from the run's config.yaml, or from its summary where a record has none."""
        if self._setting is None:
            config = self._config()
            if config is None:
                s = self.summary
                config = {"profile": self.profile, "scale": self.scale, "student": {"arch": s["student"],
                          "preset": s.get("student_preset")}, "train": {"steps": s.get("steps")},
                          "method": {"rec": s.get("reconstruction") or "l1"}}
            self._setting = {key: json.dumps(value, sort_keys=True) for key, value in _flatten(config).items()
                             if not _varied(key)}
        return self._setting

    @property
    def configuration(self) -> str:
        """Runs comparable with each other share it: the same setting (`setting`)."""
        return json.dumps(self.setting, sort_keys=True)

    def _config(self) -> dict[str, Any] | None:
        path = self.run_dir / "config.yaml"
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
        except (OSError, yaml.YAMLError):
            return None
        if not isinstance(config, dict):
            return None
        try:  # keys a later kdbench added read as their defaults, so older records still pair with newer runs
            from kd.config import from_dict, to_dict

            return to_dict(from_dict(config, str(path)))
        except (KdError, TypeError, ValueError):
            return config

    def score(self, dataset: str, metric: str) -> float:
        value = (self.summary["datasets"].get(dataset) or {}).get(metric)
        return float(value) if value is not None else math.nan

    def metrics_log(self) -> list[dict[str, Any]]:
        """metrics.jsonl records, read once per report (curves, health and fit cost all use them); lines that are not
        a JSON object (cut short by a kill, damaged) are ignored."""
        if self._records is None:
            self._records = read_json_lines(self.run_dir / "metrics.jsonl")
        return self._records


@dataclass
class RunSet:
    runs: list[Run]
    tidy: pd.DataFrame
    warnings: list[str] = field(default_factory=list)  # for whoever reads the runs (folders, what to run again)
    unfinished: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # for the report's reader: runs left out of it, and why


def extension_note(summary: dict[str, Any]) -> str:
    """What a run extended from a shorter finished one (`train.steps` raised) is, for its reader."""
    base = summary["extends"]
    return (f"run {summary['run_id']} continues run {base['run_id']} from its step {base['steps']} to "
            f"{summary['steps']} steps (train.steps raised): not a {summary['steps']}-step run trained from scratch")


def scan_runs(runs_dirs: str | Path | Sequence[str | Path]) -> RunSet:
    """Every finished run under one runs folder or several (a local `runs/` beside the records a committed report
    keeps); a run id found twice is taken from the first folder given. Raises `KdError` saying what is missing when
    there is none."""
    folders = [Path(runs_dirs)] if isinstance(runs_dirs, (str, Path)) else [Path(p) for p in runs_dirs]
    runs, warnings, unreadable, unfinished, seen = [], [], [], [], {}
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
                run = Run(run_dir, read_summary(run_dir / "summary.json"))
            except (OSError, ValueError, TypeError, KeyError) as exc:
                unreadable.append(f"run {run_dir.name} is left out: its summary.json could not be read ({exc})")
                continue
            if run.run_id in seen:
                duplicates.setdefault((seen[run.run_id], runs_dir), []).append(run.run_id)
                continue
            seen[run.run_id] = runs_dir
            runs.append(run)
    for (first, later), ids in duplicates.items():
        warnings.append(f"{len(ids)} run(s) are both in {first} and in {later}, read from {first}: {', '.join(ids)}")
    unfinished = [name for name in unfinished if name not in seen]
    notes = [*unreadable, *(extension_note(run.summary) for run in runs if run.summary.get("extends"))]
    where = " and ".join(f"'{p}'" for p in folders)
    if unfinished:
        notes.append(f"{len(unfinished)} unfinished run(s) are left out: {', '.join(unfinished)}")
        warnings.append("run the same kdbench run command again to finish the unfinished runs")
    if not runs:
        what = (f"only unfinished runs ({', '.join(unfinished)}): finish them by running the same "
                "kdbench run command again" if unfinished else
                "no finished run that can be read" if unreadable else "no run folders with a summary.json")
        unread = (f"; {unreadable[0]}" + (f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else "")
                  if unreadable else "")
        raise KdError(f"runs directory {where} holds {what}{unread}. A report needs finished runs "
                      "(runs/<run-id>/summary.json), at least a no-KD run (--method none) and one KD method.")
    return RunSet(runs, tidy_frame(folders, runs, warnings), warnings, unfinished, notes)


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


def differences(runs: Sequence[Run], *, varied: bool = False) -> list[str]:
    """The configuration keys whose values differ between `runs` (`varied`: also the method's and the teacher's
    keys, seed, labels and execution keys excepted), as `key` names in config order."""
    flats = []
    for run in runs:
        config = run._config()
        flat = _flatten(config) if config is not None else dict(run.setting)
        flats.append({k: json.dumps(v, sort_keys=True) for k, v in flat.items()
                      if not _varied(k) or (varied and k.split(".")[0] in ("method", "teacher"))})
    keys = list(dict.fromkeys(k for flat in flats for k in flat))
    return [k for k in keys if len({flat.get(k) for flat in flats}) > 1]


def select_runs(runset: RunSet, filters: list[str]) -> RunSet:
    """The runs matching every `--filter KEY=VALUE` (as in `kdbench results`: run_id, name, tag, student, teacher,
    method, profile, seed, scale, steps), with the no-KD runs that pair with the kept KD runs (same configuration
    and seed): a report needs them for every Δ. Other no-KD runs are left out, unless only no-KD runs were asked
    for."""
    if not filters:
        return runset
    from kd.results.filters import filter_runs

    frame = pd.DataFrame([{"run_id": run.run_id, "name": run.labels["name"], "tags": ",".join(run.labels["tags"]),
                           "student": run.summary["student"], "teacher": run.teacher_info.get("arch") or "none",
                           "method": run.method, "profile": run.profile, "seed": run.seed, "scale": run.scale,
                           "steps": run.summary.get("steps")} for run in runset.runs])
    kept_ids = set(filter_runs(frame, filters)["run_id"])
    kept = [run for run in runset.runs if run.run_id in kept_ids]
    paired = {(run.configuration, run.seed) for run in kept if run.method != "none"}
    if paired:
        kept = [run for run in runset.runs if (run.method != "none" and run.run_id in kept_ids)
                or (run.method == "none" and (run.configuration, run.seed) in paired)]
    tidy = runset.tidy[runset.tidy["run_id"].isin({run.run_id for run in kept})].reset_index(drop=True)
    left_out = len(runset.runs) - len(kept)
    notes = [*runset.notes, f"--filter {' '.join(filters)}: {len(kept)} of {len(runset.runs)} runs are reported"
             + (f" ({left_out} left out)" if left_out else "")]
    return RunSet(kept, tidy, runset.warnings, runset.unfinished, notes)
