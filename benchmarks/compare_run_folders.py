"""Paired comparison of two folders of finished runs that differ in one setting (e.g. bf16 student autocast).

Runs are paired by (student, method, teacher, scale, seed); for every dataset the script prints the mean PSNR-Y
difference B - A with its 95 % t-interval over the pairs, and the ratio of training wall times. Used for the bf16
student question (README, "Fast paths"):

    kdbench sweep --profile cpu --teachers rcan --methods logits --seeds 0,1,2 --out-dir runs/fp32 ...
    kdbench sweep --profile cpu --teachers rcan --methods logits --seeds 0,1,2 --out-dir runs/bf16 \\
        --set accel.precision=bf16 ...
    .venv/bin/python benchmarks/compare_run_folders.py runs/fp32 runs/bf16 --json bf16_student.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from kd.report.runs import scan_runs
from kd.report.stats import paired_delta


def _key(run) -> tuple:
    return (run.student, run.method, run.teacher, run.scale)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="reference runs folder")
    parser.add_argument("b", type=Path, help="runs folder with the changed setting")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    a_runs, b_runs = scan_runs(args.a).runs, scan_runs(args.b).runs
    figures = []
    for key in sorted({_key(r) for r in a_runs} & {_key(r) for r in b_runs}, key=str):
        a = {r.seed: r for r in a_runs if _key(r) == key}
        b = {r.seed: r for r in b_runs if _key(r) == key}
        seeds = sorted(set(a) & set(b))
        datasets = [d for d in a[seeds[0]].summary["datasets"] if d in b[seeds[0]].summary["datasets"]]
        times = [b[s].summary["train_seconds"] / a[s].summary["train_seconds"] for s in seeds
                 if a[s].summary.get("train_seconds") and b[s].summary.get("train_seconds")]
        for dataset in datasets:
            delta = paired_delta({s: b[s].score(dataset, "psnr_y") for s in seeds},
                                 {s: a[s].score(dataset, "psnr_y") for s in seeds})
            row = {"student": key[0], "method": key[1], "teacher": key[2], "scale": key[3], "dataset": dataset,
                   "seeds": seeds, "delta_psnr": delta.mean, "low": delta.low, "high": delta.high,
                   "train_time_ratio_median": statistics.median(times) if times else None}
            figures.append(row)
            interval = f"[{delta.low:+.3f}, {delta.high:+.3f}]" if delta.has_interval else "(no interval)"
            ratio = f", training time B/A {row['train_time_ratio_median']:.2f}" if times else ""
            print(f"{key[1]} from {key[2]}, {dataset} x{key[3]}: B - A = {delta.mean:+.3f} dB {interval} over "
                  f"{len(seeds)} paired seed(s){ratio}")
    if not figures:
        raise SystemExit(f"no run of {args.a} pairs with a run of {args.b} (same student, method, teacher, scale)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
