"""KDSR teacher (KDSR_T-M, `paper`) against the official `model_TA/blindsr.py`; both networks get (LR, HR).

The official forward takes the encoder input, so the call timed includes building it as ours does:
cat([lr, pixel_unshuffle(hr, s)]). Its files are the student's checkout (one repository holds both): the folder
beside this adapter's, `<official>/kdsr`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from seed_official.kdsr import COMMIT, REPO, official_blindsr  # noqa: F401 - REPO/COMMIT are this adapter's too

ARCH = "kdsr_teacher"
PRESET = "paper"


def inputs(lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    b, c, h, w = lr.shape
    return lr, torch.rand(b, c, 4 * h, 4 * w, generator=torch.Generator().manual_seed(1))  # x4, as timed


def build_official(folder: Path, ours: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    official = official_blindsr(folder.with_name("kdsr"), "model_TA", ours)

    def forward(lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return official(lr, torch.cat([lr, F.pixel_unshuffle(hr, ours.scale)], dim=1))

    return forward
