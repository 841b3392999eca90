"""Load every run directory under a runs root into one tidy DataFrame.

One row per run x dataset x scale x metric (metric in `METRICS`), with the run's identity and cost beside it:

    df = load_runs("runs")
    df[(df.metric == "psnr_y") & (df.dataset == "Set5")].groupby(["teacher", "method"]).value.mean()

Conventions:
* `teacher` is the string "none" for a run without a teacher (method `none`), so group-bys keep the baseline.
* `name` and `tags` are the run's labels (`kdbench run --name/--tag`): the name or None, the tags joined by commas
  ("" without any).
* A metric that was not measured (LPIPS switched off) has no row: `value` is always a number.
* A finished run is one with `summary.json` (written last by `kd.engine.run`). With `include_unfinished=True`,
  unfinished runs are read from `config.yaml` (and `eval/per_dataset.csv` when the evaluation got that far);
  one without any evaluation yet gives a single row with `dataset`, `metric` and `value` missing.
* A run whose files cannot be read (a half-written JSON, a hand-edited YAML) is skipped with a
  `CorruptRunWarning` naming it; it never stops the others from loading.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from kd.errors import KdError
from kd.fileio import check_child_name, read_json_lines

METRICS = ("psnr_y", "ssim_y", "lpips")
COLUMNS = [
    "run_id", "run_dir", "name", "tags", "student", "teacher", "method", "profile", "seed", "scale", "dataset",
    "metric", "value", "params", "macs", "train_seconds", "steps", "commit", "finished",
]
NO_TEACHER = "none"


class CorruptRunWarning(UserWarning):
    """A run directory that could not be read; it was left out of the results."""


# What a finished run's summary.json holds for every reader (`kdbench run` shows steps and seconds too).
SUMMARY_KEYS = ("run_id", "student", "method", "scale", "seed", "datasets")
RUN_SUMMARY_KEYS = (*SUMMARY_KEYS, "steps", "train_seconds")


def read_summary(path: Path, keys: tuple[str, ...] = SUMMARY_KEYS) -> dict[str, Any]:
    """A run's summary.json, checked to hold `keys` with values of the right kind, a run id that names one folder
    (`check_child_name`) and a score per dataset; anything else (not UTF-8, not JSON, a field missing or of another
    type, a run id such as `../x`) raises ValueError saying what."""
    summary = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(summary, dict):
        raise ValueError("not a JSON object")
    missing = [key for key in keys if key not in summary]
    if missing:
        raise ValueError(f"it lacks {', '.join(missing)}")
    try:
        for key in ("run_id", "student", "method"):
            if key in summary and not isinstance(summary[key], str):
                raise TypeError(f"{key} is {summary[key]!r}")
        if "run_id" in summary:  # a report writes the run's records into a folder of that name
            check_child_name(summary["run_id"], "run_id")
        for key, kind in (("scale", int), ("seed", int), ("steps", int), ("train_seconds", float)):
            value = summary.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or kind(value) != value:
                raise TypeError(f"{key} is {value!r}")
        datasets = summary["datasets"]
        if not isinstance(datasets, dict) or not datasets:
            raise TypeError("it holds no dataset scores")
        for dataset, scores in datasets.items():
            if not isinstance(scores, dict) or "psnr_y" not in scores:
                raise TypeError(f"no PSNR for {dataset}")
            for metric in METRICS:
                _number(scores.get(metric))  # a number, or null where it was not finite or not measured
        if not isinstance(summary.get("teacher") or {}, dict):
            raise TypeError(f"teacher is {summary['teacher']!r}")
    except (TypeError, ValueError, KdError) as exc:
        raise ValueError(str(exc)) from None
    return summary


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _commit(run_dir: Path) -> str | None:
    path = run_dir / "environment.json"
    if not path.is_file():
        return None
    try:
        return (_read_json(path).get("git") or {}).get("commit")
    except (ValueError, AttributeError, OSError):
        return None  # the commit is provenance only; a damaged environment file does not void the scores


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _metric_rows(base: dict[str, Any], scores: dict[str, dict[str, Any]], scale: int) -> list[dict[str, Any]]:
    rows = []
    for dataset, values in scores.items():
        for metric in METRICS:
            value = _number(values.get(metric))
            if value is not None:
                rows.append({**base, "dataset": dataset, "scale": scale, "metric": metric, "value": value})
    return rows


def _labels(label: Any) -> dict[str, Any]:
    label = label if isinstance(label, dict) else {}
    return {"name": label.get("name") or None, "tags": ",".join(str(tag) for tag in label.get("tags") or [])}


def _finished_rows(run_dir: Path) -> list[dict[str, Any]]:
    summary = read_summary(run_dir / "summary.json")
    teacher = summary.get("teacher") or {}
    base = {
        "run_id": summary.get("run_id", run_dir.name),
        "run_dir": str(run_dir),
        **_labels(summary.get("label")),
        "student": summary["student"],
        "teacher": teacher.get("arch") or NO_TEACHER,
        "method": summary["method"],
        "profile": summary.get("profile"),
        "seed": int(summary["seed"]),
        "params": summary.get("params"),
        "macs": summary.get("macs_1280x720"),
        "train_seconds": _number(summary.get("train_seconds")),
        "steps": summary.get("steps"),
        "commit": _commit(run_dir),
        "finished": True,
    }
    return _metric_rows(base, summary["datasets"], int(summary["scale"]))


def last_step(run_dir: Path) -> int | None:
    """The last step metrics.jsonl records (None without the file)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    step = 0
    for record in read_json_lines(path):
        try:
            step = max(step, int(record.get("step", 0)))
        except (TypeError, ValueError):
            continue
    return step


