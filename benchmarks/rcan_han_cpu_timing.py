"""CPU step times of kdbench RCAN and HAN (protocol of ARCHITECTURES.md section 10).

    .venv/bin/python benchmarks/rcan_han_cpu_timing.py                      # paper RCAN and HAN, x4
    .venv/bin/python benchmarks/rcan_han_cpu_timing.py --models rcan:mini han:mini rcan-small

Batch 4 (--batch), 48x48 LR (--size), 2 threads. fwd: eval mode under no_grad (a frozen teacher's cost);
fwd+bwd: train mode, forward + L1 loss + backward, no optimizer step. One warm-up, then median / min over --reps;
on a shared machine the minimum is the best estimate of an uncontended step. `rcan-small` is the 2 x 4 x 32
RCAN of the reference timings.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from kd.models import create

RCAN_SMALL = {"n_resgroups": 2, "n_resblocks": 4, "n_feats": 32, "reduction": 16}


def build(spec: str, scale: int) -> torch.nn.Module:
    if spec == "rcan-small":
        return create("rcan", scale, **RCAN_SMALL)
    arch, _, preset = spec.partition(":")
    return create(arch, scale, preset=preset or "paper")


def time_step(step, reps: int) -> tuple[float, float]:
    step()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["rcan", "han"], help="arch[:preset] or rcan-small")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--size", type=int, default=48, help="LR patch side")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size)
    target = torch.rand(args.batch, 3, args.size * args.scale, args.size * args.scale)
    print(f"batch {args.batch}, {args.size}x{args.size} LR, x{args.scale}, {args.threads} threads; "
          "seconds per step, median / min")
    for spec in args.models:
        model = build(spec, args.scale)

        def forward() -> None:
            with torch.no_grad():
                model(x)

        def forward_backward() -> None:
            model.zero_grad(set_to_none=True)
            F.l1_loss(model(x), target).backward()

        model.eval()
        fwd = time_step(forward, args.reps)
        model.train()
        fwd_bwd = time_step(forward_backward, args.reps)
        params = sum(p.numel() for p in model.parameters())
        print(f"{spec:12s} {params:>11,d} params  fwd {fwd[0]:.3f} / {fwd[1]:.3f}  "
              f"fwd+bwd {fwd_bwd[0]:.3f} / {fwd_bwd[1]:.3f}", flush=True)


if __name__ == "__main__":
    main()
