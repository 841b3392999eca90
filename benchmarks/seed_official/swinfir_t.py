"""SwinFIR-T (preset `t`) against the same official code as
`swinfir`, read from the `swinfir` folder beside this adapter's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from seed_official import swinfir

ARCH, REPO, COMMIT = swinfir.ARCH, swinfir.REPO, swinfir.COMMIT
PRESET = "t"


def build_official(folder: Path, ours: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return swinfir.build_official(folder.parent / "swinfir", ours)
