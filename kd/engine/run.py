"""One benchmark run: train a student (optionally distilled from a frozen teacher), evaluate it, record it.

`runs/<run-id>/` holds:
    config.yaml           the resolved configuration (feed it back with --config to repeat the run)
    environment.json      package versions, git commit, device
    metrics.jsonl         loss terms, lr, step time per logged step; validation PSNR
    checkpoints/last.pt   full training state (resumable); checkpoints/best.pt best validated weights
    student.pt            the evaluated student: {"state_dict": official key names, no adapters,
                          "kdbench_model": arch, scale, preset, fields} (kd.models.loading.package_model)
    images/               SR images of the final evaluation, with `kdbench run --save-images`
    eval/per_image.csv, eval/per_dataset.csv
    summary.json          written last: its presence means the run is finished

The run id is derived from the configuration, so the same command resumes an unfinished run or reports a
finished one; the same configuration with more `train.steps` continues a finished run as a new one (`resolve_run`).

Under torchrun every rank calls `execute_run`; they train together (`kd.engine.distributed`) and rank 0 alone
writes the run directory, evaluates and prints.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import fcntl
import json
import math
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from torch import nn

from kd.config import LabelConfig, RunConfig, config_hash, dump_yaml, run_id, run_prefix
from kd.devices import resolve_device
from kd.engine.accel import plan_accel
from kd.engine.assistants import assistant_config, ensure_assistant, load_assistant
from kd.engine.checkpoint import atomic_save, check_resumable, load_checkpoint
from kd.engine.distributed import DistContext, from_environment, rank_device
from kd.engine.environment import environment
from kd.engine.events import check_tensorboard
from kd.engine.identity import check_datasets, run_inputs
from kd.engine.progress import TrainingProgress, tee_to_file
from kd.engine.services import LazyBatches, Services
from kd.engine.teachers import (
    ensure_zoo_teacher,
    load_teacher_checkpoint,
    load_zoo_teacher,
    read_zoo_info,
    teacher_preset,
    zoo_dir,
)
from kd.engine.trainer import Trainer
from kd.errors import KdError
from kd.fileio import atomic_write_text
from kd.messages import say
from kd.methods import create_method, get_method, loss_weights, method_options
from kd.models import create, get_entry
from kd.models.loading import load_official, package_model

HOLDOUT_SEED_OFFSET = 1_000_003  # the held-out stream (meta-KD) never shares a patch seed with training


@dataclass
class RunRecord:
    run_dir: Path
    summary: dict[str, Any]
    already_finished: bool = False


def check_writable(out_dir: Path) -> None:
    """Fail before any training when the runs root cannot hold a run."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".kdbench-write-test-"):
            pass
    except OSError as exc:
        raise KdError(
            f"runs directory '{out_dir}' is not writable ({exc.strerror or exc}); choose another with --out-dir."
        ) from None


def check_names(config: RunConfig, student_given: bool = False, teacher_given: bool = False, *,
                pairing: bool = True) -> None:
    """Unknown student / teacher / method / loss term / option: fail before anything is built or written. A network
    given as an object (Python API) has no registry name to check. `pairing`: also `check_pairing` (seconds)."""
    if not student_given:
        _named_entry(config.student.arch, "student (--student / student.arch)")
    method = get_method(config.method.name)
    method_options(config.method.name, config.method.options)
    loss_weights(config.method.name, config.method.weights, options=config.method.options)
    plan_accel(config.accel, "cpu", taps=method.taps_features)  # refuses impossible combinations up front
    if method.needs_teacher:
        if not config.teacher.arch:
            raise KdError(f"method '{method.name}' needs a teacher; give --teacher (e.g. --teacher rcan).")
        if not teacher_given:
            _named_entry(config.teacher.arch, "teacher (--teacher / teacher.arch)")
        stage = method.teacher_run(config)
        if stage is not None and (student_given or teacher_given):
            raise KdError(f"method '{method.name}' trains its own teacher assistant from the student and teacher "
                          "networks by name; give them by name (student=..., teacher=...), not as objects.")
        if stage is not None:
            check_names(stage, pairing=pairing)  # the assistant's own run, with its teacher
        if pairing and not (student_given or teacher_given):
            check_pairing(config)


