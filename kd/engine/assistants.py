"""Teacher assistants: runs whose student becomes another run's teacher (`Distiller.teacher_run`, e.g. TAS).

An assistant is an ordinary kdbench run (`execute_run`: run id, `summary.json` record, resumable checkpoints) kept in
`<cache>/assistants/<run id>/` instead of a runs folder: like a zoo teacher it is trained once, before the first run
that needs it, and shared by every runs folder and every seed of a grid. Its run id hashes its configuration and
inputs (its own teacher's weights among them); a run it teaches hashes that run id and the sha256 of its
`student.pt` (`assistant_identity`), so retraining it gives its pupils new ids. A lock per assistant lets
concurrent runs (a parallel sweep) wait for one training instead of racing.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from torch import nn

from kd.config import RunConfig, config_hash, run_id, run_prefix
from kd.engine.distributed import SINGLE, DistContext
from kd.engine.services import Services
from kd.engine.teachers import entry_lock
from kd.fileio import sha256_file
from kd.messages import say
from kd.methods import get_method
from kd.models.loading import model_from_checkpoint


def assistant_root() -> Path:
    from kd.data.roots import cache_dir

    return cache_dir() / "assistants"


def assistant_config(config: RunConfig) -> RunConfig | None:
    """The configuration of the run that trains this run's teacher, or None for a teacher from the zoo or a file."""
    return get_method(config.method.name).teacher_run(config)


def teacher_source(config: RunConfig) -> RunConfig:
    """The configuration, along the chain of assistants, whose teacher comes from the zoo or a checkpoint."""
    while (stage := assistant_config(config)) is not None:
        config = stage
    return config


def assistant_dir(stage: RunConfig, strict: bool = True) -> Path:
    """The folder of the assistant run `stage` (`strict`: a missing dataset is an error, as for any run id)."""
    from kd.engine.identity import run_inputs

    return assistant_root() / run_id(stage, run_inputs(stage, strict=strict))


def finished(folder: Path) -> bool:
    return (folder / "summary.json").is_file() and (folder / "student.pt").is_file()


def assistant_identity(stage: RunConfig, strict: bool = True) -> dict[str, Any]:
    """What a pupil's run id hashes of its assistant: the assistant's run id and the sha256 of its weights (None
    while it is not trained: no run of the pupil can exist then)."""
    folder = assistant_dir(stage, strict)
    return {"source": "assistant", "run": folder.name,
            "sha256": sha256_file(folder / "student.pt") if finished(folder) else None}


def ensure_assistant(
    config: RunConfig, *, services: Services | None = None, console: Console | None = None, progress: bool = True,
    dist: DistContext = SINGLE,
) -> Path:
    """The finished assistant run for this run, trained (or resumed) first when the cache does not hold it."""
    from kd.engine.run import execute_run

    console = console or Console(stderr=True)
    stage = assistant_config(config)
    assert stage is not None, f"method '{config.method.name}' has no teacher run"
    label = (f"{stage.student.arch} x{stage.scale} from {stage.teacher.arch} x{stage.scale} by "
             f"{stage.method.name}, {stage.train.steps} steps")
    lock = assistant_root() / f"{run_prefix(stage)}-{config_hash(stage)}"
    # Only rank 0 takes the lock: the other ranks wait for it at the barrier, then train with it.
    with entry_lock(lock) if dist.is_main else contextlib.nullcontext():
        dist.barrier()
        record = execute_run(stage, out_dir=assistant_root(), services=services, console=console,
                             progress=progress, dist=dist)
    state = "cached" if record.already_finished else "trained"
    say(console, f"teacher assistant {record.run_dir.name} ({label}): {state}, in {record.run_dir}")
    return record.run_dir


def load_assistant(config: RunConfig, device: str, strict: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """The trained assistant (its `student.pt`) and what a pupil's summary records of it."""
    stage = assistant_config(config)
    assert stage is not None, f"method '{config.method.name}' has no teacher run"
    folder = assistant_dir(stage, strict)
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    network = model_from_checkpoint(folder / "student.pt").to(device)
    info = {"source": "assistant", "run_id": folder.name,
            "assistant": {"arch": summary.get("student"), "preset": summary.get("student_preset"),
                          "scale": stage.scale, "method": stage.method.name,
                          "eval": {name: {"psnr_y": scores.get("psnr_y"), "ssim_y": scores.get("ssim_y")}
                                   for name, scores in (summary.get("datasets") or {}).items()}}}
    return network, info
