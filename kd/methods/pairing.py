"""Choosing feature taps: a network's body stages and a depth-proportional teacher/student pairing.

A body stage is a top-level numbered module: RCAN/HAN `body.0..body.G` (G residual groups plus the body-tail
conv), SwinIR `layers.0..L-1`, ASID `block0..blockN-1`. Pairing by relative depth picks, for k pairs, the stage
at about j/k of each body (j = 1..k), so full-size RCAN (11 stages) pairs `body.2, body.6, body.10` and
SwinIR-M (6 stages) `layers.1, layers.3, layers.5` (ARCHITECTURES.md, section 7), and smaller presets with
fewer groups get the same relative positions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
import torch
from torch import nn

from kd.errors import KdError

# Which numbered family is the body, for the built-in networks; others fall back to the largest family.
BODY_PREFIX = {"asid": "block", "rcan": "body.", "han": "body.", "swinir": "layers."}

_NUMBERED = re.compile(r"([A-Za-z_]+\.?)(\d+)")


def body_stages(model: nn.Module) -> list[str]:
    """Top-level numbered modules forming the network body, in depth order."""
    families: dict[str, list[tuple[int, str]]] = {}
    for name, _ in model.named_modules():
        match = _NUMBERED.fullmatch(name)
        if match:
            families.setdefault(match.group(1), []).append((int(match.group(2)), name))
    if not families:
        raise KdError(f"{type(model).__name__} has no numbered body stages; give the taps explicitly.")
    arch = getattr(model, "kd_spec", {}).get("arch")
    prefix = BODY_PREFIX.get(arch)
    if prefix not in families:
        prefix = max(families, key=lambda p: len(families[p]))
    return [name for _, name in sorted(families[prefix])]


def depth_positions(length: int, count: int) -> list[int]:
    """Indices at about 1/count, 2/count, ..., 1 of a body of `length` stages (the last is the end)."""
    return [max(0, (j * length) // count - 1) for j in range(1, count + 1)]


def pair_by_depth(student: nn.Module, teacher: nn.Module, count: int) -> tuple[list[str], list[str]]:
    student_body = body_stages(student)
    teacher_body = body_stages(teacher)
    count = min(count, len(student_body), len(teacher_body))
    return (
        [student_body[i] for i in depth_positions(len(student_body), count)],
        [teacher_body[i] for i in depth_positions(len(teacher_body), count)],
    )


def tap_key(tap: str) -> str:
    """A tap name usable as an `nn.ModuleDict` key (module names contain dots)."""
    return tap.replace(".", "_")


def conv_adapter(c_in: int, c_out: int, *, identity_if_equal: bool = True) -> nn.Module:
    """1x1 conv from student to teacher channels (variance-preserving init, zero bias), or identity when equal."""
    if identity_if_equal and c_in == c_out:
        return nn.Identity()
    conv = nn.Conv2d(c_in, c_out, kernel_size=1)
    nn.init.kaiming_normal_(conv.weight, nonlinearity="linear")
    nn.init.zeros_(conv.bias)
    return conv


def probe_taps(model: nn.Module, taps: list[str], size: int = 16) -> dict[str, torch.Tensor]:
    """The taps' tensors for one small dry forward pass (no gradients, train/eval mode preserved)."""
    from kd.models import capture

    was_training = model.training
    model.eval()
    try:
        probe = torch.zeros(1, 3, size, size, device=next(model.parameters()).device)
        with torch.no_grad(), capture(model, taps, detach=True) as feats:
            model(probe)
    finally:
        model.train(was_training)
    return feats


def tap_channels(model: nn.Module, taps: list[str], size: int = 16) -> dict[str, int]:
    """Channel count of each tap, from one small dry forward pass."""
    feats = probe_taps(model, taps, size)
    missing = [t for t in taps if t not in feats]
    if missing:
        raise KdError(f"tap(s) {', '.join(missing)} of {type(model).__name__} produced no tensor in a forward pass.")
    for name, value in feats.items():
        if value.dim() != 4:
            raise KdError(
                f"tap '{name}' of {type(model).__name__} is not a (B, C, H, W) map (shape {tuple(value.shape)}); "
                "the network should convert it in tap_value()."
            )
    return {name: feats[name].shape[1] for name in taps}


