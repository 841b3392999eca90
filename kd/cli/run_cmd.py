"""`kdbench run`: train a student with a frozen teacher and a distillation method, evaluate it, record the run."""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import warnings
from typing import TYPE_CHECKING, Any

from kd.config import RunConfig, parse_override, read_config_file
from kd.messages import say
from kd.output import TextTable, out_console, print_table
from kd.profiles import PROFILES, profile_layer, resolve_layers

if TYPE_CHECKING:
    from rich.console import Console


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `run` and `teacher train`: profile, config file, overrides, data root."""
    parser.add_argument("--profile", choices=sorted(PROFILES), help="base configuration (default: cpu, or the "
                        "config file's 'profile')")
    parser.add_argument("--config", metavar="FILE", help="YAML or TOML file of configuration values")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one configuration value, e.g. --set train.lr=2e-4 (repeatable)")
    parser.add_argument("--scale", type=int, help="upscaling factor (2, 3 or 4)")
    parser.add_argument("--seed", type=int, help="run seed (student initialisation and patch order)")
    parser.add_argument("--data-root", metavar="DIR", help="dataset root (default: $KDBENCH_DATA or the cache)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    add_device_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--nproc", type=int, default=1, help="data-parallel processes (one per GPU, or gloo "
                        "processes on the CPU), launched through torchrun; train.batch_size stays the global batch")


def add_label_arguments(parser: argparse.ArgumentParser) -> None:
    """`--name` and `--tag` of run and sweep: labels recorded in the run, never part of its id."""
    parser.add_argument("--name", help="a name for the run(s), shown and filterable in `kdbench results` and "
                        "`kdbench report` (--filter name=...); a label, not configuration: the run id stays the same, "
                        "and a finished run given another name takes it")
    parser.add_argument("--tag", dest="tags", action="append", default=[], metavar="TAG",
                        help="a tag for the run(s), filterable with --filter tag=TAG (repeatable)")


def label_values(args: argparse.Namespace) -> dict[str, Any]:
    """The `label` configuration section of `--name` / `--tag`, or {} when neither is given."""
    name, tags = getattr(args, "name", None), list(dict.fromkeys(getattr(args, "tags", None) or []))
    return {"label": {"name": name, "tags": tags}} if name or tags else {}


def add_device_argument(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """`--device` of run, teacher train, sweep and eval (checked by `kd.devices.resolve_device`)."""
    parser.add_argument("--device", default=default, help="auto (cuda when available, else cpu), cpu, cuda or "
                        "cuda:N" + (f" (default {default})" if default else "; the config key device=, default auto"))


def build_config(args: argparse.Namespace, flags: dict[str, Any]) -> RunConfig:
    """Layers: profile < --config file < command-line flags < --set overrides."""
    file_values = read_config_file(args.config) if args.config else {}
    profile = args.profile or file_values.get("profile") or "cpu"
    common: dict[str, Any] = {}
    if args.scale is not None:
        common["scale"] = args.scale
    if args.seed is not None:
        common["seed"] = args.seed
    if args.threads is not None:
        common["threads"] = args.threads
    if args.device:
        common["device"] = args.device
    if args.data_root:
        common.setdefault("data", {})["root"] = args.data_root
    layers = [profile_layer(str(profile))]
    if file_values:
        layers.append((f"config file '{args.config}'", {k: v for k, v in file_values.items() if k != "profile"}))
    layers.append(("the command-line options", _merge(common, flags)))
    layers.extend((f"--set {text}", parse_override(text)) for text in args.overrides)
    return resolve_layers(layers)


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    from kd.config import deep_merge

    return deep_merge(a, b)


def without_nproc(argv: list[str]) -> list[str]:
    """The command line minus `--nproc N` / `--nproc=N`: what each torchrun worker runs."""
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            kept.append(item)
    return kept


def relaunch_under_torchrun(args: argparse.Namespace, config: RunConfig) -> int | None:
    """`--nproc N` (N > 1) outside torchrun: run the same command as N torchrun workers; None: run here."""
    from kd.engine.distributed import check_nproc, threads_per_process, torchrun_command

    if args.nproc == 1 or "WORLD_SIZE" in os.environ:
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_nproc(args.nproc, config.device)
    for warning in caught:
        say(out_console(stderr=True), str(warning.message), "warning")
    argv = without_nproc(args.argv)
    if args.threads is None:
        argv += ["--threads", str(threads_per_process(args.nproc))]
    return subprocess.call(torchrun_command(args.nproc, argv))


def _fmt(value: Any, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_table(summary: dict[str, Any]) -> TextTable:
    teacher = summary.get("teacher") or {}
    title = (
        f"{summary['student']} x{summary['scale']} · method {summary['method']}"
        + (f" · teacher {teacher.get('arch')} ({teacher.get('preset')})" if teacher else "")
        + f" · seed {summary['seed']} · {summary['steps']} steps in {summary['train_seconds']:.1f} s"
        + (f" · blind SR: {summary['degradation']}" if summary.get("degradation", "bicubic") != "bicubic" else "")
    )
    table = TextTable(title=title)
    for column in ("dataset", "PSNR-Y", "SSIM-Y", "LPIPS"):
        table.add_column(column, justify="left" if column == "dataset" else "right")
    for dataset, scores in summary["datasets"].items():
        table.add_row(dataset, _fmt(scores["psnr_y"], 3), _fmt(scores["ssim_y"], 4), _fmt(scores["lpips"], 4))
    return table


def _scores(scores: dict[str, Any] | None) -> str:
    if not scores or scores.get("psnr_y") is None:
        return "-"
    ssim = scores.get("ssim_y")
    return f"{scores['psnr_y']:.2f}/{ssim:.4f}" if ssim is not None else f"{scores['psnr_y']:.2f}"


def comparison_table(comparison) -> TextTable:
    """PSNR/SSIM of the teacher, the no-KD sibling and this student per dataset, with Δ PSNR vs no-KD."""
    student = comparison.student
    teacher = student.get("teacher") or {}
    sees_hr = "; the teacher sees the HR image (KDSR's teacher, fed it as its official test does)" if teacher.get(
        "sees_hr") else ""
    table = TextTable(title=f"{student['method']} beside its teacher and the no-KD student ({student['profile']} "
                      f"profile, seed {student['seed']})", caption="PSNR/SSIM on Y, crop = scale; Δ = PSNR of this "
                      f"student minus the no-KD student (one seed: not a significance test){sees_hr}")
    table.add_column("dataset")
    table.add_column(f"teacher {teacher.get('arch')} ({teacher.get('preset')})", justify="right")
    table.add_column("no-KD", justify="right")
    table.add_column(student["method"], justify="right")
    table.add_column("Δ PSNR", justify="right")
    for dataset in comparison.datasets:
        delta = comparison.delta(dataset)
        table.add_row(dataset, _scores((comparison.teacher or {}).get(dataset)),
                      _scores((comparison.sibling or {}).get("datasets", {}).get(dataset)),
                      _scores(student["datasets"].get(dataset)), "-" if delta != delta else f"{delta:+.3f}")
    return table


def comparison_caveat(config: RunConfig, summary: dict[str, Any]) -> str | None:
    """What the comparison of a profile too small to rank methods (demo, smoke) can and cannot show."""
    from kd.profiles import PROFILES

    profile = PROFILES.get(config.profile)
    if profile is None or not profile.evidence:
        return None
    images = sum(int(n or 0) for n in (summary.get("dataset_images") or {}).values())
    return (f"the {config.profile} profile shows the pipeline, not which method is better: one seed, {images} test "
            f"image{'s' if images != 1 else ''} and {summary['steps']} steps cannot rank methods (a difference "
            f"like this one is within their noise); {profile.evidence}")


def print_comparison(console: Console, err: Console, config: RunConfig, record, args: argparse.Namespace) -> None:
    from kd.engine.siblings import compare_with_siblings

    comparison = compare_with_siblings(config, record.summary, args.out_dir)
    if comparison is None:
        return
    print_table(comparison_table(comparison), console)
    caveat = comparison_caveat(config, record.summary)
    if caveat:
        say(console, caveat, "note")
    if comparison.sibling is None:
        seed = f" --seed {config.seed}" if config.seed else ""
        say(err, f"no no-KD sibling ({comparison.sibling_id}) in {args.out_dir} yet: `kdbench run --profile "
            f"{config.profile} --student {config.student.arch} --scale {config.scale}{seed} --method none` with "
            "the same other options adds it to this comparison", "note")


def run_command(args: argparse.Namespace) -> int:
    from kd.devices import resolve_device
    from kd.engine import TrainingInterrupted, execute_run
    from kd.engine.progress import tee_to_file
    from kd.report.runs import extension_note

    flags: dict[str, Any] = {}
    if args.student:
        flags["student"] = {"arch": args.student}
    if args.student_preset:
        flags.setdefault("student", {})["preset"] = args.student_preset
    if args.method:
        flags["method"] = {"name": args.method}
    if args.teacher:
        flags["teacher"] = {"arch": None if args.teacher.lower() == "none" else args.teacher}
    if args.teacher_ckpt:
        # An official checkpoint is the architecture's official configuration unless a preset is named.
        flags.setdefault("teacher", {}).update(ckpt=args.teacher_ckpt, preset=args.teacher_preset)
    elif args.teacher_preset:
        flags.setdefault("teacher", {})["preset"] = args.teacher_preset
    flags.update(label_values(args))
    config = build_config(args, flags)
    resolve_device(config.device)  # a device that is not here fails before anything is written or launched
    relaunched = relaunch_under_torchrun(args, config)
    if relaunched is not None:
        return relaunched

    err = out_console(stderr=True)
    try:
        record = execute_run(config, out_dir=args.out_dir, console=err, progress=not args.no_progress,
                             restart=args.restart, save_images=args.save_images)
    except TrainingInterrupted as stop:
        err.print(
            f"[yellow]interrupted at step {stop.step}[/]: checkpoint saved; run the same command again to resume.",
            highlight=False,
        )
        return 130
    if os.environ.get("RANK", "0") != "0":
        return 0  # a torchrun worker other than rank 0: rank 0 reports
    console = out_console()
    if record.already_finished:
        say(err, f"run {record.run_dir.name} is already finished; results in {record.run_dir}")
        if args.save_images and not (record.run_dir / "images").is_dir():
            say(err, f"its SR images were not saved; write them with `kdbench eval --run {record.run_dir} "
                f"--save-images {record.run_dir / 'images'}`", "note")
    else:
        say(err, f"run finished; results in {record.run_dir}")
    # A fresh run's results close its train.log.
    with contextlib.nullcontext() if record.already_finished else tee_to_file(console, record.run_dir / "train.log"):
        print_table(summary_table(record.summary), console)
        if record.summary.get("extends"):
            say(console, extension_note(record.summary), "note")
        print_comparison(console, err, config, record, args)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="train a student (optionally distilled from a teacher), evaluate it and record the run",
        description="Train a student with a frozen teacher and a distillation method, evaluate it on the test "
        "sets and write runs/<run-id>/. The run id follows from the configuration: the same command resumes an "
        "unfinished run or reports a finished one.",
    )
    parser.add_argument("--student", help="student architecture (default: the profile's, asid)")
    parser.add_argument("--student-preset", help="student preset (paper, mini, tiny)")
    parser.add_argument("--teacher", help="teacher architecture, or 'none' (default: the profile's, rcan)")
    parser.add_argument("--teacher-preset", help="teacher preset (default: the profile's; with --teacher-ckpt the "
                        "official configuration)")
    parser.add_argument("--teacher-ckpt", metavar="PATH", help="teacher weights (official checkpoint); default: "
                        "the cached zoo teacher, trained first when missing")
    parser.add_argument("--method", help="distillation method (see `kdbench list methods`; default: none)")
    parser.add_argument("--out-dir", default="runs", help="runs root (default: ./runs)")
    parser.add_argument("--restart", action="store_true", help="discard this run's checkpoints, metrics and "
                        "evaluation and train it from scratch (e.g. after a damaged checkpoint); also trains from "
                        "scratch where a finished run with fewer train.steps would otherwise be extended")
    parser.add_argument("--save-images", action="store_true", help="also write the final evaluation's SR images "
                        "to <run>/images/<dataset>/x<s>/<name>.png")
    add_label_arguments(parser)
    add_config_arguments(parser)
    parser.set_defaults(handler=run_command)
