"""Sweep cells as submitit jobs: `--executor local` (subprocesses on this machine, submitit's LocalExecutor) or
`--executor slurm` (one Slurm job array per distinct `cluster.*` resource set).

A cell job is `execute_run` of the cell's resolved configuration, so it is as idempotent as `kdbench run`: a
finished run is reported, an unfinished one resumes from `checkpoints/last.pt`. Jobs are checkpointable: when
Slurm preempts a job or its time runs out, submitit requeues it and it resumes from its last checkpoint (at most
`train.ckpt_every` steps are repeated). Teachers the zoo lacks are trained first, one job each, so cells never
wait on each other; a cell with `cluster.gpus_per_node` > 1 trains with DDP across the GPUs of its node.

The submitting command waits for the jobs and prints the same results table as an in-process sweep. If it is
stopped, the jobs keep running; the same command later reports or resumes them (a run being trained by another
process is refused by its run lock rather than trained twice).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kd.config import ClusterConfig, RunConfig, from_dict, to_dict
from kd.errors import KdError
from kd.messages import say
from kd.output import duration

EXECUTORS = ("inline", "local", "slurm")
# Slurm's reasons for holding a job whose request its partition cannot meet as configured: it may never start, and
# the sweep, which waits for it, says so once instead of waiting without a word.
UNFIT_REASONS = ("PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints")
QUEUE_CHECK_SECONDS = 60.0


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise KdError("--executor local|slurm needs submitit: pip install submitit (it is a kdbench "
                      "dependency; reinstall kdbench).") from None
    return submitit


def check_executor(name: str) -> None:
    """Unknown executor, or Slurm asked for where there is none: fail before submitting anything."""
    if name not in EXECUTORS:
        raise KdError(f"--executor must be one of {', '.join(EXECUTORS)}, got '{name}'.")
    if name != "inline":
        _submitit()
    if name == "slurm" and shutil.which("sbatch") is None:
        raise KdError("--executor slurm: Slurm is not set up here (sbatch not found on PATH). Run the sweep on a "
                      "Slurm login node, or use --executor local (jobs on this machine) or inline.")


class CellJob:
    """One sweep cell (or one zoo teacher) as a picklable, checkpointable job."""

    def __init__(self, config: dict[str, Any], out_dir: str, teacher_only: bool = False) -> None:
        self.config, self.out_dir, self.teacher_only = config, out_dir, teacher_only

    def __call__(self) -> dict[str, Any]:
        from kd.engine import execute_run
        from kd.engine.teachers import zoo_teacher

        if "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
            _submitit().helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        config = from_dict(self.config, "the sweep cell")
        if self.teacher_only:
            from kd.devices import resolve_device
            from kd.engine.distributed import from_environment

            _, info = zoo_teacher(config, progress=False, dist=from_environment(resolve_device(config.device)))
            return {"teacher": info.get("key")}
        record = execute_run(config, out_dir=self.out_dir, progress=False)
        return {"summary": record.summary, "already_finished": record.already_finished}

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit on preemption or timeout: requeue the same job; it resumes from its checkpoint."""
        return _submitit().helpers.DelayedSubmission(self, *args, **kwargs)


def _make_executor(kind: str, folder: Path, resources: ClusterConfig) -> Any:
    submitit = _submitit()
    folder.mkdir(parents=True, exist_ok=True)
    tasks = max(resources.gpus_per_node, 1)
    if kind == "local":
        executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(timeout_min=resources.timeout_min)
        return executor
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    slurm = {f"slurm_{k}": v for k, v in (("partition", resources.partition), ("account", resources.account),
                                          ("qos", resources.qos), ("constraint", resources.constraint)) if v}
    executor.update_parameters(
        name="kdbench", timeout_min=resources.timeout_min, nodes=1, tasks_per_node=tasks,
        gpus_per_node=resources.gpus_per_node, cpus_per_task=resources.cpus_per_task, mem_gb=resources.mem_gb,
        **slurm,
    )
    return executor


def _resource_key(config: RunConfig) -> tuple:
    return tuple(sorted(asdict(config.cluster).items()))


