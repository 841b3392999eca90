"""HPINet (`paper` preset = HPINet-M) against `passerer/HPINet`: `HPINet.py` (needs `einops`, e.g. via `--path`).

Folder layout: `<folder>/HPINet.py`. The official constructor takes a model type; `M` is the paper preset, so the
official class is built as `HPINet('M', 4)`, loaded with our weights and run in eval mode (argmax matching).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ARCH = "hpinet"
PRESET = "paper"
REPO = "passerer/HPINet"
COMMIT = "25d5db1422df50b1671aae6f6ec3a2953fa352c5"


def build_official(folder: Path, ours: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    spec = importlib.util.spec_from_file_location("official_hpinet", folder / "HPINet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    network = module.HPINet("M", 4)
    network.load_state_dict(ours.state_dict(), strict=True)
    return network.eval()
