"""Training throughput (images/s) of the ASID student distilled from each teacher, with the accel options.

One `Trainer.train_step` per timed step (student forward+backward, teacher forward, method, optimizer step) on a
fixed batch on one device; images/s = batch x steps / seconds, after warm-up (and compilation) steps. On CUDA the
clock is synchronised around the timed block. Paper configuration by default (ASID, official teachers, batch 16,
LR patch 64, x4); `--teacher-preset mini` and a small batch make it a quick CPU check.

    .venv/bin/python benchmarks/bench_throughput.py --device cuda                     # fp32 eager
    .venv/bin/python benchmarks/bench_throughput.py --device cuda --precision bf16 --channels-last \\
        --teacher-dtype bf16 --json gpu.json
    .venv/bin/python benchmarks/bench_throughput.py --device cpu --teacher-preset mini --batch 2 --patch 32 --steps 3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import torch

from kd.config import AccelConfig, TrainConfig
from kd.engine import Trainer
from kd.engine.accel import plan_accel
from kd.engine.batches import FixedBatch
from kd.methods import create_method, get_method, loss_weights
from kd.models import create


def throughput(args: argparse.Namespace, teacher_name: str) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    lr = torch.rand(args.batch, 3, args.patch, args.patch, device=device)
    hr = torch.rand(args.batch, 3, args.patch * args.scale, args.patch * args.scale, device=device)
    teacher = create(teacher_name, args.scale, args.teacher_preset).to(device)
    student = create("asid", args.scale, "paper").to(device)
    method = create_method(args.method, student, teacher).to(device)
    accel = AccelConfig(precision=args.precision, teacher_dtype=args.teacher_dtype,
                        channels_last=args.channels_last, compile=args.compile)
    plan = plan_accel(accel, args.device, taps=get_method(args.method).taps_features)
    plan.network(student)
    plan.network(teacher, frozen_teacher=True)
    recipe = TrainConfig(steps=10**9, batch_size=args.batch, lr_patch=args.patch, optimizer="adamw", lr=1e-5)
    trainer = Trainer(recipe, student=student, teacher=teacher, method=method, weights=loss_weights(args.method),
                      batches=FixedBatch(lr, hr), holdout=FixedBatch(lr, hr), run_dir=tempfile.mkdtemp(),
                      seed=0, device=device, accel=plan)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        trainer.train_step(lr, hr)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    began = time.perf_counter()
    for _ in range(args.steps):
        trainer.train_step(lr, hr)
    sync()
    seconds = time.perf_counter() - began
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"teacher": teacher_name, "images_per_s": args.batch * args.steps / seconds,
            "step_s": seconds / args.steps, "peak_gib": peak, "warnings": plan.warnings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--teachers", default="rcan,han,swinir")
    parser.add_argument("--teacher-preset", default="paper")
    parser.add_argument("--method", default="logits")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=64, help="LR patch side")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--teacher-dtype", default="fp32", choices=("fp32", "bf16", "fp16", "auto"))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", default="", help="torch.compile backend (methods without taps only)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    print(f"ASID x{args.scale} <- teachers ({args.teacher_preset}) · method {args.method} · batch {args.batch} · "
          f"LR {args.patch}px · {args.precision} · teacher {args.teacher_dtype} · channels_last "
          f"{args.channels_last} · compile {args.compile or 'off'} · {device_name} · torch {torch.__version__}")
    results = []
    for name in args.teachers.split(","):
        result = throughput(args, name)
        results.append(result)
        peak = f"{result['peak_gib']:.1f} GiB peak" if result["peak_gib"] is not None else ""
        print(f"{name:8s} {result['images_per_s']:9.1f} images/s {result['step_s']:8.3f} s/step {peak}", flush=True)
        for warning in result["warnings"]:
            print(f"  warning: {warning}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"setup": vars(args), "device": device_name, "torch": torch.__version__, "results": results},
                      handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
