"""Choosing feature taps: a network's body stages and a depth-proportional teacher/student pairing.

A body stage is a top-level numbered module: RCAN/HAN `body.0..body.G` (G residual groups plus the body-tail
conv), SwinIR `layers.0..L-1`, ASID `block0..blockN-1`. Pairing by relative depth picks, for k pairs, the stage
at about j/k of each body (j = 1..k), so full-size RCAN (11 stages) pairs `body.2, body.6, body.10` and
SwinIR-M (6 stages) `layers.1, layers.3, layers.5` (ARCHITECTURES.md, section 7), and smaller presets with
fewer groups get the same relative positions.
"""

from __future__ import annotations

import re
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


def tap_channels(model: nn.Module, taps: list[str], size: int = 16) -> dict[str, int]:
    """Channel count of each tap, from one small dry forward pass (no gradients, mode preserved)."""
    from kd.models import capture

    was_training = model.training
    model.eval()
    try:
        probe = torch.zeros(1, 3, size, size, device=next(model.parameters()).device)
        with torch.no_grad(), capture(model, taps, detach=True) as feats:
            model(probe)
    finally:
        model.train(was_training)
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
