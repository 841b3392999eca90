"""Teachers: loading a given checkpoint, or the teacher zoo (trained once, cached, reused by every run).

Zoo entries live in `<cache>/teachers/<arch>-<preset>-x<scale>-<data>-seed<seed>-<recipe hash>/`: the training
run itself (resumable checkpoints, metrics.jsonl), `teacher.pt` (the final weights, official key names, so
`kd.models.load_official` reads them) and `teacher.json` (what it is, how it was trained, its evaluation).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from kd.config import RunConfig
from kd.engine.checkpoint import atomic_save
from kd.engine.progress import RichProgress
from kd.engine.services import Services, resolve_device
from kd.engine.trainer import Trainer
from kd.errors import KdError
from kd.fileio import atomic_write_text
from kd.methods import create_method, loss_weights
from kd.models import create, get_entry, load_official


def teacher_preset(config: RunConfig) -> str:
    return config.teacher.preset or get_entry(config.teacher.arch).default_preset


def zoo_key(config: RunConfig) -> str:
    recipe = json.dumps(dataclasses.asdict(config.teacher.train), sort_keys=True)
    digest = hashlib.sha256(f"{recipe}|augment={config.data.augment}".encode()).hexdigest()[:6]
    arch = get_entry(config.teacher.arch).arch
    return f"{arch}-{teacher_preset(config)}-x{config.scale}-{config.data.train}-seed{config.teacher.seed}-{digest}"


def zoo_root() -> Path:
    from kd.data.roots import cache_dir

    return cache_dir() / "teachers"


def zoo_dir(config: RunConfig) -> Path:
    return zoo_root() / zoo_key(config)


def build_teacher(config: RunConfig) -> nn.Module:
    return create(config.teacher.arch, config.scale, config.teacher.preset)


def load_teacher_checkpoint(config: RunConfig, path: str | Path) -> nn.Module:
    """The configured teacher with weights from `path`; a checkpoint of another scale or architecture is reported
    as such by `load_official`."""
    if not Path(path).is_file():
        raise KdError(f"teacher checkpoint '{path}' (--teacher-ckpt) not found.")
    return load_official(build_teacher(config), path)


def list_zoo() -> list[dict[str, Any]]:
    root = zoo_root()
    if not root.is_dir():
        return []
    entries = []
    for meta in sorted(root.glob("*/teacher.json")):
        info = json.loads(meta.read_text(encoding="utf-8"))
        info["path"] = str(meta.parent / "teacher.pt")
        entries.append(info)
    return entries


def train_teacher(
    config: RunConfig, *, services: Services | None = None, console: Console | None = None, progress: bool = True
) -> tuple[nn.Module, dict[str, Any]]:
    """Train the configured teacher with its recipe (`teacher.train`) into the zoo, or resume that training."""
    services = services or Services()
    console = console or Console(stderr=True)
    recipe = config.teacher.train
    folder = zoo_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    torch.manual_seed(config.teacher.seed)
    model = build_teacher(config).to(device)
    method = create_method("none", model, None)
    batches = services.make_batches(config, recipe, seed=config.teacher.seed)

    trainer = Trainer(
        recipe, student=model, teacher=None, method=method, weights=loss_weights("none"), batches=batches,
        run_dir=folder, seed=config.teacher.seed, validate=services.validator(config, device, config.teacher.arch),
        progress=RichProgress(console, f"teacher {config.teacher.arch}") if progress else None, device=device,
    )
    outcome = trainer.fit()
    final = trainer.eval_model()
    result = services.evaluate(
        final, list(config.eval.datasets), config.scale, data_root=config.data.root, with_lpips=False,
        progress=progress, model_name=config.teacher.arch, device=device,
    )
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
        "seed": config.teacher.seed,
        "recipe": dataclasses.asdict(recipe),
        "steps": outcome.steps,
        "train_seconds": round(outcome.train_seconds, 3),
        "eval": scores,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_save({k: v.cpu() for k, v in final.state_dict().items()}, folder / "teacher.pt")
    atomic_write_text(folder / "teacher.json", json.dumps(info, indent=2) + "\n")
    return final, info


def zoo_teacher(
    config: RunConfig, *, services: Services | None = None, console: Console | None = None, progress: bool = True
) -> tuple[nn.Module, dict[str, Any]]:
    """The cached teacher for this configuration, training it first when the zoo does not have it."""
    console = console or Console(stderr=True)
    folder = zoo_dir(config)
    weights, meta = folder / "teacher.pt", folder / "teacher.json"
    if weights.is_file() and meta.is_file():
        console.print(f"using cached teacher {folder.name} ({weights})", highlight=False)
        return load_official(build_teacher(config), weights), json.loads(meta.read_text(encoding="utf-8"))
    console.print(
        f"teacher {folder.name} is not in the zoo: training it first "
        f"({config.teacher.train.steps} steps; cached in {folder})",
        highlight=False,
    )
    return train_teacher(config, services=services, console=console, progress=progress)
