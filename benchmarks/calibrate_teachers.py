"""Calibrate the `mini` teachers of the cpu profile.

Requirement: each mini teacher, trained with the cpu profile's teacher recipe in <= 45 minutes on 2 cores, beats
the no-KD ASID student of the cpu profile by >= 0.3 dB PSNR-Y on Set5 and on Set14 at x4; otherwise distillation
has no gap to close.

Steps, per teacher:
1. estimate the teacher's step time (a few real training steps) and project the recipe's wall time; a recipe
   over budget is reported with the number of steps that would fit (`--estimate-only` stops here);
2. train (or reuse) the zoo teacher exactly as `kdbench run` would (`kdbench teacher train`);
3. train (or reuse) the no-KD student run (`kdbench run --method none`), shared by all teachers;
4. compare Set5/Set14 PSNR-Y and print a verdict; `--json` writes the figures.

The budget is judged on the larger of two projections: the probe, and the median step time logged during the zoo
training times its steps (the probe runs a fresh process and has come out up to 15% faster). The zoo's recorded wall
time is shown too; it also counts whatever else shared the cores and time lost to interruptions.

    .venv/bin/python benchmarks/calibrate_teachers.py --estimate-only
    .venv/bin/python benchmarks/calibrate_teachers.py --teachers rcan,han --set teacher.train.steps=5000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import torch
from rich.console import Console
from rich.table import Table

from kd.config import RunConfig, parse_override
from kd.engine import Trainer, execute_run
from kd.engine.services import Services
from kd.engine.teachers import zoo_dir, zoo_teacher
from kd.methods import create_method, loss_weights
from kd.models import create
from kd.profiles import profile_layer, resolve_layers

REQUIRED_GAP_DB = 0.3
GAP_DATASETS = ("Set5", "Set14")


def config_for(teacher: str, args: argparse.Namespace) -> RunConfig:
    layers = [profile_layer("cpu"),
              ("calibration", {"scale": args.scale, "teacher": {"arch": teacher, "preset": "mini"},
                               "method": {"name": "none"}, "threads": args.threads})]
    layers += [(f"--set {text}", parse_override(text)) for text in args.overrides]
    return resolve_layers(layers)


def step_seconds(config: RunConfig, steps: int) -> float:
    """Median wall time of a few real teacher training steps (first step excluded as warm-up)."""
    recipe = config.teacher.train
    batches = Services().make_batches(config, recipe, seed=config.teacher.seed)
    model = create(config.teacher.arch, config.scale, config.teacher.preset)
    trainer = Trainer(recipe, student=model, teacher=None, method=create_method("none", model, None),
                      weights=loss_weights("none"), batches=batches, run_dir=tempfile.mkdtemp(), seed=0)
    times = []
    for lr, hr in batches.iterate(0, steps + 1):
        began = time.perf_counter()
        trainer.train_step(lr, hr)
        times.append(time.perf_counter() - began)
    times = sorted(times[1:])
    return times[len(times) // 2]


def logged_step_seconds(config: RunConfig) -> float:
    """Median of the step times the zoo training logged (robust to short bursts of load from other processes)."""
    times = []
    with open(zoo_dir(config) / "metrics.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if "step_time" in row:
                times.append(row["step_time"])
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teachers", default="rcan,han,swinir")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget-minutes", type=float, default=45.0)
    parser.add_argument("--probe-steps", type=int, default=5, help="steps timed for the estimate")
    parser.add_argument("--estimate-only", action="store_true")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out-dir", default="runs")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    console = Console(stderr=True)

    report: dict[str, dict] = {}
    for teacher in args.teachers.split(","):
        config = config_for(teacher, args)
        per_step = step_seconds(config, args.probe_steps)
        projected = per_step * config.teacher.train.steps / 60
        fits = int(args.budget_minutes * 60 / per_step)
        report[teacher] = {"step_seconds": per_step, "steps": config.teacher.train.steps,
                           "projected_minutes": projected, "steps_within_budget": fits}
        console.print(f"{teacher} mini: {per_step:.3f} s/step x {config.teacher.train.steps} steps = "
                      f"{projected:.1f} min (budget {args.budget_minutes:.0f} min fits {fits} steps)",
                      highlight=False)
    if args.estimate_only:
        _write(args, report)
        return 0

    baseline_config = config_for(args.teachers.split(",")[0], args)
    baseline = execute_run(baseline_config, out_dir=args.out_dir, console=console).summary["datasets"]
    table = Table(title=f"mini teachers vs no-KD ASID (cpu profile, x{args.scale}); need >= {REQUIRED_GAP_DB} dB")
    for column in ("teacher", "steps", "probe s/step", "logged s/step", "projected min", "recorded min",
                   *(f"{d} gap dB" for d in GAP_DATASETS), "verdict"):
        table.add_column(column)
    all_ok = True
    for teacher in args.teachers.split(","):
        config = config_for(teacher, args)
        _, info = zoo_teacher(config, console=console)
        gaps = {d: info["eval"][d]["psnr_y"] - baseline[d]["psnr_y"] for d in GAP_DATASETS}
        probe, logged = report[teacher]["step_seconds"], logged_step_seconds(config)
        projected = max(probe, logged) * config.teacher.train.steps / 60
        ok = all(g >= REQUIRED_GAP_DB for g in gaps.values()) and projected <= args.budget_minutes
        all_ok &= ok
        report[teacher].update(teacher_eval=info["eval"], train_seconds=info["train_seconds"], gaps=gaps, ok=ok,
                               logged_step_seconds=logged, projected_minutes=projected)
        table.add_row(teacher, str(config.teacher.train.steps), f"{probe:.3f}", f"{logged:.3f}", f"{projected:.1f}",
                      f"{info['train_seconds'] / 60:.1f}", *(f"{gaps[d]:+.3f}" for d in GAP_DATASETS),
                      "ok" if ok else "NOT MET")
    report["student_baseline"] = baseline
    Console().print(table)
    _write(args, report)
    return 0 if all_ok else 1


def _write(args: argparse.Namespace, report: dict) -> None:
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    sys.exit(main())
