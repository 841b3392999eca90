"""CPU step times, parameters and MACs of every registered network (ARCHITECTURES.md section 10 protocol).

    .venv/bin/python benchmarks/bench_models.py                      # all networks, paper + mini, x4
    .venv/bin/python benchmarks/bench_models.py --models asid,rcan --presets paper --repeats 5
    .venv/bin/python benchmarks/bench_models.py --models asid,san --presets paper --threads 1 --clock cpu

For each network and preset: seconds per step at batch 4, 48x48 LR, x4, with 2 threads; `fwd` is eval mode under
no_grad (a frozen teacher's cost), `fwd+bwd` is train mode, forward + L1 loss + backward, no optimizer step. One
warm-up, then the median and minimum of N steps (on a shared machine the minimum is the best estimate of an
uncontended step). `--clock cpu` times with `time.process_time` instead (with `--threads 1`, the CPU a step needs
whatever else the machine runs: the figures of kd/results/sweep.py's networks beyond section 10 are ratios of such
times to ASID's). Also parameters, MACs per 48x48 LR patch and MACs for a 1280x720 output. Prints a Markdown
table; for ASID it adds the ratio to the official code's figures (0.31 s fwd, 0.57 s fwd+bwd, section 10).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kd.errors import KdError
from kd.metrics.cost import count_macs, count_parameters, macs_for_output
from kd.models import create, get_entry, list_entries, probe_inputs

# Official ASID x4, batch 4, 48x48, 2 threads: minimum seconds per step (ARCHITECTURES.md section 10, pass 2).
OFFICIAL_ASID_SECONDS = {"fwd": 0.31, "fwd+bwd": 0.57}


@dataclass
class BenchResult:
    arch: str
    preset: str
    params: int
    macs_patch: int
    macs_hd: int
    fwd: list[float]
    fwd_bwd: list[float]


def time_steps(step: Callable[[], None], repeats: int,
               clock: Callable[[], float] = time.perf_counter) -> list[float]:
    step()  # warm-up: allocator, one-off kernel selection, lazy buffers
    times = []
    for _ in range(repeats):
        start = clock()
        step()
        times.append(clock() - start)
    return times


def bench_network(arch: str, preset: str, *, scale: int, batch: int, lr_size: int, repeats: int,
                  backward: bool, clock: Callable[[], float] = time.perf_counter) -> BenchResult:
    torch.manual_seed(0)
    model = create(arch, scale, preset=preset)
    lr = torch.rand(batch, 3, lr_size, lr_size)
    hr = torch.rand(batch, 3, lr_size * scale, lr_size * scale)
    inputs = probe_inputs(model, lr)  # (lr,), or (lr, HR) for a network whose forward needs the HR

    def forward() -> None:
        with torch.no_grad():
            model(*inputs)

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        F.l1_loss(model(*inputs), hr).backward()

    model.eval()
    fwd = time_steps(forward, repeats, clock)
    model.train()
    fwd_bwd = time_steps(forward_backward, repeats, clock) if backward else []
    model.eval()
    return BenchResult(arch, preset, count_parameters(model), count_macs(model, (lr_size, lr_size)),
                       macs_for_output(model, scale), fwd, fwd_bwd)


def _seconds(times: list[float]) -> str:
    return f"{statistics.median(times):.3f} / {min(times):.3f}" if times else "-"


def markdown_table(results: list[BenchResult], lr_size: int) -> str:
    lines = [
        f"| network | preset | params | MACs {lr_size}² | MACs 1280×720 | fwd s (median / min) | "
        "fwd+bwd s (median / min) | vs official ASID (min) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        ratio = "-"
        if r.arch == "asid" and r.preset == "paper":
            parts = [f"fwd {min(r.fwd) / OFFICIAL_ASID_SECONDS['fwd']:.2f}×"]
            if r.fwd_bwd:
                parts.append(f"fwd+bwd {min(r.fwd_bwd) / OFFICIAL_ASID_SECONDS['fwd+bwd']:.2f}×")
            ratio = ", ".join(parts)
        lines.append(
            f"| {r.arch} | {r.preset} | {r.params:,} | {r.macs_patch / 1e9:.2f} G | {r.macs_hd / 1e9:.1f} G | "
            f"{_seconds(r.fwd)} | {_seconds(r.fwd_bwd)} | {ratio} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="comma-separated networks (default: every registered student/teacher)")
    parser.add_argument("--presets", default="paper,mini", help="comma-separated presets (default paper,mini)")
    parser.add_argument("--repeats", "-n", type=int, default=5, help="timed steps after the warm-up (default 5)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr-size", type=int, default=48, help="LR patch side (default 48)")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--no-backward", action="store_true", help="time the forward pass only")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall (default) or cpu: process time, for a loaded machine (use with --threads 1)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.batch < 1 or args.lr_size < 1 or args.threads < 1:
        parser.error("--repeats, --batch, --lr-size and --threads must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        if args.models:
            archs = [get_entry(name.strip()).arch for name in args.models.split(",") if name.strip()]
        else:
            archs = [e.arch for e in list_entries() if e.role != "baseline"]
        presets = [p.strip() for p in args.presets.split(",") if p.strip()]
        results = []
        for arch in archs:
            for preset in presets:
                if preset not in get_entry(arch).presets:
                    print(f"skipping {arch}/{preset}: no such preset", file=sys.stderr)
                    continue
                print(f"timing {arch}/{preset} ...", file=sys.stderr, flush=True)
                results.append(bench_network(arch, preset, scale=args.scale, batch=args.batch,
                                             lr_size=args.lr_size, repeats=args.repeats,
                                             backward=not args.no_backward,
                                             clock=time.process_time if args.clock == "cpu" else time.perf_counter))
    except KdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\nbatch {args.batch}, {args.lr_size}×{args.lr_size} LR, x{args.scale}, {args.threads} threads, "
          f"torch {torch.__version__}, {args.repeats} timed steps after one warm-up, {args.clock} clock\n")
    print(markdown_table(results, args.lr_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
