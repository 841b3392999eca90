"""HPINet (`paper` preset = HPINet-M) against `passerer/HPINet`: `HPINet.py` (needs `einops`, e.g. via `--path`).

Folder layout: `<folder>/HPINet.py`. The official constructor takes a model type naming an entry of its class
attribute `model_settings`; our model's fields are added there as one more entry (they carry the official names), so
the official network has our configuration; it is loaded with our weights and run in eval mode (argmax matching).
`hpinet_s` and `hpinet_l` time HPINet-S and -L with the same code.
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
FIELDS = ("dim", "block_num", "qk_dim", "mlp_dim", "patch_size")


def build_official(folder: Path, ours: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    source = importlib.util.spec_from_file_location("official_hpinet", folder / "HPINet.py")
    module = importlib.util.module_from_spec(source)
    source.loader.exec_module(module)
    spec = ours.kd_spec
    module.HPINet.model_settings["KDBENCH"] = {name: spec[name] for name in FIELDS}
    network = module.HPINet("KDBENCH", spec["scale"])
    network.load_state_dict(ours.state_dict(), strict=True)
    return network.eval()