def _needs_teacher(method: str) -> bool:
    if method == "none":
        return False
    try:
        from kd.methods import get_method

        return get_method(method).needs_teacher
    except KdError:  # a method that is no longer registered: trust the recorded teacher
        return True


def _unfinished_rows(run_dir: Path) -> list[dict[str, Any]]:
    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise ValueError("config.yaml is not a mapping")
    method = config["method"]["name"]
    teacher = (config.get("teacher") or {}).get("arch")
    base = {
        "run_id": run_dir.name,
        "run_dir": str(run_dir),
        **_labels(config.get("label")),
        "student": config["student"]["arch"],
        "teacher": teacher if teacher and _needs_teacher(method) else NO_TEACHER,
        "method": method,
        "profile": config.get("profile"),
        "seed": int(config.get("seed", 0)),
        "params": None,
        "macs": None,
        "train_seconds": None,
        "steps": last_step(run_dir),
        "commit": _commit(run_dir),
        "finished": False,
    }
    scale = int(config.get("scale", 0))
    per_dataset = run_dir / "eval" / "per_dataset.csv"
    if per_dataset.is_file():
        table = pd.read_csv(per_dataset)
        scores = {str(row["dataset"]): row for row in table.to_dict("records")}
        rows = _metric_rows(base, scores, scale)
        if rows:
            return rows
    return [{**base, "scale": scale, "dataset": None, "metric": None, "value": None}]


def _run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and ((p / "summary.json").is_file()
                                                                or (p / "config.yaml").is_file()))


def load_runs(runs_dir: str | Path, *, include_unfinished: bool = False) -> pd.DataFrame:
    """Every run under `runs_dir` as a tidy frame with columns `COLUMNS` (see the module docstring)."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise KdError(
            f"runs directory '{root}' does not exist; run `kdbench run` or `kdbench sweep` first, "
            "or point --runs at the folder that holds the run directories."
        )
    run_dirs = _run_dirs(root)
    if not run_dirs:
        raise KdError(
            f"runs directory '{root}' holds no runs (no <run-id>/summary.json or config.yaml); run `kdbench run` "
            "or `kdbench sweep` first, or point --runs at the folder that holds the run directories."
        )
    rows: list[dict[str, Any]] = []
    unfinished = []
    for run_dir in run_dirs:
        finished = (run_dir / "summary.json").is_file()
        if not finished and not include_unfinished:
            unfinished.append(run_dir.name)
            continue
        try:
            rows.extend(_finished_rows(run_dir) if finished else _unfinished_rows(run_dir))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError,
                pd.errors.ParserError) as exc:  # JSONDecodeError is a ValueError
            which = "summary.json" if finished else "config.yaml / eval"
            warnings.warn(
                f"skipping run '{run_dir}': its {which} could not be read ({type(exc).__name__}: {exc}); "
                "re-run the same command to redo it, or delete the folder.",
                CorruptRunWarning,
                stacklevel=2,
            )
    if not rows:
        detail = (f"; {len(unfinished)} unfinished run(s) ({', '.join(unfinished[:3])}"
                  f"{', ...' if len(unfinished) > 3 else ''}) are left out unless unfinished runs are included"
                  if unfinished else "")
        raise KdError(f"runs directory '{root}' holds no readable finished runs{detail}.")
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["finished"] = frame["finished"].astype(bool)
    frame["seed"] = frame["seed"].astype(int)
    frame["scale"] = frame["scale"].astype(int)
    frame["value"] = frame["value"].astype(float)
    for column in ("params", "macs", "steps"):
        frame[column] = frame[column].astype("Int64")
    frame["train_seconds"] = frame["train_seconds"].astype(float)
    # Within a run the rows keep the run's own dataset order (Set5, Set14, B100), which tables follow.
    return frame.sort_values(["student", "teacher", "method", "scale", "seed", "run_id"],
                             kind="stable").reset_index(drop=True)
