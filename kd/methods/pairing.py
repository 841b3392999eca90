"""Choosing feature taps and comparing features across networks.

Tap pairing (ARCHITECTURES.md section 7, METHODS.md section 13). A body stage is a top-level numbered module:
RCAN/HAN `body.0..body.G`, SwinIR `layers.0..L-1`, ASID `block0..blockN-1`, or a numbered family the network
declares as `body_prefix` (KDSR's blocks `G.body.0.body.0..`, inside its SR trunk). Every network also has a *body
tail*: the body's last map before the long skip (RCAN `body.{G}`, HAN `last`, SwinIR `conv_after_body`, ASID `output`),
declared by the network as `body_tail` (else the last numbered stage). The depth sequence is the body stages
followed by the tail; k pairs take the entries at about j/k of both sequences (j = 1..k), so the last pair is always
tail to tail (the analogous place in any two SR networks) and the others pair by relative depth: full RCAN
`body.2, body.6, body.10` and SwinIR-M `layers.1, layers.3, conv_after_body` against ASID `block0, block1, output`.
`kdbench list methods --taps` prints the table.

Feature comparison. Teachers work in different units (RCAN [0, 255]: tap RMS 20-30; SwinIR [0, 1]; ASID
[-1, 1]: 0.1-0.2), so both sides are standardised, each with its *own* statistics (`standardize_pair`). The
teacher's are detached; the student's are not, so the loss does not depend on the student's feature scale and no
gradient asks the student to reproduce the teacher's magnitude (with teacher statistics on both sides, as before,
the student gradient scaled as 1/sigma_T: inert with RCAN, destructive with SwinIR). Adapters are always learned
1x1 convs: two networks' channel c never correspond, even when their channel counts happen to match.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor, nn

from kd.errors import KdError
from kd.methods.base import Average, no_average

# Which numbered family is the body, for the first built-in networks; a network may declare it as `body_prefix`
# (e.g. "RG."); others fall back to the largest family.
BODY_PREFIX = {"asid": "block", "asid_d8": "block", "rcan": "body.", "han": "body.", "swinir": "layers.",
               "swinir_light": "layers."}

_NUMBERED = re.compile(r"([A-Za-z_]+\.?)(\d+)")

def _numbered_stages(model: nn.Module) -> list[str]:
    names = [name for name, _ in model.named_modules()]
    arch = getattr(model, "kd_spec", {}).get("arch")
    prefix = getattr(model, "body_prefix", None) or BODY_PREFIX.get(arch)
    # A declared family is `prefix` + index and may sit deep inside the network (KDSR: `G.body.0.body.`).
    declared = sorted((int(n[len(prefix):]), n) for n in names
                      if prefix and n.startswith(prefix) and n[len(prefix):].isdigit())
    if declared:
        return [name for _, name in declared]
    families: dict[str, list[tuple[int, str]]] = {}
    for name in names:
        match = _NUMBERED.fullmatch(name)
        if match:
            families.setdefault(match.group(1), []).append((int(match.group(2)), name))
    if not families:
        raise KdError(f"{type(model).__name__} has no numbered body stages; give the taps explicitly.")
    prefix = max(families, key=lambda p: len(families[p]))
    return [name for _, name in sorted(families[prefix])]


def body_tail(model: nn.Module) -> str:
    """The body's last map before the long skip: the network's `body_tail`, else its last numbered stage."""
    declared = getattr(model, "body_tail", None)
    return declared if isinstance(declared, str) else _numbered_stages(model)[-1]


def body_stages(model: nn.Module) -> list[str]:
    """The numbered body stages in depth order, without the body tail."""
    tail = body_tail(model)
    return [name for name in _numbered_stages(model) if name != tail]


def depth_positions(length: int, count: int) -> list[int]:
    """Indices at about 1/count, 2/count, ..., 1 of a body of `length` stages (the last is the end)."""
    return [max(0, (j * length) // count - 1) for j in range(1, count + 1)]


def depth_sequence(model: nn.Module) -> list[str]:
    """The body stages in depth order ending with the body tail."""
    return [*body_stages(model), body_tail(model)]


def pair_by_depth(student: nn.Module, teacher: nn.Module, count: int) -> tuple[list[str], list[str]]:
    """`count` tap pairs at about 1/count, 2/count, ..., 1 of both depth sequences: the last pair is tail to tail."""
    student_seq, teacher_seq = depth_sequence(student), depth_sequence(teacher)
    count = min(count, len(student_seq), len(teacher_seq))
    return (
        [student_seq[i] for i in depth_positions(len(student_seq), count)],
        [teacher_seq[i] for i in depth_positions(len(teacher_seq), count)],
    )


def tap_key(tap: str) -> str:
    """A tap name usable as an `nn.ModuleDict` key (module names contain dots)."""
    return tap.replace(".", "_")


def conv_adapter(c_in: int, c_out: int) -> nn.Conv2d:
    """Learned 1x1 conv from student to teacher channels (variance-preserving init, zero bias)."""
    conv = nn.Conv2d(c_in, c_out, kernel_size=1)
    nn.init.kaiming_normal_(conv.weight, nonlinearity="linear")
    nn.init.zeros_(conv.bias)
    return conv


def probe_taps(model: nn.Module, taps: list[str], size: int = 16) -> dict[str, torch.Tensor]:
    """The taps' tensors for one small dry forward pass (no gradients, train/eval mode preserved); the probe is
    enlarged to the network's `min_input_size` where it declares one (HPINet's largest patch)."""
    from kd.models import capture, probe_inputs

    was_training = model.training
    model.eval()
    size = max(size, getattr(model, "min_input_size", 0))
    try:
        probe = torch.zeros(1, 3, size, size, device=next(model.parameters()).device)
        with torch.no_grad(), capture(model, taps, detach=True) as feats:
            model(*probe_inputs(model, probe))
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
# Shared by the feature methods: tap pairing with an explanation on failure, and feature alignment.

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
    a multiple of 8) return maps larger than the LR input, and the padding is not image content. Both maps must be
    on the student's grid: a teacher that saw a larger input is brought onto it first (`on_student_grid`)."""
    h = min(student_feat.shape[-2], teacher_feat.shape[-2], lr_size[0])
    w = min(student_feat.shape[-1], teacher_feat.shape[-1], lr_size[1])
    return student_feat[..., :h, :w], teacher_feat[..., :h, :w]


