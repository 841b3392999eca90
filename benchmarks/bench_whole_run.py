"""Wall time of one whole cpu-profile distillation run, an older commit against this tree, side by side.

The older commit is checked out with `git worktree` into a temporary folder (removed on exit). Both checkouts run
the same command in a subprocess with this interpreter, each with its own source tree first on PYTHONPATH:

    kdbench run --profile cpu --student asid --teacher rcan --teacher-preset mini --teacher-ckpt FILE
                --method logits --seed 0 --threads T --no-progress --out-dir <temporary folder>

so both distil from the same teacher file (no teacher training inside the timing) and each times what its own
profile does: training, periodic validation and the final evaluation (Set5/Set14/B100 with LPIPS). Per thread
count the repeats alternate the order (old first on even repeats); the figure is the median of the per-repeat
ratios new / old. The runs' folders are temporary and removed on exit; the caches under $KDBENCH_CACHE (data
fingerprints, generated LR images, LPIPS weights) are shared, so warm them with one run before timing.

    .venv/bin/python benchmarks/bench_whole_run.py --old 94187ff --data-root ../shared/data \\
        --teacher-ckpt ~/.cache/kdbench/teachers/<rcan mini key>/teacher.pt --threads 1,2 --json whole_run.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_once(source: Path, args: argparse.Namespace, threads: int, out_dir: Path) -> float:
    """Seconds from start to exit of one `kdbench run` from `source`; raises when the run fails."""
    command = [sys.executable, "-m", "kd", "run", "--profile", "cpu", "--student", "asid", "--teacher", "rcan",
               "--teacher-preset", "mini", "--teacher-ckpt", str(args.teacher_ckpt), "--method", args.method,
               "--seed", "0", "--threads", str(threads), "--no-progress", "--out-dir", str(out_dir),
               "--data-root", str(args.data_root), *(f"--set={item}" for item in args.set)]
    env = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=source, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"run from {source} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="the older commit (e.g. the one an issue was filed against)")
    parser.add_argument("--teacher-ckpt", type=Path, required=True, help="RCAN mini teacher weights used by both")
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--method", default="logits")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--repeats", type=int, default=1, help="old/new pairs per thread count")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for both (e.g. train.steps=200 for a quick check)")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    if not args.teacher_ckpt.is_file():
        parser.error(f"--teacher-ckpt {args.teacher_ckpt}: no such file")
    args.teacher_ckpt, args.data_root = args.teacher_ckpt.resolve(), args.data_root.resolve()

    scratch = Path(tempfile.mkdtemp(prefix="kdbench-whole-run-"))
    old_tree = scratch / "old"
    try:
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old_tree), args.old], check=True,
                       capture_output=True)
        figures: dict[str, dict] = {}
        for threads in (int(t) for t in args.threads.split(",")):
            times: dict[str, list[float]] = {"old": [], "new": []}
            for repeat in range(args.repeats):
                order = ("old", "new") if repeat % 2 == 0 else ("new", "old")
                for name in order:
                    out_dir = scratch / f"runs-{name}-{threads}-{repeat}"
                    seconds = run_once(old_tree if name == "old" else REPO, args, threads, out_dir)
                    shutil.rmtree(out_dir, ignore_errors=True)
                    times[name].append(seconds)
                    print(f"threads {threads} repeat {repeat} {name}: {seconds:.1f} s", flush=True)
            ratios = [new / old for new, old in zip(times["new"], times["old"])]
            figures[str(threads)] = {"old_s": times["old"], "new_s": times["new"],
                                     "new_over_old_median": statistics.median(ratios)}
            print(f"threads {threads}: new/old median {statistics.median(ratios):.3f} "
                  f"(old {statistics.median(times['old']):.0f} s, new {statistics.median(times['new']):.0f} s)")
        if args.json:
            Path(args.json).write_text(json.dumps({"old": args.old, "method": args.method, "overrides": args.set,
                                                   "figures": figures}, indent=2) + "\n", encoding="utf-8")
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old_tree)], capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