def check_pairing(config: RunConfig) -> None:
    """The method's taps paired on shape-only (meta-device) networks: a combination that cannot work fails here,
    before a teacher is trained or loaded (the teacher is the method's assistant where it trains one). Only the
    method's own explanation (KdError) is raised; anything the meta device cannot run is left to the real
    construction. A verdict is kept for the process: a sweep checks the same pair in every seed's cell, and each
    check takes seconds."""
    stage = get_method(config.method.name).teacher_run(config)
    teacher = ((stage.student.arch, stage.scale, stage.student.preset) if stage is not None
               else (config.teacher.arch, config.scale, teacher_preset(config)))
    key = json.dumps([config.student.arch, config.student.preset, config.scale, *teacher, config.method.name,
                      config.method.options, config.train.steps], sort_keys=True, default=repr)
    if key not in _PAIRING_VERDICTS:
        _PAIRING_VERDICTS[key] = _pairing_error(config, teacher)
    error = _PAIRING_VERDICTS[key]
    if error is not None:
        raise error.with_traceback(None)


_PAIRING_VERDICTS: dict[str, KdError | None] = {}


def _pairing_error(config: RunConfig, teacher: tuple[str, int, str | None]) -> KdError | None:
    """The pairing's KdError, or None; `teacher`: (arch, scale, preset) of the network that teaches."""
    try:
        with torch.device("meta"):
            student_net = create(config.student.arch, config.scale, config.student.preset)
            teacher_net = create(*teacher)
            create_method(config.method.name, student_net, teacher_net, config.method.options).check_schedule(
                config.train.steps)
    except KdError as exc:
        return exc
    except Exception:  # noqa: BLE001 - not a pairing verdict; the real construction will report it
        return None
    return None


def validation_note(config: RunConfig) -> str | None:
    """Training on the user's own images (a folder, or a Dataset given to `kd.distill`) while validating on a
    registered dataset (the profile's `eval.val_dataset`): said once at the start, since the validation PSNR, the
    `best` weights and `kdbench tune` then describe other images than the user's."""
    from kd.data.registry import resolve_dataset

    val = config.eval.val_dataset
    if not val:
        return None
    try:
        own_training = resolve_dataset(config.data.train, config.data.root).location is not None
    except KdError:
        own_training = True  # an object's label: kd.distill(data=<Dataset>)
    try:
        registered_val = resolve_dataset(val, config.data.root).location is None
    except KdError:
        registered_val = False  # not there: the evaluation says so
    if not (own_training and registered_val):
        return None
    return (f"the run trains on your data ({config.data.train}) but validates on eval.val_dataset '{val}', the "
            "profile's; give a held-out folder of your own images with --set eval.val_dataset=PATH (never a test "
            "set) to validate on your kind of images")


def _display_name(arch: str) -> str:
    """The registry's canonical name, or the label of a network given as an object."""
    try:
        return get_entry(arch).arch
    except KdError:
        return arch


def _student_preset(config: RunConfig, given: nn.Module | None) -> str | None:
    if given is not None:
        return (getattr(given, "kd_spec", None) or {}).get("preset")
    return config.student.preset or get_entry(config.student.arch).default_preset


def _named_entry(arch: str, role: str) -> None:
    try:
        get_entry(arch)
    except KdError as exc:
        raise KdError(f"{role}: {exc}") from None