def submit_and_wait(kind: str, jobs: list[tuple[str, RunConfig, bool]], out_dir: str | Path, *,
                    max_parallel: int = 0, poll_seconds: float = 2.0,
                    on_done: Callable[[str, dict[str, Any] | None, str | None, float], None],
                    on_unfit: Callable[[str, str, str], None] | None = None) -> None:
    """Submit (label, config, teacher_only) jobs, grouped by resources, and wait for all of them.

    `on_done(label, result, error, seconds)` is called as each job ends. `max_parallel` > 0 caps the number of
    jobs in flight (the local executor starts every submitted job at once). On Slurm, the queue is read once
    after submitting and then every `QUEUE_CHECK_SECONDS`: `on_unfit(label, job id, reason)` is called once for a
    job held for one of `UNFIT_REASONS`."""
    out_dir = Path(out_dir)
    pending = list(jobs)
    running: list[tuple[str, Any, float]] = []
    unfit_told: set[str] = set()
    next_queue_check = 0.0
    while pending or running:
        while pending and (max_parallel <= 0 or len(running) < max_parallel):
            key = _resource_key(pending[0][1])
            wave = [job for job in pending if _resource_key(job[1]) == key]
            if max_parallel > 0:
                wave = wave[: max_parallel - len(running)]
            resources = wave[0][1].cluster
            executor = _make_executor(kind, Path(resources.log_dir), resources)
            try:
                with executor.batch():  # one job array per resource set on Slurm
                    submitted = [(label, executor.submit(CellJob(to_dict(cfg), str(out_dir), teacher_only)))
                                 for label, cfg, teacher_only in wave]
            except _submitit().core.utils.FailedJobError as exc:
                raise KdError(_refused(exc, resources, started=bool(running))) from None
            began = time.perf_counter()
            running += [(label, job, began) for label, job in submitted]
            pending = [job for job in pending if job not in wave]
            next_queue_check = time.monotonic() + poll_seconds
        still = []
        for label, job, began in running:
            if not job.done():
                still.append((label, job, began))
                continue
            try:
                on_done(label, job.result(), None, time.perf_counter() - began)
            except Exception as exc:  # a failed job is reported with its own error; the others go on
                on_done(label, None, _job_error(exc, job), time.perf_counter() - began)
        running = still
        if kind == "slurm" and on_unfit is not None and running and time.monotonic() >= next_queue_check:
            reasons = pending_reasons([job.job_id for _, job, _ in running])
            for label, job, _ in running:
                if reasons.get(job.job_id) in UNFIT_REASONS and job.job_id not in unfit_told:
                    unfit_told.add(job.job_id)
                    on_unfit(label, job.job_id, reasons[job.job_id])
            next_queue_check = time.monotonic() + QUEUE_CHECK_SECONDS
        if running:
            time.sleep(poll_seconds)


