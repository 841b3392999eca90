"""The cpu profile's frozen-teacher fast path (`accel.teacher_dtype=auto`) against fp32, side by side (CPU).

Per mini teacher: the forward pass in fp32 and as `auto` plans it on this machine (bf16 + channels_last where the
CPU computes bf16 natively); then a whole `logits` training step of ASID from RCAN mini with either teacher.
Alternating order per repeat, paired per-repeat ratios auto / fp32 (median and interquartile range), as in
`bench_step.py`.

    .venv/bin/python benchmarks/bench_teacher_dtype.py --threads 1 --repeats 10
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import torch

from bench_step import measure, paired_ratios  # noqa: E402 - this script's folder is on sys.path
from kd.config import AccelConfig, TrainConfig
from kd.engine import Trainer
from kd.engine.accel import native_bf16, plan_accel
from kd.engine.batches import FixedBatch
from kd.methods import create_method, loss_weights
from kd.models import create


def _line(name: str, times: dict[str, list[float]]) -> str:
    ratio = paired_ratios(times, "fp32")["auto"]
    medians = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return (f"{name:34s} fp32 {medians['fp32']:.3f} s  auto {medians['auto']:.3f} s  auto/fp32 median "
            f"{ratio['median']:.3f} (IQR {ratio['q1']:.3f}-{ratio['q3']:.3f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", type=int, default=48, help="LR patch side")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lr = torch.rand(args.batch, 3, args.patch, args.patch)
    hr = torch.rand(args.batch, 3, args.patch * 4, args.patch * 4)
    auto = plan_accel(AccelConfig(teacher_dtype="auto"), "cpu")
    print(f"native bf16: {native_bf16('cpu')}; auto runs the teacher in {auto.teacher_dtype}, channels_last "
          f"{auto.teacher_channels_last}; {args.threads} thread(s), batch {args.batch}, LR {args.patch}px, x4")
    for arch in ("rcan", "han", "swinir"):
        fp32 = create(arch, 4, "mini").eval()
        fast = create(arch, 4, "mini").eval()
        fast.load_state_dict(fp32.state_dict())
        auto.network(fast, frozen_teacher=True)
        with torch.no_grad():
            times = measure({"fp32": lambda: fp32(lr), "auto": lambda: fast(auto.teacher_input(lr))},
                            args.repeats, warmup=1)
        print(_line(f"{arch} mini teacher forward", times))
    steps = {}
    for dtype in ("fp32", "auto"):
        torch.manual_seed(0)
        student, teacher = create("asid", 4, "paper"), create("rcan", 4, "mini")
        plan = plan_accel(AccelConfig(teacher_dtype=dtype), "cpu")
        plan.network(student)
        plan.network(teacher, frozen_teacher=True)
        run_dir = tempfile.TemporaryDirectory(prefix="kdbench-bench-")
        trainer = Trainer(TrainConfig(steps=10**9, batch_size=args.batch, lr_patch=args.patch, optimizer="adamw",
                                      lr=5e-4), student=student, teacher=teacher,
                          method=create_method("logits", student, teacher), weights=loss_weights("logits"),
                          batches=FixedBatch(lr, hr), run_dir=run_dir.name, seed=0, accel=plan)
        steps[dtype] = (run_dir, trainer)
    times = measure({k: (lambda t=t: t.train_step(lr, hr)) for k, (_, t) in steps.items()}, args.repeats, warmup=1)
    print(_line("train step ASID <- RCAN mini, logits", times))
    for run_dir, _ in steps.values():
        run_dir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