def _clean(value: Any) -> Any:
    """JSON-safe: NaN (e.g. LPIPS switched off) becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _macs(model: nn.Module, scale: int) -> int | None:
    try:
        from kd.metrics.cost import macs_for_output

        return int(macs_for_output(model, scale))
    except Exception:  # cost counting is informative; never fail a finished run on it
        return None


def _params(model: nn.Module) -> int:
    from kd.metrics.cost import count_parameters

    return int(count_parameters(model))


def _write_csv(frame, path: Path) -> None:
    atomic_write_text(path, frame.to_csv(index=False))


def _write_eval_spec(result: Any, path: Path) -> None:
    """The metric conventions and LPIPS variant the evaluation used (when the evaluator reports them)."""
    spec = {
        "metric_spec": getattr(result, "metric_spec", None),
        "lpips_variant": getattr(result, "lpips_variant", None),
        "notes": getattr(result, "notes", []),
    }
    atomic_write_text(path, json.dumps(_clean(spec), indent=2, default=str) + "\n")


def locate_run(config: RunConfig, out_dir: str | Path, services: Services | None = None) -> Path:
    """`<out_dir>/<run id>`: the id hashes the configuration and the run's inputs (`kd.engine.identity`), and the
    run it extends where there is one (`resolve_run`)."""
    strict = (services or Services()).reads_datasets
    return resolve_run(config, Path(out_dir), run_inputs(config, strict=strict))[0]


def resolve_run(config: RunConfig, out_dir: Path, inputs: dict[str, Any], *,
                extend: bool = True) -> tuple[Path, dict[str, Any]]:
    """(run folder, inputs) of this configuration. Its own run when that is finished or started; otherwise, with
    `extend`, a finished run in `out_dir` of the same configuration and inputs but fewer `train.steps` (the most
    of them, with its last checkpoint) is extended: the new run continues from that run's last checkpoint, and its
    inputs (hence its id) name the run it extends, so it is never taken for a run trained from scratch with the
    same step count. An extension finished earlier is found again even once the run it extends is gone."""
    run_dir = out_dir / run_id(config, inputs)
    if not extend or finished_summary(run_dir) is not None or (run_dir / "checkpoints" / "last.pt").is_file():
        return run_dir, inputs
    variants = _finished_variants(config, out_dir, inputs)
    bases = [(steps, folder) for folder, steps, _ in variants
             if steps < config.train.steps and (folder / "checkpoints" / "last.pt").is_file()]
    if bases:
        steps, base = max(bases)
        extended = {**inputs, "extends": {"run_id": base.name, "steps": steps}}
        return out_dir / run_id(config, extended), extended
    earlier = [(folder, recorded) for folder, steps, recorded in variants
               if steps == config.train.steps and "extends" in recorded]
    return earlier[0] if earlier else (run_dir, inputs)


def _finished_variants(config: RunConfig, out_dir: Path,
                       inputs: dict[str, Any]) -> list[tuple[Path, int, dict[str, Any]]]:
    """(folder, steps, inputs) of the finished runs in `out_dir` whose configuration differs from `config` in
    `train.steps` at most and whose inputs are `inputs`, apart from the run each may extend."""
    from kd.config import from_dict, read_config_file

    wanted = json.loads(json.dumps(inputs))
    found = []
    for folder in sorted(out_dir.glob(f"{run_prefix(config)}-*")):
        summary = finished_summary(folder)
        if summary is None:
            continue
        try:
            saved = from_dict(read_config_file(folder / "config.yaml"), f"'{folder / 'config.yaml'}'")
        except KdError:
            continue
        recorded = dict(summary.get("inputs") or {})
        same_steps = dataclasses.replace(saved, train=dataclasses.replace(saved.train, steps=config.train.steps))
        if (config_hash(same_steps) == config_hash(config)
                and {k: v for k, v in recorded.items() if k != "extends"} == wanted):
            found.append((folder, saved.train.steps, recorded))
    return found


def finished_summary(run_dir: Path, console: Console | None = None) -> dict[str, Any] | None:
    """The run's summary, or None when it is unfinished; a damaged summary counts as unfinished (with a warning):
    running the same command evaluates the run again from its final checkpoint and rewrites it."""
    from kd.results.store import RUN_SUMMARY_KEYS, read_summary

    path = run_dir / "summary.json"
    if not path.is_file():
        return None
    try:
        return read_summary(path, RUN_SUMMARY_KEYS)
    except (OSError, ValueError) as exc:
        if console is not None:
            say(console, f"{path} is damaged ({exc}); the run is evaluated again from its last checkpoint and the "
                         "summary rewritten", "warning")
        return None


def relabel(run_dir: Path, summary: dict[str, Any], config: RunConfig) -> dict[str, Any]:
    """A finished run asked for again with another --name or --tag takes them: its labels are rewritten in its
    summary.json and config.yaml (a label is not the configuration, so the run stays the same run)."""
    label = asdict(config.label)
    if label == asdict(LabelConfig()) or summary.get("label") == label:
        return summary  # no label asked for: the run keeps its own
    summary = {**summary, "label": label}
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    path = run_dir / "config.yaml"
    if path.is_file():
        saved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        atomic_write_text(path, yaml.safe_dump({**saved, "label": label}, sort_keys=False))
    return summary


# Files `execute_run` writes in a run folder; `--restart` and the clean-up of a failed start remove only these.
RUN_FILES = ("summary.json", "student.pt", "metrics.jsonl", "config.yaml", "environment.json", "inputs.json",
             "checkpoints/last.pt", "checkpoints/previous.pt", "checkpoints/best.pt", "eval/per_image.csv",
             "eval/per_dataset.csv", "eval/spec.json")


def _remove_run_files(run_dir: Path, names: tuple[str, ...]) -> None:
    for name in names:
        (run_dir / name).unlink(missing_ok=True)
    for folder in (run_dir / "checkpoints", run_dir / "eval"):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty: a file kdbench did not write keeps its folder


def execute_run(
    config: RunConfig,
    *,
    out_dir: str | Path = "runs",
    services: Services | None = None,
    console: Console | None = None,
    progress: bool = True,
    dist: DistContext | None = None,
    restart: bool = False,
    save_images: bool = False,
    student: nn.Module | None = None,
    teacher: nn.Module | None = None,
) -> RunRecord:
    """Train, evaluate and record one run, or return the record of the finished one.

    `restart`: discard the run's training state (checkpoints, metrics, evaluation) and train it from scratch.
    `save_images`: also write the final evaluation's SR images to `<run>/images/<dataset>/x<s>/`.
    `student` / `teacher`: networks given as objects instead of being built from `config.student` /
    `config.teacher` (the Python API, `kd.distill`); the config's arch fields then only label the run. The student
    is copied, never trained in place; the teacher is used frozen."""
    services = services or Services()
    out_dir = Path(out_dir)
    check_names(config, student is not None, teacher is not None)
    if config.log.tensorboard:
        check_tensorboard()
    check_writable(out_dir)
    device = resolve_device(config.device)
    dist = dist or from_environment(device)
    device = rank_device(device, dist)
    console = (console or Console(stderr=True)) if dist.is_main else Console(quiet=True)
    progress = progress and dist.is_main
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    if services.reads_datasets:
        check_datasets(config)  # a missing dataset is reported before a teacher is trained
    if config.student.init and not Path(config.student.init).is_file():
        raise KdError(f"student checkpoint '{config.student.init}' (student.init) not found.")
    if get_method(config.method.name).needs_teacher and teacher is None:
        if assistant_config(config) is not None:  # trains its zoo teacher first when needed
            ensure_assistant(config, services=services, console=console, progress=progress, dist=dist)
        elif config.teacher.ckpt:
            if not Path(config.teacher.ckpt).is_file():
                raise KdError(f"teacher checkpoint '{config.teacher.ckpt}' (--teacher-ckpt) not found.")
        else:  # the run id covers the teacher's weights: they must exist first
            ensure_zoo_teacher(config, services=services, console=console, progress=progress, dist=dist)
    inputs = run_inputs(config, strict=services.reads_datasets, student=student, teacher=teacher)
    run_dir, inputs = resolve_run(config, out_dir, inputs, extend=not restart)
    summary = finished_summary(run_dir, console if not restart else None)
    if summary is not None and not restart:
        if dist.is_main:
            summary = relabel(run_dir, summary, config)
        return RunRecord(run_dir, summary, already_finished=True)
    created = not run_dir.exists()
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with run_lock(run_dir) if dist.is_main else contextlib.nullcontext():
            with tee_to_file(console, run_dir / "train.log") if dist.is_main else contextlib.nullcontext() as log:
                if restart and dist.is_main:
                    _remove_run_files(run_dir, RUN_FILES)
                    say(console, f"--restart: discarded the training state of run {run_dir.name}")
                return _train_and_record(config, run_dir, inputs, services, console, progress, dist, device, log,
                                         save_images, student, teacher)
    except BaseException:
        if created and dist.is_main and not (run_dir / "checkpoints" / "last.pt").exists():
            _remove_run_files(run_dir, (*RUN_FILES, ".lock", "train.log"))
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # a failed start leaves no empty run folder behind
        raise


def _carry_over(base_dir: Path, run_dir: Path) -> None:
    """An extension starts with the metrics log and best checkpoint of the run it extends, so its own record covers
    every step (its training continues from the base's last checkpoint, `Trainer(resume_from=...)`)."""
    for name in ("metrics.jsonl", "checkpoints/best.pt"):
        source, target = base_dir / name, run_dir / name
        if source.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Exclusive, non-blocking lock on `<run>/.lock`: a run that another process is training is not trained twice
    (e.g. a sweep re-submitted while its first jobs still run)."""
    with open(run_dir / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise KdError(
                f"run {run_dir.name} is being trained by another process (lock {run_dir / '.lock'}); wait for it "
                "to finish or stop it, then run the same command again."
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _train_and_record(config: RunConfig, run_dir: Path, inputs: dict[str, Any], services: Services,
                      console: Console, progress: bool, dist: DistContext, device: str, log: Console | None,
                      save_images: bool, given_student: nn.Module | None,
                      given_teacher: nn.Module | None) -> RunRecord:
    rid = run_dir.name
    summary_path = run_dir / "summary.json"
    check_resumable(run_dir / "checkpoints" / "last.pt",
                    f"run the same command with --restart to train run {rid} from scratch")
    extends = inputs.get("extends")
    base_dir = run_dir.parent / extends["run_id"] if extends else None
    if dist.is_main:
        resuming = (run_dir / "checkpoints" / "last.pt").is_file()
        processes = f" on {dist.world_size} processes" if dist.enabled else ""
        if extends and not resuming:
            say(console, f"extending run {extends['run_id']} (finished at step {extends['steps']}) to "
                         f"{config.train.steps} steps as run {rid} in {run_dir}{processes}: training continues from "
                         f"its last checkpoint, the learning rate following the {config.train.schedule} schedule of "
                         f"a {config.train.steps}-step run (--restart trains one from scratch instead)")
            _carry_over(base_dir, run_dir)
        else:
            say(console, f"{'resuming' if resuming else 'starting'} run {rid} in {run_dir}{processes}")
        note = validation_note(config)
        if note:
            say(console, note, "note")
        atomic_write_text(run_dir / "config.yaml", dump_yaml(config))
        atomic_write_text(run_dir / "environment.json", json.dumps(environment(device), indent=2) + "\n")
        atomic_write_text(run_dir / "inputs.json", json.dumps(inputs, indent=2) + "\n")

    method_cls = get_method(config.method.name)
    teacher, teacher_info = None, None
    if method_cls.needs_teacher:
        if given_teacher is not None:
            teacher = given_teacher.to(device)
            teacher_info = {"source": "module"}
        elif assistant_config(config) is not None:
            teacher, teacher_info = load_assistant(config, device, strict=services.reads_datasets)
        elif config.teacher.ckpt:
            teacher = load_teacher_checkpoint(config, config.teacher.ckpt).to(device)
            teacher_info = {"source": "checkpoint", "path": str(config.teacher.ckpt)}
        else:
            folder = zoo_dir(config)
            zoo_info = read_zoo_info(folder)
            teacher = load_zoo_teacher(config, folder).to(device)
            teacher_info = {"source": "zoo", "key": zoo_info.get("key"), "eval": zoo_info.get("eval")}
        teacher_info["sha256"] = (inputs.get("teacher") or {}).get("sha256")
        given_spec = getattr(given_teacher, "kd_spec", None) if given_teacher is not None else None
        preset = (given_spec or {}).get("preset") if given_teacher is not None else teacher_preset(config)
        teacher_info.update(arch=_display_name(config.teacher.arch), preset=preset)
        if getattr(teacher, "needs_hr", False):
            teacher_info["sees_hr"] = True  # KDSR's teacher: its scores are not blind SR

    # Seed right before each construction so the student's initial weights depend on the seed only (paired
    # seeds across methods), never on whether a teacher or adapters were built.
    torch.manual_seed(config.seed)
    if given_student is not None:
        student = copy.deepcopy(given_student)
    else:
        student = create(config.student.arch, config.scale, config.student.preset)
    if config.student.init:
        try:
            load_official(student, config.student.init)
        except KdError as exc:
            raise KdError(f"student.init: {exc}") from None
    student = student.to(device)
    torch.manual_seed(config.seed + 1)
    method = create_method(config.method.name, student, teacher, config.method.options).to(device)
    method.check_schedule(config.train.steps)
    weights = loss_weights(config.method.name, config.method.weights, method)
    accel = plan_accel(config.accel, device, taps=method_cls.taps_features)
    for note in accel.warnings:
        say(console, note, "warning")
    accel.network(student)
    if teacher is not None:
        accel.network(teacher, frozen_teacher=True)
        teacher_info["dtype"] = str(accel.teacher_dtype).removeprefix("torch.")  # what `auto` resolved to here

    train = config.train
    batches = services.make_batches(config, train, seed=config.seed, dist=dist, pin_memory=accel.pin_memory)
    holdout = LazyBatches(
        lambda: services.make_batches(config, train, seed=config.seed + HOLDOUT_SEED_OFFSET, dist=dist),
        train.batch_size,
    )

    trainer = Trainer(
        train, student=student, teacher=teacher, method=method, weights=weights, batches=batches,
        run_dir=run_dir, seed=config.seed + 2, validate=services.validator(config, device, config.student.arch),
        holdout=holdout, config_hash=config_hash(config), device=device, dist=dist, accel=accel,
        tensorboard=config.log.tensorboard, reconstruction=config.method.rec,
        resume_from=base_dir / "checkpoints" / "last.pt" if base_dir is not None else None,
        progress=TrainingProgress(console if progress else None, f"{config.student.arch}/{config.method.name}",
                                  train.log_every, log),
    )
    outcome = trainer.fit()
    if not dist.is_main:
        dist.barrier()  # rank 0 evaluates and writes the record
        return RunRecord(run_dir, {})

    final = trainer.eval_model()
    if config.eval.weights == "best" and (run_dir / "checkpoints" / "best.pt").is_file():
        final = copy.deepcopy(final)
        final.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "best.pt")["student"])
    atomic_save(package_model(final), run_dir / "student.pt")

    images = {"save_images": run_dir / "images"} if save_images else {}
    result = services.evaluate(
        final, list(config.eval.datasets), config.scale, data_root=config.data.root,
        with_lpips=config.eval.lpips, progress=progress, model_name=config.student.arch, device=device,
        degradation=config.data.degradation, **images,
    )
    for note in getattr(result, "notes", []):
        say(console, note, "note")
    _write_eval_spec(result, run_dir / "eval" / "spec.json")
    _write_csv(result.per_image, run_dir / "eval" / "per_image.csv")
    _write_csv(result.per_dataset, run_dir / "eval" / "per_dataset.csv")

    summary = {
        "run_id": rid,
        "student": _display_name(config.student.arch),
        "student_preset": _student_preset(config, given_student),
        "teacher": teacher_info,
        "method": config.method.name,
        "loss_weights": weights,
        "reconstruction": config.method.rec,
        "scale": config.scale,
        "seed": config.seed,
        "profile": config.profile,
        "degradation": config.data.degradation,
        "label": asdict(config.label),
        "device": device,
        "world_size": dist.world_size,
        "params": _params(student),
        "macs_1280x720": _macs(final, config.scale),
        "steps": outcome.steps,
        "train_seconds": round(outcome.train_seconds, 3),
        "best_val": {"dataset": config.eval.val_dataset, "step": outcome.best_step, "psnr_y": outcome.best_psnr},
        "eval_weights": config.eval.weights + (" (ema)" if trainer.ema is not None else ""),
        "datasets": {
            row["dataset"]: {"psnr_y": row["psnr_y"], "ssim_y": row["ssim_y"], "lpips": row["lpips"]}
            for row in result.per_dataset.to_dict("records")
        },
        "dataset_images": {row["dataset"]: row.get("images") for row in result.per_dataset.to_dict("records")},
        "inputs": inputs,
        **({"extends": extends} if extends else {}),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_text(summary_path, json.dumps(_clean(summary), indent=2) + "\n")
    dist.barrier()
    return RunRecord(run_dir, _clean(summary))
