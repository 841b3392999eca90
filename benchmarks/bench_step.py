"""Cost of one distillation training step against its unavoidable part, measured in the same process.

    baseline = student forward + backward (L1) + frozen teacher forward (no_grad)
    step     = Trainer.train_step of a method (taps, adapters, loss terms, backward, optimizer step)

    none+T   = Trainer.train_step of method `none` (the same step machinery without distillation) + teacher forward

Targets: `logits`, `fitnet` <= 1.10 x baseline (issue 4); `lsfd`, `facd`, `attention` <= 1.15 x none+T (issue 5).
Both ratios are printed for every method. Measurements are interleaved (references, then each method, per
repetition) so that load from other processes hits them alike; the minimum over repetitions is the best estimate
of an uncontended cost, the median is reported too. `attention` with a SwinIR teacher taps window maps (the
tapped blocks then compute attention explicitly instead of with the fused kernel): `--teacher swinir`.

    .venv/bin/python benchmarks/bench_step.py                       # ASID (paper) + RCAN mini, batch 4, LR 48, x4
    .venv/bin/python benchmarks/bench_step.py --teacher-preset tiny --repeats 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import torch
from torch.nn import functional as F

from kd.config import TrainConfig
from kd.engine import Trainer
from kd.engine.batches import FixedBatch
from kd.methods import create_method, loss_weights
from kd.models import create

TARGETS = {"logits": 1.10, "fitnet": 1.10, "lsfd": 1.15, "facd": 1.15, "attention": 1.15}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", default="asid")
    parser.add_argument("--student-preset", default=None)
    parser.add_argument("--teacher", default="rcan")
    parser.add_argument("--teacher-preset", default="mini")
    parser.add_argument("--methods", default="logits,fitnet,krnet,lsfd,facd,attention")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", type=int, default=48, help="LR patch side")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time, or this process's CPU time (less sensitive to other processes' load)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lr = torch.rand(args.batch, 3, args.patch, args.patch)
    hr = torch.rand(args.batch, 3, args.patch * args.scale, args.patch * args.scale)
    teacher = create(args.teacher, args.scale, args.teacher_preset).eval().requires_grad_(False)
    base_student = create(args.student, args.scale, args.student_preset).train()

    def baseline() -> None:
        base_student.zero_grad(set_to_none=True)
        F.l1_loss(base_student(lr), hr).backward()
        with torch.no_grad():
            teacher(lr)

    run_dir = tempfile.mkdtemp(prefix="kdbench-bench-")
    steps = {}
    for name in ["none", *args.methods.split(",")]:
        torch.manual_seed(0)
        student = create(args.student, args.scale, args.student_preset)
        method = create_method(name, student, teacher if name != "none" else None)
        recipe = TrainConfig(steps=10**9, batch_size=args.batch, lr_patch=args.patch, lr=1e-5)
        trainer = Trainer(recipe, student=student, teacher=teacher, method=method, weights=loss_weights(name),
                          batches=FixedBatch(lr, hr), holdout=FixedBatch(lr, hr), run_dir=f"{run_dir}/{name}",
                          seed=0)
        steps[name] = lambda trainer=trainer: trainer.train_step(lr, hr)
    none_step = steps.pop("none")

    def none_plus_teacher() -> None:
        none_step()
        with torch.no_grad():
            teacher(lr)

    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    def timed(fn) -> float:
        began = clock()
        fn()
        return clock() - began

    for _ in range(args.warmup):
        baseline()
        none_plus_teacher()
        for fn in steps.values():
            fn()
    times: dict[str, list[float]] = {"baseline": [], "none+T": [], **{name: [] for name in steps}}
    for _ in range(args.repeats):
        times["baseline"].append(timed(baseline))
        times["none+T"].append(timed(none_plus_teacher))
        for name, fn in steps.items():
            times[name].append(timed(fn))

    base_min, base_med = min(times["baseline"]), statistics.median(times["baseline"])
    none_min, none_med = min(times["none+T"]), statistics.median(times["none+T"])
    report = {
        "setup": {k: v for k, v in vars(args).items() if k != "json"},
        "torch": torch.__version__,
        "seconds": {name: {"min": min(v), "median": statistics.median(v)} for name, v in times.items()},
        "ratio_to_baseline": {
            name: {"min": min(times[name]) / base_min, "median": statistics.median(times[name]) / base_med}
            for name in steps
        },
        "ratio_to_none_plus_teacher": {
            name: {"min": min(times[name]) / none_min, "median": statistics.median(times[name]) / none_med}
            for name in steps
        },
        "targets": {name: TARGETS[name] for name in steps if name in TARGETS},
    }
    print(f"{args.student} + {args.teacher} ({args.teacher_preset}) x{args.scale}, batch {args.batch}, "
          f"LR {args.patch}px, {args.threads} threads, {args.repeats} repeats, {args.clock} clock")
    print(f"{'':10s} {'min s':>8s} {'median s':>9s} {'/base(min)':>11s} {'/base(med)':>11s} "
          f"{'/none+T(min)':>13s} {'/none+T(med)':>13s} {'target':>7s}")
    for name, figures in report["seconds"].items():
        ratio = report["ratio_to_baseline"].get(name) or {
            "min": figures["min"] / base_min, "median": figures["median"] / base_med}
        to_none = report["ratio_to_none_plus_teacher"].get(name, {"min": float("nan"), "median": float("nan")})
        target = report["targets"].get(name)
        print(f"{name:10s} {figures['min']:8.4f} {figures['median']:9.4f} {ratio['min']:11.3f} {ratio['median']:11.3f} "
              f"{to_none['min']:13.3f} {to_none['median']:13.3f} {target or '':>7}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
    for name, target in report["targets"].items():
        reference = "ratio_to_baseline" if name in ("logits", "fitnet") else "ratio_to_none_plus_teacher"
        got = report[reference][name]["min"]
        print(f"{name}: {got:.3f} x {'baseline' if reference == 'ratio_to_baseline' else 'none+T'} "
              f"(target <= {target:.2f}) {'ok' if got <= target else 'OVER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
