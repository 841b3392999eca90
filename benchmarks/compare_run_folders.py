"""Paired comparison of two folders of finished runs that differ in one setting (e.g. bf16 student autocast).

Runs are paired by (student, method, teacher, scale, seed); for every dataset the script prints the mean PSNR-Y
difference B - A with its 95 % t-interval over the pairs, and the median ratios of the logged step times and of the
training wall times (the step times ignore validation and any time a job spent stopped). Used for the bf16
student question (README, "Fast paths"):

    kdbench sweep --profile cpu --teachers rcan --methods logits --seeds 0,1,2 --out-dir runs/fp32 ...
    kdbench sweep --profile cpu --teachers rcan --methods logits --seeds 0,1,2 --out-dir runs/bf16 \\
        --set accel.precision=bf16 ...
    .venv/bin/python benchmarks/compare_run_folders.py runs/fp32 runs/bf16 --json bf16_student.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from kd.errors import KdError
from kd.report.runs import scan_runs
from kd.stats import paired_delta
from kd.results.sweep import median_step_seconds


def _key(run) -> tuple:
    return (run.profile, run.student, run.method, run.teacher, run.scale)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None  # JSON has no NaN


def _median_ratio(pairs: list[tuple[float | None, float | None]]) -> float | None:
    ratios = [b / a for a, b in pairs if a and b]
    return statistics.median(ratios) if ratios else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="reference runs folder")
    parser.add_argument("b", type=Path, help="runs folder with the changed setting")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    try:
        a_runs, b_runs = scan_runs(args.a).runs, scan_runs(args.b).runs
    except KdError as exc:
        raise SystemExit(str(exc)) from None
    figures = []
    for key in sorted({_key(r) for r in a_runs} & {_key(r) for r in b_runs}, key=str):
        a = {r.seed: r for r in a_runs if _key(r) == key}
        b = {r.seed: r for r in b_runs if _key(r) == key}
        seeds = sorted(set(a) & set(b))
        if not seeds:
            continue
        datasets = [d for d in a[seeds[0]].summary["datasets"] if d in b[seeds[0]].summary["datasets"]]
        wall = _median_ratio([(a[s].summary.get("train_seconds"), b[s].summary.get("train_seconds")) for s in seeds])
        step = _median_ratio([(median_step_seconds(a[s].run_dir / "metrics.jsonl"),
                              median_step_seconds(b[s].run_dir / "metrics.jsonl")) for s in seeds])
        for dataset in datasets:
            delta = paired_delta({s: b[s].score(dataset, "psnr_y") for s in seeds},
                                 {s: a[s].score(dataset, "psnr_y") for s in seeds})
            row = {"profile": key[0], "student": key[1], "method": key[2], "teacher": key[3], "scale": key[4],
                   "dataset": dataset, "seeds": seeds, "delta_psnr": _finite(delta.mean), "low": _finite(delta.low),
                   "high": _finite(delta.high),
                   "step_time_ratio_median": step, "train_time_ratio_median": wall}
            figures.append(row)
            interval = f"[{delta.low:+.3f}, {delta.high:+.3f}]" if delta.has_interval else "(no interval)"
            ratio = "".join(f", {label} B/A {value:.2f}" for label, value in (("step time", step),
                                                                              ("training wall time", wall)) if value)
            print(f"{key[2]} from {key[3]}, {dataset} x{key[4]}: B - A = {delta.mean:+.3f} dB {interval} over "
                  f"{len(seeds)} paired seed(s){ratio}")
    if not figures:
        raise SystemExit(f"no run of {args.a} pairs with a run of {args.b} (same profile, student, method, teacher, "
                         "scale and seed)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
