"""`kdbench sweep`: run a grid of students x teachers x methods x scales x seeds, one `kdbench run` per cell."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kd.errors import KdError
from kd.messages import say
from kd.output import TextTable, duration, out_console, print_table, styled


def _plan_table(plans, title: str) -> TextTable:
    table = TextTable(title=title)
    for name in ("#", "student", "teacher", "method", "scale", "seed", "est. time", "status", "run id"):
        table.add_column(name, justify="right" if name in ("#", "scale", "seed", "est. time") else "left",
                         wrap=name == "status")
    for i, plan in enumerate(plans, 1):
        cell = plan.cell
        if plan.status == "invalid":
            status = styled(("invalid", "red"), f": {plan.error}")
        elif plan.status == "partial":
            status = f"partial ({plan.done_steps}/{plan.config.train.steps} steps)"
        elif plan.extends:
            status = f"new: extends {plan.extends} from step {plan.done_steps}"
        else:
            status = f"recorded in {plan.recorded_in}" if plan.recorded_in else plan.status
        estimate = "-" if plan.status in ("finished", "invalid") else (
            f"{duration(plan.est_seconds)} ({plan.est_source})")
        table.add_row(str(i), cell.student, cell.teacher or "-", cell.method, f"x{cell.scale}", str(cell.seed),
                      estimate, status, plan.run_id or "-")
    return table


def _outcome_table(outcomes) -> TextTable:
    table = TextTable(title="sweep results")
    for name in ("#", "cell", "time", "first dataset PSNR/SSIM", "outcome"):
        table.add_column(name, justify="right" if name in ("#", "time") else "left", wrap=name == "outcome")
    for i, outcome in enumerate(outcomes, 1):
        scores = next(iter((outcome.summary.get("datasets") or {}).items()), None)
        shown = "-"
        if scores and scores[1].get("psnr_y") is not None:
            shown = f"{scores[0]} {scores[1]['psnr_y']:.2f}/{scores[1]['ssim_y']:.4f}"
        status = styled(("failed", "red"), f": {outcome.error}") if outcome.status == "failed" else outcome.status
        table.add_row(str(i), outcome.plan.cell.label, duration(outcome.seconds), shown, status)
    return table


def grid_layers(args: argparse.Namespace) -> tuple[Any, list[tuple[str, dict[str, Any]]], dict[str, Any]]:
    """(profile, base configuration layers, merged profile and file values) of a grid command (sweep, tune): the
    profile, `--config` and the options every cell shares (threads, device, data root, labels)."""
    from kd.cli.run_cmd import label_values
    from kd.config import deep_merge, read_config_file
    from kd.profiles import get_profile
    from kd.results.sweep import base_layers

    file_values = read_config_file(args.config) if args.config else {}
    profile = get_profile(str(args.profile or file_values.get("profile") or "cpu"))
    common: dict[str, Any] = {}
    if args.threads is not None:
        common["threads"] = args.threads
    if args.device:
        common["device"] = args.device
    if args.data_root:
        common["data"] = {"root": args.data_root}
    common.update(label_values(args))
    layers = base_layers(profile.name, file_values, args.config or "", common)
    return profile, layers, deep_merge(profile.values, file_values)


def check_devices(executor: str, plans) -> None:
    """Cells that run on this machine need their device here: a missing one fails before any cell."""
    from kd.devices import resolve_device

    if executor == "slurm":
        return
    for device in sorted({plan.config.device for plan in plans if plan.config is not None}):
        resolve_device(device)


def sweep_command(args: argparse.Namespace) -> int:
    from kd.engine import TrainingInterrupted
    from kd.engine.teachers import exported_teachers
    from kd.results.cluster import check_executor, run_sweep_jobs
    from kd.results.sweep import (StepTimes, assistants_to_train, expand_grid, parse_ints, plan_sweep, run_sweep,
                                  teachers_to_train)

    check_executor(args.executor)
    profile, layers, defaults = grid_layers(args)
    default_teacher = (defaults.get("teacher") or {}).get("arch") or "rcan"
    default_scale = str(defaults.get("scale", 4))
    cells = expand_grid(
        _names(args.students), _names(args.teachers or default_teacher), _names(args.methods),
        parse_ints(args.scales or default_scale, "--scales"), parse_ints(args.seeds, "--seeds"),
    )
    for folder in args.records:
        if not folder.is_dir():
            raise KdError(f"--records {folder}: no such folder; give a folder of run records (a report's records/).")
    for folder in args.teacher_exports:
        if not folder.is_dir():
            raise KdError(f"--teacher-exports {folder}: no such folder; give a folder written by `kdbench teacher "
                          "export` or one holding such folders (as reports/teachers).")
    times = StepTimes(args.out_dir, *args.records)
    plans = plan_sweep(cells, layers, args.overrides, args.out_dir, records=args.records, times=times)
    if all(plan.status == "invalid" for plan in plans):
        raise KdError(f"no cell of the sweep can run: {plans[0].error}")
    check_devices(args.executor, plans)

    out = out_console()
    err = out_console(stderr=True)
    pending = [p for p in plans if p.status in ("new", "partial")]
    total = sum(p.est_seconds or 0.0 for p in pending)
    teachers = teachers_to_train(plans, times, exported_teachers(args.teacher_exports))
    assistants = assistants_to_train(plans, args.out_dir, args.records)
    title = (f"sweep: {len(plans)} cells, profile {profile.name}, runs in {args.out_dir} "
             f"({len(plans) - len(pending)} finished or invalid)")
    if args.dry_run:
        print_table(_plan_table(plans, title), out)
        for teacher in teachers:
            if teacher.export is not None:
                say(out, f"teacher {teacher.key} is not in the zoo, but `kdbench teacher import {teacher.export}` "
                         f"adds it without training (the same weights as its records, so the same run ids); "
                         f"training it instead takes about {duration(teacher.seconds)} (rough)")
            else:
                say(out, f"teacher {teacher.key} is not in the zoo: trained first, about "
                         f"{duration(teacher.seconds)} (rough)")
        for label, seconds, source in assistants:
            say(out, f"teacher assistant {label} is not cached: trained first (after its teacher), about "
                     f"{duration(seconds)} ({source})")
        to_train = [t for t in teachers if t.export is None]
        first = sum(t.seconds for t in to_train) + sum(s for _, s, _ in assistants)
        importable = " (teachers that can be imported not counted)" if len(to_train) < len(teachers) else ""
        say(out, f"estimated training time: {duration(total + first)} for {len(pending)} cell(s) to run"
                 f"{f' and {len(to_train) + len(assistants)} teacher(s) and assistant(s)' if first else ''} "
                 f"(training only; evaluation adds a little per run){importable}")
        return 0

    def announce(index: int, plan, remaining: float | None) -> None:
        cell = plan.cell
        note = {"finished": "finished already, skipping", "partial": f"resuming at step {plan.done_steps}",
                "new": f"extending {plan.extends} from step {plan.done_steps}" if plan.extends else "starting",
                "invalid": "invalid, skipping"}[plan.status]
        eta = f"; about {duration(remaining)} of training left in the grid" if remaining else ""
        err.rule(f"[bold]cell {index + 1}/{len(plans)}[/] {cell.label}", style="cyan")
        say(err, f"{plan.run_id or '-'}: {note}{eta}")

    try:
        if args.executor == "inline":
            outcomes = run_sweep(plans, args.out_dir, console=err, progress=not args.no_progress, on_cell=announce)
        else:
            print_table(_plan_table(plans, title), out)
            outcomes = run_sweep_jobs(args.executor, plans, args.out_dir, console=err, max_parallel=args.max_parallel)
    except TrainingInterrupted as stop:
        err.print(f"[yellow]sweep interrupted at step {stop.step}[/]: the cell's checkpoint is saved; run the same "
                  "command again to resume the sweep.", highlight=False)
        return 130
    print_table(_outcome_table(outcomes), out)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        err.print(f"[red]{len(failed)} of {len(outcomes)} cell(s) failed[/]; the others are recorded. Fix the "
                  "cause and run the same command again: finished cells are skipped.", highlight=False)
        return 1
    return 0


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:
    from kd.cli.run_cmd import add_device_argument, add_label_arguments
    from kd.profiles import PROFILES

    parser = subparsers.add_parser(
        "sweep",
        help="run a grid of students x teachers x methods x scales x seeds (finished cells are skipped)",
        description="Expand the grid and run each cell as `kdbench run` would, in sequence. A method without a "
        "teacher (none) is one cell per student/scale/seed, shared by all teachers. Finished cells are skipped "
        "and unfinished ones resumed, so the same command continues an interrupted sweep; a failing cell is "
        "reported and the others go on (exit status 1 at the end).",
    )
    parser.add_argument("--students", default="asid", help="comma-separated students (default: asid)")
    parser.add_argument("--teachers", help="comma-separated teachers (default: the profile's)")
    parser.add_argument("--methods", default="none", help="comma-separated methods, see `kdbench list methods` "
                        "(default: none)")
    parser.add_argument("--scales", help="comma-separated scales (default: the profile's, 4)")
    parser.add_argument("--seeds", default="0", help="comma-separated run seeds (default: 0)")
    parser.add_argument("--profile", choices=sorted(PROFILES), help="base configuration (default: cpu)")
    parser.add_argument("--config", metavar="FILE", help="YAML or TOML file of configuration values")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one configuration value in every cell (repeatable)")
    parser.add_argument("--out-dir", default="runs", help="runs root (default: ./runs)")
    parser.add_argument("--records", action="append", default=[], type=Path, metavar="DIR", help="finished runs "
                        "recorded elsewhere, e.g. a committed report's records/ (repeatable): their cells count as "
                        "finished and are not trained again")
    parser.add_argument("--teacher-exports", action="append", default=[], type=Path, metavar="DIR",
                        help="exported teachers (`kdbench teacher export`), or a folder of them (repeatable): the "
                        "dry run names the missing zoo teachers that `kdbench teacher import` can add from there "
                        "instead of training them (a checkout's reports/teachers is always looked at)")
    parser.add_argument("--data-root", metavar="DIR", help="dataset root (default: $KDBENCH_DATA or the cache)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    add_device_argument(parser)
    add_label_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no per-run progress bars")
    parser.add_argument("--executor", default="inline", help="inline (default: cells one after another in this "
                        "process), local (submitit jobs on this machine) or slurm (submitit job arrays; resources "
                        "from the cluster.* config keys)")
    parser.add_argument("--max-parallel", type=int, default=0, metavar="N", help="with --executor local|slurm: at "
                        "most N jobs in flight (default: all at once)")
    parser.add_argument("--dry-run", action="store_true", help="list the cells with their status and estimated "
                        "time; run nothing")
    parser.set_defaults(handler=sweep_command)