def pending_reasons(job_ids: list[str]) -> dict[str, str]:
    """Slurm's reason for holding each of these jobs (array tasks as `<array>_<task>`) that is pending, from squeue;
    only what squeue could say (the reasons are advice, never a condition of the sweep)."""
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    try:
        listed = subprocess.run(["squeue", "--noheader", "--array", "--states=PENDING", "--format=%i %r",
                                 f"--jobs={','.join(arrays)}"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return {}
    pairs = (line.split(None, 1) for line in listed.stdout.splitlines())
    return {pair[0]: pair[1].strip() for pair in pairs if len(pair) == 2}


def _refused(exc: Exception, resources: ClusterConfig, started: bool) -> str:
    said = [line.removeprefix("sbatch: error: ") for line in str(exc).splitlines() if line.strip()]
    asked = ", ".join(f"cluster.{k}={v}" for k, v in asdict(resources).items() if v is not None and k != "log_dir")
    running = " The jobs submitted before keep running; the same command reports or resumes them." if started else ""
    return (f"Slurm refused the jobs: {' '.join(said[-2:]) or type(exc).__name__}. They asked for {asked}: fit these "
            f"to the cluster (`sinfo -o '%P %c %m %G %l'` lists each partition's CPUs, memory, GPUs and time "
            f"limit), e.g. --set cluster.gpus_per_node=0 where there are no GPUs.{running}")


def _job_error(exc: Exception, job: Any) -> str:
    message = str(exc).strip().splitlines()
    tail = [line for line in message if line.strip()][-3:]
    return f"job {getattr(job, 'job_id', '?')} failed: {' '.join(tail) or type(exc).__name__}"


def run_sweep_jobs(kind: str, plans: list[Any], out_dir: str | Path, *, console: Any,
                   max_parallel: int = 0, poll_seconds: float = 2.0) -> list[Any]:
    """The sweep's cells as submitit jobs: missing zoo teachers first, then every unfinished cell (a cell whose
    teacher is an assistant trains it first, or waits for the cell that does: `kd.engine.assistants`).

    Returns one `CellOutcome` per plan, in plan order, like `kd.results.sweep.run_sweep`."""
    from kd.engine.assistants import teacher_source
    from kd.engine.teachers import zoo_dir
    from kd.methods import get_method
    from kd.results.sweep import CellOutcome, finished_cell_summary

    outcomes: dict[int, CellOutcome] = {}
    runnable: dict[str, int] = {}
    teachers: dict[str, RunConfig] = {}
    for index, plan in enumerate(plans):
        if plan.status == "invalid" or plan.config is None:
            outcomes[index] = CellOutcome(plan, "failed", error=plan.error)
        elif plan.status == "finished":  # its summary goes with it: `kdbench tune` ranks finished points too
            outcomes[index] = CellOutcome(plan, "skipped", summary=finished_cell_summary(plan, out_dir))
        else:
            # Tuning grids hold several cells with one label (same student/teacher/method/seed): keep them apart.
            label = plan.cell.label if plan.cell.label not in runnable else f"{plan.cell.label} #{index + 1}"
            runnable[label] = index
            config = teacher_source(plan.config)
            if get_method(config.method.name).needs_teacher and not config.teacher.ckpt:
                folder = zoo_dir(config)
                if not (folder / "teacher.pt").is_file():
                    teachers.setdefault(folder.name, config)

    failed_teachers: dict[str, str] = {}

    def unfit(label: str, job_id: str, reason: str) -> None:
        say(console, f"{label}: Slurm holds job {job_id} ({reason}): its partition cannot run it with the cluster.* "
                     f"resources asked, so it may never start. Cancel it (scancel {job_id}), fit the resources to "
                     "`sinfo -o '%P %c %m %G %l'` and run the same command again.")

    def teacher_done(label: str, result: dict[str, Any] | None, error: str | None, seconds: float) -> None:
        say(console, f"{label}: {'trained' if error is None else error} ({seconds:.0f} s)")
        if error is not None:
            failed_teachers[label.removeprefix("teacher ")] = error

    if teachers:
        say(console, f"training {len(teachers)} teacher(s) the zoo lacks, one {kind} job each")
        submit_and_wait(kind, [(f"teacher {key}", cfg, True) for key, cfg in teachers.items()], out_dir,
                        max_parallel=max_parallel, poll_seconds=poll_seconds, on_done=teacher_done, on_unfit=unfit)

    cells = []
    for label, index in runnable.items():
        plan = plans[index]
        needs = zoo_dir(teacher_source(plan.config)).name if plan.config.teacher.arch else None
        if needs in failed_teachers:
            outcomes[index] = CellOutcome(plan, "failed", error=f"its teacher failed: {failed_teachers[needs]}")
        else:
            cells.append((label, plan.config, False))

    left = {label: plans[runnable[label]].est_seconds or 0.0 for label, _, _ in cells}

    def time_left() -> str:
        """The estimated training time still to come, spread over the cells that run at once; '' where unknown (a
        cluster's queue decides when its jobs start)."""
        if kind != "local" or sum(left.values()) < 1:
            return ""
        at_once = min(max_parallel, len(left)) if max_parallel > 0 else len(left)
        return duration(sum(left.values()) / at_once)

    def cell_done(label: str, result: dict[str, Any] | None, error: str | None, seconds: float) -> None:
        plan = plans[runnable[label]]
        if error is not None:
            outcomes[runnable[label]] = CellOutcome(plan, "failed", seconds, error)
        else:
            status = "skipped" if result["already_finished"] else ("resumed" if plan.status == "partial" else "ran")
            outcomes[runnable[label]] = CellOutcome(plan, status, seconds, summary=result["summary"])
        left.pop(label, None)
        remaining = time_left()
        remaining = f", about {remaining} left" if remaining else ""
        say(console, f"{label}: {outcomes[runnable[label]].status} ({seconds:.0f} s); "
                     f"{len(cells) - len(left)} of {len(cells)} done{remaining}")

    if cells:
        at_once = f", {max_parallel} at a time" if max_parallel > 0 else ""
        estimate = time_left()
        estimate = f"; about {estimate} of training" if estimate else ""
        say(console, f"submitting {len(cells)} cell(s) to the {kind} executor{at_once}{estimate}")
        submit_and_wait(kind, cells, out_dir, max_parallel=max_parallel, poll_seconds=poll_seconds,
                        on_done=cell_done, on_unfit=unfit)
    return [outcomes[i] for i in range(len(plans))]
