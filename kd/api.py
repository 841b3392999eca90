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

    Objects are identified by what they are, so the same objects find the same run:
    * A registered network as its preset builds it (`kd.create_model`, `kd.load_official`: it carries `kd_spec`)
      enters the configuration under its registry name and preset, as `--student` / `--teacher` with their presets
      would, so the profile's per-teacher settings apply as on the command line. If its weights are those
      `kdbench run` would use for that name, the run *is* that command's run, with its run id: for a student, the
      initial weights of the run seed (`torch.manual_seed(seed)` right before `kd.create_model`, as `kdbench run`
      does); for a teacher, its zoo entry's weights (e.g. `kd.load_official(arch, <zoo teacher.pt>, preset=...)`).
      Other weights enter the run id as `<Class>@<fingerprint>` (the sha256 of the weights).
    * Any other network is named `<Class>@<fingerprint>` in the run id and in the summary.
    * A dataset is `<Class>@<fingerprint>` of every item; each item is checked first: an (lr, hr) pair at the run's
      scale, all of one size, finite, in [0, 1].
    """
    from kd.config import deep_merge
    from kd.engine import execute_run
    from kd.engine.identity import network_label
    from kd.engine.services import Services
    from kd.profiles import profile_layer, resolve_layers

    unknown = sorted(set(overrides) - _SECTIONS)
    if unknown:
        raise KdError(f"distill() got unknown keyword(s) {', '.join(unknown)}; configuration sections are "
                      f"{', '.join(sorted(_SECTIONS))} (e.g. train={{'steps': 100}})")
    flags: dict[str, Any] = {"seed": seed, "method": {"name": method}}
    if scale is not None:
        flags["scale"] = scale
    named: dict[str, dict[str, str]] = {}  # registered networks given as objects: their registry name and preset
    for role, network in (("student", student), ("teacher", teacher)):
        name = _registry_name(network) if isinstance(network, nn.Module) else None
        if name is not None:
            named[role] = name
            flags[role] = {"arch": name["arch"]}
        else:
            flags[role] = {"arch": network_label(network) if isinstance(network, nn.Module) else network}
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
    unregistered_teacher = isinstance(teacher, nn.Module) and "teacher" not in named
    config = resolve_layers([profile_layer(profile), ("kd.distill() arguments", deep_merge(flags, overrides))],
                            teacher_given=unregistered_teacher)
    # The object's preset is named only where the profile would build another one: `kdbench run --student asid`
    # leaves the profile's preset (None: the default) in the configuration, and so must the same network here.
    presets = {role: {"preset": name["preset"]} for role, name in named.items()
               if _built_preset(config, role) != name["preset"]}
    if presets:
        flags = deep_merge(flags, presets)
        config = resolve_layers([profile_layer(profile), ("kd.distill() arguments", deep_merge(flags, overrides))],
                                teacher_given=unregistered_teacher)
    if isinstance(data, Dataset):  # checked and fingerprinted at the run's scale, item by item
        config.data.train = _dataset_label(data, config.scale)
    if isinstance(student, nn.Module) and _is_initial_student(student, config):
        student = None  # the student `kdbench run` builds: the same run
    if isinstance(teacher, nn.Module) and _is_zoo_teacher(teacher, config):
        teacher = None  # the zoo's teacher, loaded from the zoo as `kdbench run` does
    return execute_run(
        config, out_dir=Path(runs_dir), services=services, progress=progress,
        student=student if isinstance(student, nn.Module) else None,
        teacher=teacher if isinstance(teacher, nn.Module) else None,
    )


def _registry_name(module: nn.Module) -> dict[str, str] | None:
    """{"arch", "preset"} of a registered network built as its preset builds it (no field overridden), else None:
    such a network is the one the command line names that way."""
    from kd.models.registry import resolve_fields

    spec = getattr(module, "kd_spec", None)
    if not isinstance(spec, dict) or "arch" not in spec:
        return None
    fields = {k: v for k, v in spec.items() if k not in ("arch", "scale", "preset")}
    try:
        if resolve_fields(spec["arch"], spec.get("preset")) != fields:
            return None
    except KdError:
        return None
    return {"arch": spec["arch"], "preset": spec.get("preset")}


def _built_preset(config, role: str) -> str:
    """The preset the configuration builds its student or teacher with."""
    from kd.engine.teachers import teacher_preset
    from kd.models import get_entry

    if role == "teacher":
        return teacher_preset(config)
    return config.student.preset or get_entry(config.student.arch).default_preset


def _same_weights(module: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    ours = module.state_dict()
    return ours.keys() == state.keys() and all(
        ours[k].shape == state[k].shape and ours[k].dtype == state[k].dtype
        and torch.equal(ours[k].detach().cpu(), state[k].detach().cpu()) for k in ours)


def _is_initial_student(student: nn.Module, config) -> bool:
    """The student holds the initial weights `kdbench run` gives this configuration's student (run seed)."""
    from kd.models import create

    if _registry_name(student) is None:
        return False
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
        torch.manual_seed(config.seed)
        reference = create(config.student.arch, config.scale, config.student.preset)
    return _same_weights(student, reference.state_dict())


def _is_zoo_teacher(teacher: nn.Module, config) -> bool:
    """The teacher holds the weights of this configuration's finished zoo entry."""
    from kd.engine.checkpoint import load_checkpoint
    from kd.engine.teachers import complete_entry, zoo_dir
    from kd.methods import get_method

    if _registry_name(teacher) is None or config.teacher.ckpt or not get_method(config.method.name).needs_teacher:
        return False
    folder = zoo_dir(config)
    if not complete_entry(folder):
        return False
    stored = load_checkpoint(folder / "teacher.pt")
    return isinstance(stored, dict) and _same_weights(teacher, stored)


_SECTIONS = {"student", "teacher", "method", "data", "train", "eval", "accel", "threads", "device"}


def _dataset_label(dataset: Dataset, scale: int) -> str:
    """`<Class>@<8 hex>` over every item of a map-style dataset, each checked to be a training pair first."""
    from kd.engine.identity import class_label

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
    return f"{class_label(dataset)}@{digest.hexdigest()[:8]}"


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
