"""CPU step times of kdbench SwinIR (same protocol as ARCHITECTURES.md section 10).

    .venv/bin/python benchmarks/swinir_cpu_timing.py --arch swinir --preset paper --scale 4 --size 48 --batch 4

fwd: eval mode under no_grad (a frozen teacher's cost). fwd+bwd: train mode, forward + L1 loss + backward, no
optimizer step. One warm-up, then median and minimum over --reps; on a shared machine the minimum is the best
estimate of an uncontended step; process CPU time (all threads) is reported too, since it suffers less from
other jobs taking the cores (with 2 threads an uncontended wall time is roughly CPU time / 2).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from kd.models import create


def _time(step, reps: int) -> tuple[float, float, float]:
    """(median wall, min wall, min process CPU time) in seconds per step."""
    step()
    walls, cpus = [], []
    for _ in range(reps):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    return statistics.median(walls), min(walls), min(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="swinir")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--size", type=int, default=48, help="LR patch side")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create(args.arch, args.scale, preset=args.preset)
    x = torch.rand(args.batch, 3, args.size, args.size)
    target = torch.rand(args.batch, 3, args.size * args.scale, args.size * args.scale)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        F.l1_loss(model(x), target).backward()

    model.eval()
    fwd = _time(forward, args.reps)
    model.train()
    fwd_bwd = _time(forward_backward, args.reps)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"{args.arch}/{args.preset} x{args.scale} ({params:,} params), batch {args.batch}, {args.size}x{args.size} LR, "
        f"{args.threads} threads, {args.reps} reps: fwd {fwd[0]:.3f} / {fwd[1]:.3f} s (cpu {fwd[2]:.3f} s), "
        f"fwd+bwd {fwd_bwd[0]:.3f} / {fwd_bwd[1]:.3f} s (cpu {fwd_bwd[2]:.3f} s) (wall median / min; process CPU min)"
    )


if __name__ == "__main__":
    main()