def on_student_grid(teacher_feat: Tensor, lr_size: tuple[int, int], factor: int) -> Tensor:
    """A map of a teacher that saw a `factor` times larger input than the student's LR (a TAS assistant) on the
    student's grid: cropped to its image area (the padding is not content), then each factor x factor cell averaged.
    That cell is the area one LR pixel covers: MATLAB's bicubic downscaling by `factor` centres LR pixel i on input
    pixels factor*i .. factor*i + factor - 1."""
    if factor == 1:
        return teacher_feat
    h, w = lr_size[0] * factor, lr_size[1] * factor
    if teacher_feat.shape[-2] < h or teacher_feat.shape[-1] < w:
        raise KdError(f"a teacher map of {teacher_feat.shape[-2]}x{teacher_feat.shape[-1]} does not cover the "
                      f"{h}x{w} input it was said to see ({factor} x the {lr_size[0]}x{lr_size[1]} LR patch).")
    return torch.nn.functional.avg_pool2d(teacher_feat[..., :h, :w], factor)


class _DifferentiableAverage(torch.autograd.Function):
    """Mean over data-parallel ranks whose backward averages the incoming gradient the same way, so a statistic of
    the global batch gets the gradient it would get in one process."""

    @staticmethod
    def forward(value: Tensor, average: Average) -> Tensor:
        value = value.clone()
        average([value])
        return value

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, Average], output: Tensor) -> None:
        ctx.average = inputs[1]  # setup_context (not ctx in forward) keeps torch.func transforms working

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.clone()
        ctx.average([grad])
        return grad, None


def _global_mean(value: Tensor, average: Average) -> Tensor:
    if not value.requires_grad:
        value = value.clone()
        average([value])
        return value
    return _DifferentiableAverage.apply(value, average)


def map_stats(feat: Tensor, average: Average = no_average) -> tuple[Tensor, Tensor]:
    """(per-channel batch mean, RMS deviation of the whole map): the statistics `standardize` divides by, those of
    the global batch under data parallelism; they carry gradients when `feat` does."""
    mean = _global_mean(feat.mean(dim=(0, 2, 3), keepdim=True), average)
    variance = _global_mean((feat - mean).pow(2).mean().reshape(1), average)
    return mean, variance.clamp_min(1e-12).sqrt().reshape(())


def standardize(feat: Tensor, average: Average = no_average) -> Tensor:
    """Centre each channel with its batch mean and divide the map by its RMS deviation (one scalar per map: ReLU
    leaves some channels nearly constant)."""
    mean, scale = map_stats(feat, average)
    return (feat - mean) / scale


def standardize_pair(student_feat: Tensor, teacher_feat: Tensor,
                     average: Average = no_average) -> tuple[Tensor, Tensor]:
    """Each side standardised with its own statistics; the teacher side detached (see the module docstring).

    `average` is `StepInputs.average`: under data parallelism the statistics are those of the global batch.
    """
    return standardize(student_feat, average), standardize(teacher_feat.detach(), average)
