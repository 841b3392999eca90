"""Peak memory and time of FAKD's affinity loss (forward + backward, one tap) by row-block size.

    .venv/bin/python benchmarks/bench_fakd_affinity.py [--batch 16] [--size 48] [--chunks 2304,1024,256]

Each block size runs in a fresh process, so the peak RSS growth is that of one loss computation.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import torch


def measure(batch: int, size: int, chunk: int) -> str:
    from kd.methods.fakd import affinity_l1

    torch.manual_seed(0)
    torch.set_num_threads(1)
    student = torch.randn(batch, 48, size, size, requires_grad=True)
    teacher = torch.randn(batch, 64, size, size)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    affinity_l1(student, teacher, chunk).backward()
    seconds = time.perf_counter() - start
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    return f"chunk_rows {chunk:>5}: {grown:7.0f} MiB peak RSS growth, {seconds:5.1f} s (1 thread)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=48, help="LR feature map side")
    parser.add_argument("--chunks", default="2304,1024,256")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(measure(args.batch, args.size, args.one))
        return
    print(f"batch {args.batch}, {args.size}x{args.size} maps ({(args.size ** 2) ** 2:,} affinities per sample)")
    for chunk in (int(c) for c in args.chunks.split(",")):
        subprocess.run([sys.executable, __file__, "--batch", str(args.batch), "--size", str(args.size),
                        "--one", str(chunk)], check=True)


if __name__ == "__main__":
    main()
