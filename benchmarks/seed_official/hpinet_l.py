"""HPINet-L (preset `l`) against the same official code as
`hpinet`, read from the `hpinet` folder beside this adapter's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from seed_official import hpinet

ARCH, REPO, COMMIT = hpinet.ARCH, hpinet.REPO, hpinet.COMMIT
PRESET = "l"


def build_official(folder: Path, ours: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return hpinet.build_official(folder.parent / "hpinet", ours)