# ------------------------------------------------------------------------------------------------------------
# Shared by the feature methods (LSFD, FACD): tap pairing with an explanation on failure, and feature alignment.

FEATURE_PAIRING_HELP = (
    "depth pairing works for networks with a numbered body: students asid, asid_d8 (block0..); teachers rcan, han "
    "(body.0..), swinir, swinir_light (layers.0..); for other networks give method.options.student_taps and "
    "method.options.teacher_taps (module names; `kdbench list models --taps` shows each network's taps)"
)


def _side_name(model: nn.Module) -> str:
    spec = getattr(model, "kd_spec", None) or {}
    return spec.get("arch") or type(model).__name__


def paired_feature_taps(
    method: str,
    student: nn.Module,
    teacher: nn.Module,
    count: int,
    student_taps: list[str] | None = None,
    teacher_taps: list[str] | None = None,
) -> tuple[list[str], list[str], dict[str, int], dict[str, int]]:
    """(student taps, teacher taps, student channels, teacher channels), checked by one dry forward per side.

    Explicit taps override `count`. Any failure is a KdError naming the method, the side and the tap, and saying
    which combinations work, so that a bad combination stops before training starts.
    """
    if student_taps or teacher_taps:
        if not student_taps or not teacher_taps or len(student_taps) != len(teacher_taps):
            raise KdError(
                f"method '{method}': method.options.student_taps and method.options.teacher_taps must list the "
                f"same number of taps (got {len(student_taps or [])} and {len(teacher_taps or [])})."
            )
        s_taps, t_taps = list(student_taps), list(teacher_taps)
    else:
        if count < 1:
            raise KdError(f"method '{method}': method.options.count must be >= 1, got {count}.")
        for side, model in (("student", student), ("teacher", teacher)):
            try:
                body_stages(model)
            except KdError as exc:
                raise KdError(
                    f"method '{method}' cannot pair feature taps with {side} '{_side_name(model)}': {exc} "
                    f"({FEATURE_PAIRING_HELP})."
                ) from None
        s_taps, t_taps = pair_by_depth(student, teacher, count)
    channels = []
    for side, model, taps in (("student", student, s_taps), ("teacher", teacher, t_taps)):
        try:
            channels.append(tap_channels(model, taps))
        except KdError as exc:
            raise KdError(
                f"method '{method}': {side} '{_side_name(model)}' tap failed: {exc} ({FEATURE_PAIRING_HELP})."
            ) from None
    return s_taps, t_taps, channels[0], channels[1]


def common_area(student_feat: torch.Tensor, teacher_feat: torch.Tensor, lr_size: tuple[int, int]):
    """Both maps cropped to the LR image area they share: padded networks (ASID zero-pads, SwinIR reflect-pads to
    a multiple of 8) return maps larger than the LR input, and the padding is not image content."""
    h = min(student_feat.shape[-2], teacher_feat.shape[-2], lr_size[0])
    w = min(student_feat.shape[-1], teacher_feat.shape[-1], lr_size[1])
    return student_feat[..., :h, :w], teacher_feat[..., :h, :w]


def standardize_by_teacher(student_feat: torch.Tensor, teacher_feat: torch.Tensor,
                           average: Callable[[Sequence[torch.Tensor]], None] = lambda tensors: None):
    """Centre both maps with the teacher's per-channel mean and divide by the teacher's RMS deviation (detached).

    Teachers work in different units (RCAN [0, 255], SwinIR [0, 1]); in these units a default loss weight means the
    same for every teacher. One scale per map, not per channel: ReLU leaves some channels (nearly) constant.
    `average` (`StepInputs.average`) makes the statistics those of the global batch under data parallelism.
    """
    teacher_feat = teacher_feat.detach()
    mean = teacher_feat.mean(dim=(0, 2, 3), keepdim=True)
    average([mean])
    variance = (teacher_feat - mean).pow(2).mean().reshape(1)
    average([variance])
    scale = variance.sqrt().clamp_min(1e-6).reshape(())
    return (student_feat - mean) / scale, (teacher_feat - mean) / scale
