"""`kdbench tune`: a short-budget grid over configuration values, scored on the validation split."""

from __future__ import annotations

import argparse

from kd.messages import say
from kd.output import TextTable, out_console, print_table


def tune_command(args: argparse.Namespace) -> int:
    from kd.cli.sweep_cmd import check_devices, grid_layers
    from kd.engine import TrainingInterrupted
    from kd.results.cluster import check_executor, run_sweep_jobs
    from kd.results.sweep import expand_grid, parse_ints, run_sweep
    from kd.results.tune import finding, parse_grid, plan_tuning, rank_points, tuning_results, write_evidence
    from kd.stats import MIN_SEEDS_TO_RANK

    check_executor(args.executor)
    axes = parse_grid(args.grid)
    profile, layers, defaults = grid_layers(args)
    teacher = args.teacher or (defaults.get("teacher") or {}).get("arch") or "rcan"
    scale = int(defaults.get("scale", 4)) if args.scale is None else args.scale
    cells = expand_grid([args.student], [teacher], [args.method], [scale], parse_ints(args.seeds, "--seeds"))
    teacher = cells[0].teacher or "noteacher"  # a method without a teacher (none) is named as its run ids are
    plan = plan_tuning(cells, layers, args.overrides, axes, args.steps, args.out_dir)
    points, val, budget = plan.points, plan.val, plan.budget
    plans = [plan for point in points for plan in point.plans]
    check_devices(args.executor, plans)

    out, err = out_console(), out_console(stderr=True)
    pending = [p for p in plans if p.status in ("new", "partial")]
    source = "without a teacher" if teacher == "noteacher" else f"from {teacher}"
    say(out, f"tuning {args.method} {source} ({profile.name} profile): {len(points)} grid point(s) x "
             f"{len(cells)} seed(s), {budget} steps each, scored on {val}; {len(pending)} run(s) to do, about "
             f"{sum(p.est_seconds or 0.0 for p in pending) / 60:.0f} min of training")
    for key, value in plan.added.items():
        say(out, f"the current value of {key}, {value}, is added to the grid: a point is chosen only against it")
    if len(cells) < MIN_SEEDS_TO_RANK:
        say(err, f"{len(cells)} seed(s) per point cannot separate any point from the current values (the choice "
                 f"needs {MIN_SEEDS_TO_RANK} paired seeds): the current values will stay", "note")
    if args.dry_run:
        for point in points:
            states = ", ".join(f"seed {p.cell.seed}: {p.status}" for p in point.plans)
            say(out, f"  {', '.join(f'{k}={v}' for k, v in point.values.items())}  ({states})")
        return 0
    try:
        if args.executor == "inline":
            outcomes = run_sweep(plans, args.out_dir, console=err, progress=not args.no_progress)
        else:
            outcomes = run_sweep_jobs(args.executor, plans, args.out_dir, console=err, max_parallel=args.max_parallel)
    except TrainingInterrupted as stop:
        say(err, f"tuning interrupted at step {stop.step}: run the same command again to resume it", "warning")
        return 130

    keys = [axis.key for axis in axes]
    results = tuning_results(points, val, outcomes)
    ranked = rank_points(results, keys)
    _, sentence = finding(ranked, keys, val, budget, results, plan.current)
    name = f"{args.method}-{teacher}-x{scale}-{profile.name}"
    context = {"student": args.student, "teacher": teacher, "profile": profile.name, "steps": str(budget),
               "seeds": args.seeds, "validation": val}
    path = write_evidence(results, sentence, args.report_dir, name, context)
    table = TextTable(title=f"validation PSNR-Y on {val} ({budget} steps), best first", key=len(keys))
    for key in keys:
        table.add_column(key)
    for name in ("mean (dB)", "std", "seeds"):
        table.add_column(name, justify="right")
    for row in ranked.to_dict("records"):
        finished = row["seeds"] > 0
        table.add_row(*(str(row[key]) for key in keys), f"{row['mean']:.3f}" if finished else "not finished",
                      f"{row['std']:.3f}" if row["seeds"] > 1 else "-", str(row["seeds"]))
    print_table(table, out)
    say(out, sentence)
    say(out, f"wrote {path} and its line in {path.parent / 'README.md'}")
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        say(err, f"{len(failed)} run(s) failed: {failed[0].error}", "error")
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from kd.cli.run_cmd import add_device_argument
    from kd.profiles import PROFILES

    parser = subparsers.add_parser(
        "tune",
        help="short-budget grid over configuration values, scored on the validation split",
        description="Run one short training per grid point and seed (a quarter of the profile's steps unless "
        "--steps), evaluate it on the profile's validation split only (eval.val_dataset, e.g. 291-val; never a "
        "test set) and rank the points by mean validation PSNR-Y. The grid always holds the current values; a "
        "point replaces them only when it beats them on paired seeds after Holm-Bonferroni over every point "
        "compared with them, else they stay. Writes the evidence as a CSV and a line in <report-dir>/README.md. "
        "Runs are idempotent like sweep cells: the same command resumes.",
    )
    parser.add_argument("--method", required=True, help="the method to tune")
    parser.add_argument("--teacher", help="teacher architecture (default: the profile's)")
    parser.add_argument("--student", default="asid", help="student (default: asid)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="values to try for one configuration key, e.g. method.weights.lsfd=0.03,0.1,0.3 "
                        "(repeatable: the grid is their product)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated run seeds (default: 0,1,2; a point is "
                        "chosen only from 3 or more paired seeds)")
    parser.add_argument("--steps", type=int, help="training steps per run (default: a quarter of the profile's)")
    parser.add_argument("--scale", type=int, help="upscaling factor (default: the profile's)")
    parser.add_argument("--profile", choices=sorted(PROFILES), help="base configuration (default: cpu)")
    parser.add_argument("--config", metavar="FILE", help="YAML or TOML file of configuration values")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one configuration value in every run (repeatable)")
    parser.add_argument("--out-dir", default="runs/tuning",
                        help="runs root (default: ./runs/tuning, so that a report over ./runs never mixes short "
                        "tuning runs with the runs it compares)")
    parser.add_argument("--report-dir", default="reports/tuning", help="where the evidence goes "
                        "(default: reports/tuning)")
    parser.add_argument("--data-root", metavar="DIR", help="dataset root (default: $KDBENCH_DATA or the cache)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true", help="no per-run progress bars")
    parser.add_argument("--executor", default="inline", help="inline, local or slurm (as for sweep)")
    parser.add_argument("--max-parallel", type=int, default=0, metavar="N", help="with --executor local|slurm: at "
                        "most N jobs in flight")
    parser.add_argument("--dry-run", action="store_true", help="list the grid points and their status; run nothing")
    add_device_argument(parser)
    parser.set_defaults(handler=tune_command)

