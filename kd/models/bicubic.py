"""Bicubic upsampling as a kdbench "network": the baseline row of every SR table.

It upsamples with the MATLAB-compatible bicubic `imresize` (the same port that produces benchmark LR images), so
evaluating it reproduces `reference/bicubic_reference.csv`. It has no parameters and nothing to train.
"""

from __future__ import annotations

import torch
from torch import nn

from kd.models.registry import ModelEntry, register_model


class Bicubic(nn.Module):
    """RGB in [0, 1] (B, 3, h, w) -> RGB (B, 3, h*scale, w*scale), unclamped (bicubic overshoots slightly)."""

    def __init__(self, scale: int = 4):
        super().__init__()
        self.scale = int(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from kd.data.imresize import imresize

        return imresize(x, float(self.scale))

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


def _build(scale: int) -> Bicubic:
    return Bicubic(scale=scale)


register_model(
    ModelEntry(
        arch="bicubic",
        builder=_build,
        role="baseline",
        presets={"paper": {}, "mini": {}, "tiny": {}},
        description="MATLAB-style bicubic upsampling (no parameters)",
        scales=(2, 3, 4),
    )
)
