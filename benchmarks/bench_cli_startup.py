"""Wall time of `kdbench --help` (building the whole parser), as a user would start it.

    .venv/bin/python benchmarks/bench_cli_startup.py              # 9 runs
    .venv/bin/python benchmarks/bench_cli_startup.py --runs 21 --command "list methods"

Each run is a fresh `python -m kd ...` subprocess (so nothing is cached in the interpreter). Prints the median and
minimum of N runs, beside the same figures for a bare `python -c pass`: on a shared machine the minimum is the best
estimate of an uncontended start, and the bare interpreter shows how much of it is Python itself. The target is
under 0.5 s; building the parser must not import torch, pandas, scipy or matplotlib (tests/test_cli_startup.py).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def wall_times(argv: list[str], runs: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - began)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="subprocess runs per command (default 9)")
    parser.add_argument("--command", default="--help", help="kdbench arguments to time (default --help)")
    args = parser.parse_args()
    kdbench = [sys.executable, "-m", "kd", *shlex.split(args.command)]
    for label, argv in (("python -c pass", [sys.executable, "-c", "pass"]), (f"kdbench {args.command}", kdbench)):
        times = wall_times(argv, args.runs)
        print(f"{label:28s} median {statistics.median(times):.3f} s   min {min(times):.3f} s   ({args.runs} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
