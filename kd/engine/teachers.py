"""Teachers: loading a given checkpoint, or the teacher zoo (trained once, cached, reused by every run).

Zoo entries live in `<cache>/teachers/<arch>-<preset>-x<scale>-<data>-seed<seed>-<recipe hash>/` (`<data>` ends
with the degradation on the blind-SR track, whose teachers are its own): the training
run itself (resumable checkpoints, metrics.jsonl), `teacher.pt` (the final weights, official key names, so
`kd.models.load_official` reads them) and `teacher.json` (what it is, how it was trained, its evaluation).
A lock file per entry lets concurrent runs (a parallel sweep) share one training instead of racing.
`export_entry` / `import_entry` carry a finished entry to another machine (a new session's cache starts empty).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from kd.config import RunConfig
from kd.devices import resolve_device
from kd.engine.checkpoint import atomic_save
from kd.engine.distributed import SINGLE, DistContext, rank_device
from kd.engine.events import check_tensorboard
from kd.engine.identity import check_datasets
from kd.engine.progress import TrainingProgress, tee_to_file
from kd.engine.services import Services
from kd.engine.trainer import Trainer
from kd.errors import KdError
from kd.fileio import atomic_write_text, check_plain_name, checkout_root, current_umask, path_component, sha256_file
from kd.messages import say
from kd.methods import create_method, loss_weights
from kd.models import create, get_entry, load_official
from kd.models.preset_identity import unpinned_fields
from kd.models.sources import network_source


def teacher_preset(config: RunConfig) -> str:
    return config.teacher.preset or get_entry(config.teacher.arch).default_preset


def zoo_key(config: RunConfig) -> str:
    arch = get_entry(config.teacher.arch).arch
    fields = unpinned_fields(arch, teacher_preset(config))  # an unknown preset fails here, before it names a folder
    code = network_source(arch)
    recipe = json.dumps(dataclasses.asdict(config.teacher.train), sort_keys=True)
    identity = (f"{recipe}|augment={config.data.augment}" + (f"|fields={fields}" if fields else "")
                + (f"|network={json.dumps(code, sort_keys=True)}" if code else ""))
    digest = hashlib.sha256(identity.encode()).hexdigest()[:6]
    data = path_component(config.data.train)  # a folder path may name the training data
    if config.data.degradation != "bicubic":  # a blind-SR teacher is its own entry; bicubic keys stay as they were
        data += f"-{config.data.degradation}"
    return f"{arch}-{teacher_preset(config)}-x{config.scale}-{data}-seed{config.teacher.seed}-{digest}"


def zoo_root() -> Path:
    from kd.data.roots import cache_dir

    return cache_dir() / "teachers"


def zoo_entry(key: str) -> Path:
    """The zoo folder of `key`, a plain name (a key from a record or the command line never leads outside the zoo)."""
    return zoo_root() / check_plain_name(key, "zoo key")


def zoo_dir(config: RunConfig) -> Path:
    return zoo_entry(zoo_key(config))


def build_teacher(config: RunConfig) -> nn.Module:
    return create(config.teacher.arch, config.scale, config.teacher.preset)


def load_teacher_checkpoint(config: RunConfig, path: str | Path) -> nn.Module:
    """The configured teacher with weights from `path`; a checkpoint of another scale or architecture is reported
    as such by `load_official`."""
    if not Path(path).is_file():
        raise KdError(f"teacher checkpoint '{path}' (--teacher-ckpt) not found.")
    return load_official(build_teacher(config), path)


REBUILD_HINT = ("the next `kdbench run` or `kdbench teacher train` that uses this teacher rebuilds it from the "
                "entry's training checkpoint")


def read_zoo_info(folder: Path, remedy: str = REBUILD_HINT) -> dict[str, Any]:
    """`teacher.json` of a zoo entry (or an export); a damaged one raises `KdError` naming it and the `remedy`."""
    meta = folder / "teacher.json"
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
        if not isinstance(info, dict) or not isinstance(info.get("key"), str):
            raise ValueError("not a kdbench teacher record")
        check_plain_name(info["key"], "key")
        float(info["train_seconds"]), int(info["steps"])
        for scores in dict(info.get("eval") or {}).values():
            float(scores["psnr_y"])
    except (OSError, ValueError, KeyError, TypeError, KdError) as exc:
        raise KdError(f"zoo entry {folder}: teacher.json is damaged ({type(exc).__name__}: {exc}); "
                      f"{remedy}.") from None
    return info


def complete_entry(folder: Path) -> bool:
    """An entry with weights and a readable record; anything less is (re)built by `train_teacher`."""
    if not (folder / "teacher.pt").is_file():
        return False
    try:
        read_zoo_info(folder)
    except KdError:
        return False
    return True


def list_zoo(damaged: list[str] | None = None) -> list[dict[str, Any]]:
    """The readable entries; a damaged one is left out, with its message appended to `damaged`."""
    root = zoo_root()
    if not root.is_dir():
        return []
    entries = []
    for meta in sorted(root.glob("*/teacher.json")):
        try:
            info = read_zoo_info(meta.parent)
        except KdError as exc:
            if damaged is not None:
                damaged.append(str(exc))
            continue
        info["path"] = str(meta.parent / "teacher.pt")
        entries.append(info)
    return entries


def train_teacher(
    config: RunConfig, *, services: Services | None = None, console: Console | None = None, progress: bool = True,
    dist: DistContext = SINGLE,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train the configured teacher with its recipe (`teacher.train`) into the zoo, or resume that training.

    Under torchrun all ranks train it together; rank 0 evaluates it and writes the entry."""
    services = services or Services()
    console = console or Console(stderr=True)
    recipe = config.teacher.train
    folder = zoo_dir(config)
    if config.log.tensorboard:
        check_tensorboard()
    if services.reads_datasets:
        check_datasets(config)  # missing images fail before the zoo entry exists
    device = rank_device(resolve_device(config.device), dist)
    created = not folder.exists()
    if dist.is_main:
        folder.mkdir(parents=True, exist_ok=True)
    try:
        torch.manual_seed(config.teacher.seed)
        model = build_teacher(config).to(device)
        method = create_method("none", model, None)
        batches = services.make_batches(config, recipe, seed=config.teacher.seed, dist=dist)

        with tee_to_file(console, folder / "train.log") if dist.is_main else contextlib.nullcontext() as log:
            trainer = Trainer(
                recipe, student=model, teacher=None, method=method, weights=loss_weights("none"), batches=batches,
                run_dir=folder, seed=config.teacher.seed, device=device, dist=dist,
                tensorboard=config.log.tensorboard, validate=services.validator(config, device, config.teacher.arch),
                progress=TrainingProgress(console if progress else None, f"teacher {config.teacher.arch}",
                                          recipe.log_every, log),
            )
            outcome = trainer.fit()
    except BaseException:
        if created and dist.is_main and not (folder / "checkpoints" / "last.pt").exists():
            with contextlib.suppress(KdError, OSError):  # the training's own error is the one to report
                _remove_unfinished(folder)  # a failed start leaves no entry that `teacher import` would refuse
        raise
    final = trainer.eval_model()
    if not dist.is_main:
        dist.barrier()
        return final, {"key": zoo_key(config)}
    result = services.evaluate(
        final, list(config.eval.datasets), config.scale, data_root=config.data.root, with_lpips=False,
        progress=progress, model_name=config.teacher.arch, device=device, degradation=config.data.degradation,
    )
    for note in getattr(result, "notes", []):  # e.g. that KDSR's teacher is evaluated with the HR it needs
        say(console, note, "note")
    scores = {
        row["dataset"]: {"psnr_y": float(row["psnr_y"]), "ssim_y": float(row["ssim_y"])}
        for row in result.per_dataset.to_dict("records")
    }
    info = {
        "key": zoo_key(config),
        "arch": get_entry(config.teacher.arch).arch,
        "preset": teacher_preset(config),
        "scale": config.scale,
        "data": config.data.train,
        **({"degradation": config.data.degradation} if config.data.degradation != "bicubic" else {}),
        "seed": config.teacher.seed,
        "recipe": dataclasses.asdict(recipe),
        "steps": outcome.steps,
        "train_seconds": round(outcome.train_seconds, 3),
        "eval": scores,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_save({k: v.cpu() for k, v in final.state_dict().items()}, folder / "teacher.pt")
    atomic_write_text(folder / "teacher.json", json.dumps(info, indent=2) + "\n")
    dist.barrier()
    return final, info


@contextlib.contextmanager
def entry_lock(folder: Path) -> Iterator[None]:
    """Exclusive lock on `<entry>.lock` beside the zoo entry (blocks while another process trains it)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_zoo_teacher(
    config: RunConfig, *, services: Services | None = None, console: Console | None = None, progress: bool = True,
    dist: DistContext = SINGLE,
) -> Path:
    """The zoo entry's folder for this configuration, training (or rebuilding) the teacher first when needed."""
    console = console or Console(stderr=True)
    folder = zoo_dir(config)
    # Only rank 0 takes the lock: the other ranks wait for it at the barrier, then decide as it does.
    with entry_lock(folder) if dist.is_main else contextlib.nullcontext():
        dist.barrier()
        if complete_entry(folder):
            say(console, f"using cached teacher {folder.name} ({folder / 'teacher.pt'})")
            return folder
        if (folder / "teacher.pt").is_file():
            say(console, f"zoo entry {folder}: teacher.json is damaged; rebuilding it from the training checkpoint",
                "warning")
        else:
            export = exported_teachers().get(folder.name)
            instead = f"; `kdbench teacher import {export}` adds it without training" if export else ""
            say(console, f"teacher {folder.name} is not in the zoo: training it first "
                         f"({config.teacher.train.steps} steps; cached in {folder}){instead}")
        train_teacher(config, services=services, console=console, progress=progress, dist=dist)
    return folder


def zoo_teacher(
    config: RunConfig, *, services: Services | None = None, console: Console | None = None, progress: bool = True,
    dist: DistContext = SINGLE,
) -> tuple[nn.Module, dict[str, Any]]:
    """The cached teacher for this configuration, training it first when the zoo does not have it."""
    console = console or Console(stderr=True)
    folder = ensure_zoo_teacher(config, services=services, console=console, progress=progress, dist=dist)
    return load_zoo_teacher(config, folder), read_zoo_info(folder)


def load_zoo_teacher(config: RunConfig, folder: Path) -> nn.Module:
    """The zoo entry's weights in the configured teacher; weights that cannot serve (NaN, another network) say how
    to train the entry again."""
    try:
        return load_official(build_teacher(config), folder / "teacher.pt")
    except KdError as exc:
        raise KdError(f"zoo entry {folder.name} cannot serve as the teacher (train it again: `kdbench teacher train "
                      f"--teacher {config.teacher.arch} --retrain` with this run's options): {exc}") from None


# ------------------------------------------------------------------------------------ moving entries between machines

ENTRY_FILES = ("teacher.pt", "teacher.json", "metrics.jsonl", "train.log")
CHECKSUM = "teacher.pt.sha256"


def _refuse_links(folder: Path) -> None:
    """An entry's files must be its own: a symbolic link would copy a file from elsewhere into the zoo (or out)."""
    for name in (*ENTRY_FILES, CHECKSUM):
        if (folder / name).is_symlink():
            raise KdError(f"{folder / name} is a symbolic link; kdbench copies only a teacher's own files: replace "
                          "it by the file itself (or remove it), then run the same command again.")


def _copy_entry(source: Path, target: Path, *, with_checksum: bool) -> None:
    """The entry's files into a temporary folder beside `target`, renamed to `target` once complete."""
    _refuse_links(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        for name in ENTRY_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, work / name)
        if with_checksum:
            atomic_write_text(work / CHECKSUM, f"{sha256_file(work / 'teacher.pt')}  teacher.pt\n")
        os.chmod(work, 0o777 & ~current_umask())  # mkdtemp makes 0700
        work.rename(target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def export_entry(key: str, out_dir: str | Path) -> Path:
    """Copy the zoo entry `key` (weights, record, training log; not the resumable checkpoints) to `out_dir/key/`
    with the sha256 of its weights, so another machine can `import_entry` it instead of training it again."""
    source = zoo_entry(key)
    if not complete_entry(source):
        raise KdError(f"teacher '{key}' is not a finished zoo entry in {zoo_root()}: `kdbench teacher list` shows "
                      "the cached teachers.")
    target = Path(out_dir) / key
    if target.exists():
        raise KdError(f"{target} already exists; kdbench never overwrites it: give another --out folder or remove it.")
    _copy_entry(source, target, with_checksum=True)
    return target


def exported_entries(folder: str | Path) -> list[Path]:
    """`folder` itself when it is an exported teacher, else the exported teachers directly inside it (as
    `reports/teachers/` holds them beside a README), so one command imports a whole collection."""
    folder = Path(folder)
    if (folder / CHECKSUM).is_file() or not folder.is_dir():
        return [folder]
    inside = sorted(child for child in folder.iterdir() if not child.is_symlink() and (child / CHECKSUM).is_file())
    return inside or [folder]


COMMITTED_TEACHERS = "reports/teachers"  # the teachers of the committed reports, in a checkout


def exported_teachers(folders: Sequence[str | Path] = ()) -> dict[str, Path]:
    """Exported teachers by zoo key, found in `folders` (each an export or a folder of them) and, when kdbench runs
    from a checkout, in its `reports/teachers`: what `kdbench teacher import` can add instead of a training."""
    root = checkout_root()
    committed = [root / COMMITTED_TEACHERS] if root is not None and (root / COMMITTED_TEACHERS).is_dir() else []
    found: dict[str, Path] = {}
    for given in (*folders, *committed):
        for entry in exported_entries(given):
            if not (entry / CHECKSUM).is_file():
                continue
            try:
                found.setdefault(read_zoo_info(entry)["key"], entry)
            except KdError:
                continue  # a damaged export is reported by `teacher import`, not here
    return found


def import_entry(folder: str | Path) -> tuple[Path, bool]:
    """Put an exported entry into the zoo after checking its weights (sha256, then loaded with weights_only into the
    network its record names). Returns (zoo folder, whether it was added); an identical entry already there is left
    as it is, a different one is never replaced."""
    folder = Path(folder)
    if not (folder / "teacher.pt").is_file() or not (folder / CHECKSUM).is_file():
        raise KdError(f"{folder} is neither an exported teacher nor a folder of them (an export holds teacher.pt, "
                      f"teacher.json and {CHECKSUM}, as `kdbench teacher export` writes them).")
    _refuse_links(folder)
    info = read_zoo_info(folder, "export the teacher again")
    expected = (folder / CHECKSUM).read_text(encoding="utf-8", errors="replace").split()[:1]
    actual = sha256_file(folder / "teacher.pt")
    if [actual] != expected:
        shown = f"({expected[0][:12]}...)" if expected else "(empty)"
        raise KdError(f"{folder / 'teacher.pt'}: sha256 {actual[:12]}... does not match {CHECKSUM} {shown}: the "
                      "file is damaged; export it again.")
    try:
        network = create(str(info["arch"]), int(info["scale"]), info.get("preset"))
    except (KdError, KeyError, TypeError, ValueError) as exc:
        raise KdError(f"{folder / 'teacher.json'} does not name a network kdbench can build ({type(exc).__name__}: "
                      f"{exc}); export the teacher again.") from None
    load_official(network, folder / "teacher.pt")
    target = zoo_entry(info["key"])
    with entry_lock(target):
        if complete_entry(target):
            if sha256_file(target / "teacher.pt") == actual:
                return target, False
            raise KdError(f"the zoo already holds a different teacher {info['key']} ({target}); kdbench never "
                          "replaces it: runs made with it would no longer match their records.")
        if target.exists():  # no one trains it (we hold its lock): a failed start or an interrupted training
            if (target / "checkpoints" / "last.pt").is_file():
                warnings.warn(f"zoo entry {target} held an interrupted training of this teacher; the imported "
                              "finished teacher replaces it")
            _remove_unfinished(target)
        _copy_entry(folder, target, with_checksum=False)
    return target, True


# What a zoo entry's training writes (besides teacher.pt and teacher.json): an unfinished entry holding only these
# is kdbench's own, and a finished teacher of the same key (`import_entry`) supersedes it.
TRAINING_FILES = ("metrics.jsonl", "train.log", "checkpoints/last.pt", "checkpoints/previous.pt",
                  "checkpoints/best.pt")


def _remove_unfinished(folder: Path) -> None:
    """Remove an unfinished zoo entry that holds only files kdbench writes; any other file refuses it, naming it."""
    own = {folder / name for name in (*TRAINING_FILES, "teacher.pt", "teacher.json")}
    events = folder / "tensorboard"
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or (path.is_file() and path not in own and path.parent != events
                                 and not _atomic_leftover(path)):
            raise KdError(f"zoo entry {folder} is unfinished and holds {path}, which kdbench did not write: move "
                          "that file (or the folder) away, then run the same command again.")
    shutil.rmtree(folder)


def _atomic_leftover(path: Path) -> bool:
    """A temporary file of an atomic write killed half-way (`kd.fileio.atomic_write`: `.<name>.<random>.tmp`)."""
    return path.name.startswith(".") and path.name.endswith(".tmp")

