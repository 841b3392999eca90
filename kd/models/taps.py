"""Feature taps: capture named intermediate tensors during a forward pass without modifying the network.

    with capture(teacher, ["body.2", "body.6", "body.10"]) as feats:
        teacher(lr)
    feats["body.6"]  # (B, C, h, w)

Patterns are shell-style globs over `named_modules()` names. A network may expose a tensor that is not a module
output (an attention map inside a fused kernel) through a `TapPoint` child; it computes that tensor only while a
hook is attached, so nothing extra is materialised when no tap is requested. A network whose natural taps are not
(B, C, h, w) maps (SwinIR tokens) defines `tap_value(name, module, inputs, output)` to convert them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from kd.errors import KdError


class TapPoint(nn.Identity):
    """A named place where a network hands out a tensor for distillation; free when nobody listens."""

    @property
    def active(self) -> bool:
        return bool(self._forward_hooks)


def resolve_taps(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Module names matching the patterns, in network order; a pattern that matches nothing is an error."""
    names = [name for name, _ in model.named_modules() if name]
    chosen: list[str] = []
    for pattern in patterns:
        hits = [n for n in names if n == pattern or fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            documented = getattr(model, "TAPS", {})
            hint = "; documented taps: " + ", ".join(documented) if documented else ""
            raise KdError(f"tap '{pattern}' matches no module of {type(model).__name__}{hint}")
        chosen.extend(h for h in hits if h not in chosen)
    order = {n: i for i, n in enumerate(names)}
    return sorted(chosen, key=order.__getitem__)


def _default_value(name, module, inputs, output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


@contextmanager
def capture(model: nn.Module, patterns: Sequence[str], *, detach: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the modules matching `patterns` into the yielded dict (name -> tensor)."""
    convert = getattr(model, "tap_value", _default_value)
    modules = dict(model.named_modules())
    feats: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(name: str):
        def hook(module, inputs, output):
            value = convert(name, module, inputs, output)
            feats[name] = value.detach() if detach else value

        return hook

    try:
        for name in resolve_taps(model, patterns):
            handles.append(modules[name].register_forward_hook(make_hook(name)))
        yield feats
    finally:
        for handle in handles:
            handle.remove()
