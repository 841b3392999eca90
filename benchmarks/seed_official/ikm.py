"""U-HDN+IKM: the official `Generator` (model.py + src/basic_module.py) at x4 with option.py's defaults (the paper
preset), wrapped in main.py's DF2K normalisation."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from seed_official import import_isolated
from students.ikm import DF2K_MEAN, DF2K_STD

ARCH = "ikm"
PRESET = "paper"
REPO = "YuanfeiHuang/CoMoNet"
COMMIT = "cf723d44770ee3046b0cd7a92299012a64ef5543"

MEAN = torch.tensor(DF2K_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(DF2K_STD).view(1, 3, 1, 1)


def build_official(folder: Path, ours):
    official = import_isolated(folder, "model")
    f = ours.kd_spec
    net = official.Generator(f["n_colors"], f["net_type"], f["n_channels"], f["n_blocks"], f["n_units"],
                             f["growth_rate"], f["groups"], nn.ReLU(inplace=True), f["use_IKM"], ours.scale).eval()
    net.load_state_dict(ours.state_dict(), strict=True)
    return lambda x: net((x - MEAN) / STD) * STD + MEAN
