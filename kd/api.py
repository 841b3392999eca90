"""The Python API: build networks, load checkpoints and run a distillation from a script or a notebook.

    import kd

    student = kd.create_model("asid", scale=4, preset="tiny")          # any registered network
    teacher = kd.load_official("rcan", "RCAN_BIX4.pt", scale=4)         # an official (or kdbench) checkpoint
    record = kd.distill(student=student, teacher=teacher, method="logits", data="MyPhotos", profile="smoke",
                        train={"steps": 50})
    record.summary["datasets"]                                          # PSNR/SSIM/LPIPS per test set

Networks, the method and the data are given by name (as on the command line) or as objects: an `nn.Module` student
or teacher, a folder of images, or a map-style `torch.utils.data.Dataset` of (lr, hr) float tensors in [0, 1].
Every run is recorded in `runs_dir/<run-id>/` exactly like `kdbench run`, and the same call finds the finished run.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from kd.errors import KdError


def create_model(name: str, scale: int = 4, preset: str | None = None, **fields: Any) -> nn.Module:
    """A registered network (`kdbench list models`), from its preset (`paper` = the official configuration,
    `mini`, `tiny`) with `fields` overriding single constructor arguments. Maps RGB in [0, 1] to RGB in [0, 1]."""
    from kd.models import create

    return create(name, scale, preset, **fields)


def load_official(model: nn.Module | str, path: str | os.PathLike, *, scale: int | None = None,
                  preset: str | None = None, strict: bool = True) -> nn.Module:
    """Weights from `path` (official ASID/RCAN/HAN/SwinIR checkpoints or a kdbench `student.pt`, always read with
    `weights_only=True`) into `model`, which is a network or a registry name. With a name, the network is built
    first: a kdbench `student.pt` supplies its own scale and preset; otherwise `preset` (default `paper`) and
    `scale` (default 4) do. Mismatches raise `KdError` saying what differs (another scale, another network)."""
    from kd.models.loading import load_official as load_into
    from kd.models.loading import model_from_checkpoint

    if isinstance(model, nn.Module):
        return load_into(model, path, strict=strict)
    return model_from_checkpoint(path, arch=model, scale=scale, preset=preset)


def build_report(runs_dirs: str | os.PathLike | list, out_dir: str | os.PathLike, **options: Any):
    """The comparison report over finished runs (`kdbench report`): `kd.report.build_report` with the visual
    comparison's crops recorded from the weights at hand (students' `student.pt`, the teacher zoo). `options`:
    `title`, `visual_images`, `force`."""
    from kd.crops import record_crops
    from kd.report import build_report as write_report

    return write_report(runs_dirs, out_dir, crop_maker=record_crops, **options)


def distill(
    student: str | nn.Module = "asid",
    teacher: str | nn.Module | None = "rcan",
    method: str = "none",
    data: str | os.PathLike | Dataset | None = None,
    profile: str = "cpu",
    *,
    scale: int | None = None,
    seed: int = 0,
    runs_dir: str | os.PathLike = "runs",
    progress: bool = False,
    **overrides: dict[str, Any],
):
    """Train `student` with `method` from a frozen `teacher`, evaluate it and record the run; returns the
    `kd.engine.RunRecord` (`run_dir`, `summary` as in summary.json, `already_finished`).

    student, teacher: registry names, or `nn.Module` objects (the student is copied, never trained in place; the
        teacher is frozen). A name's teacher comes from the zoo (trained first when missing), as with `kdbench run`.
    method: `kdbench list methods`; method options and loss weights go in `method={"options": ..., "weights": ...}`.
    data: the training set: a dataset name, a folder (HR images, or HR/ with optional LR_bicubic/X<s>/), or a
        map-style Dataset whose item i is an (lr, hr) pair of float tensors (3, h, w) and (3, h*s, w*s) in [0, 1];
        batch k takes items k*B .. k*B+B-1, cycling (shuffle in the dataset if you want random order).
        None: the profile's.
    profile: smoke | demo | cpu | paper, the base configuration (`kd.profiles`).
    overrides: configuration sections over the profile, e.g. train={"steps": 200, "lr": 2e-4},
        eval={"datasets": ["Set5", "MyPhotos"]}, student={"preset": "tiny"}.

    A network or dataset given as an object is identified in the run id by its class name and a fingerprint (the
    sha256 of its weights, or of every item of the dataset), so the same objects find the same run. Every item of a
    dataset is checked first: an (lr, hr) pair at the run's scale, all of one size, finite, in [0, 1].
    """
    from kd.config import deep_merge
    from kd.engine import execute_run
    from kd.engine.services import Services
    from kd.profiles import profile_layer, resolve_layers

    unknown = sorted(set(overrides) - _SECTIONS)
    if unknown:
        raise KdError(f"distill() got unknown keyword(s) {', '.join(unknown)}; configuration sections are "
                      f"{', '.join(sorted(_SECTIONS))} (e.g. train={{'steps': 100}})")
    flags: dict[str, Any] = {"seed": seed, "method": {"name": method}}
    if scale is not None:
        flags["scale"] = scale
    flags["student"] = {"arch": _label(student) if isinstance(student, nn.Module) else student}
    flags["teacher"] = {"arch": _label(teacher) if isinstance(teacher, nn.Module) else teacher}
    services = Services()
    if isinstance(data, Dataset):
        services = Services(make_batches=_dataset_batches(data))
    elif data is not None:
        flags["data"] = {"train": str(data)}
    for module, role in ((student, "student"), (teacher, "teacher")):
        spec = getattr(module, "kd_spec", None) if isinstance(module, nn.Module) else None
        if spec is not None:  # a registry network keeps its scale; say so before a mismatch is trained
            flags.setdefault("scale", spec["scale"])
            if spec["scale"] != flags["scale"]:
                raise KdError(f"the {role} is built for x{spec['scale']} but the run is x{flags['scale']}")
    config = resolve_layers([profile_layer(profile), ("kd.distill() arguments", deep_merge(flags, overrides))],
                            teacher_given=isinstance(teacher, nn.Module))
    if isinstance(data, Dataset):  # checked and fingerprinted at the run's scale, item by item
        config.data.train = _dataset_label(data, config.scale)
    return execute_run(
        config, out_dir=Path(runs_dir), services=services, progress=progress,
        student=student if isinstance(student, nn.Module) else None,
        teacher=teacher if isinstance(teacher, nn.Module) else None,
    )


_SECTIONS = {"student", "teacher", "method", "data", "train", "eval", "accel", "threads", "device"}


def _label(module: nn.Module) -> str:
    """`<Class>@<8 hex>`: a run-id-safe name for a network, changing whenever its weights do."""
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return f"{_class_name(module)}@{digest.hexdigest()[:8]}"


def _class_name(obj: object) -> str:
    return re.sub(r"[^\w.]+", "_", type(obj).__name__)


def _dataset_label(dataset: Dataset, scale: int) -> str:
    """`<Class>@<8 hex>` over every item of a map-style dataset, each checked to be a training pair first."""
    try:
        length = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise KdError("kd.distill(data=...) needs a map-style Dataset with a length (len(data)); an iterable "
                      "dataset cannot be fingerprinted for the run id") from None
    if length == 0:
        raise KdError("the training dataset given to kd.distill() is empty")
    digest = hashlib.sha256(str(length).encode())
    first = None
    for index in range(length):
        lr, hr = _training_pair(dataset[index], index, scale)
        shapes = (tuple(lr.shape), tuple(hr.shape))
        if first is None:
            first = shapes
            digest.update(repr(shapes).encode())
        if shapes != first:
            raise KdError(f"kd.distill(data=...): item {index} has shapes {shapes} but item 0 {first}; a batch stacks "
                          "items, so they must all be one size (crop them to equal patches)")
        for tensor in (lr, hr):
            digest.update(tensor.contiguous().numpy().tobytes())
    return f"{_class_name(dataset)}@{digest.hexdigest()[:8]}"


def _training_pair(item: Any, index: int, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Item `index` as (lr, hr) float32 tensors, or a KdError saying what it is instead."""
    where = f"kd.distill(data=...): item {index}"
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise KdError(f"{where} is a {type(item).__name__}, not an (lr, hr) pair of tensors")
    try:
        lr, hr = (torch.as_tensor(part).detach().cpu().to(torch.float32) for part in item)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise KdError(f"{where} is not a pair of tensors ({exc})") from None
    if lr.dim() != 3 or hr.dim() != 3 or lr.shape[0] != 3 or hr.shape[0] != 3:
        raise KdError(f"{where} has shapes {tuple(lr.shape)} and {tuple(hr.shape)}; expected RGB tensors (3, h, w) "
                      "and (3, h*s, w*s)")
    if tuple(hr.shape[1:]) != (lr.shape[1] * scale, lr.shape[2] * scale):
        raise KdError(f"{where}: hr {tuple(hr.shape[1:])} is not x{scale} of lr {tuple(lr.shape[1:])}; give pairs "
                      f"at the run's scale or pass scale= to match them")
    for name, tensor in (("lr", lr), ("hr", hr)):
        if not torch.isfinite(tensor).all():
            raise KdError(f"{where}: {name} holds NaN or infinite values")
        low, high = tensor.min().item(), tensor.max().item()
        if low < 0 or high > 1:
            raise KdError(f"{where}: {name} spans [{low:g}, {high:g}] but kdbench networks take RGB in [0, 1]; "
                          "divide 8-bit images by 255")
    return lr, hr


class _Cycled(Dataset):
    def __init__(self, dataset: Dataset) -> None:
        self.dataset, self.length = dataset, len(dataset)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, index: int):
        lr, hr = self.dataset[index % self.length]
        return torch.as_tensor(lr, dtype=torch.float32), torch.as_tensor(hr, dtype=torch.float32)


def _dataset_batches(dataset: Dataset):
    from kd.engine.batches import PatchBatches

    def make_batches(config, recipe, *, seed, dist, pin_memory=False):
        return PatchBatches(_Cycled(dataset), recipe.batch_size, 0, rank=dist.rank, world_size=dist.world_size,
                            pin_memory=pin_memory)

    return make_batches
