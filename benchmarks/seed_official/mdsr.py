"""MDSR (`teachers/mdsr.py`) against `sanghyun-son/EDSR-PyTorch` `src/model/mdsr.py` + `common.py`.

The repository snapshot is too large to fetch here (2 GB); the two files at this commit come from the stored code
index (1,837 and 2,762 characters). Folder layout: `model/mdsr.py`, `model/common.py` and an empty
`model/__init__.py`. The whole multi-branch network (scales [2, 3, 4]) runs its x4 branch (`set_scale(2)`) on the
whole 320x180 image, as ours does; EDSR-PyTorch's `--chop` is optional and not used.
"""

from __future__ import annotations

import types
from pathlib import Path

from torch import nn

from seed_official import constructor_fields, import_isolated

ARCH = "mdsr"
PRESET = "paper"
REPO = "sanghyun-son/EDSR-PyTorch"
COMMIT = "4f5e2ced93ebb21b42c8568b044c143a4be4a651"


def build_official(folder: Path, ours: nn.Module):
    official = import_isolated(folder, "model.mdsr")
    network = official.MDSR(types.SimpleNamespace(**constructor_fields(ours) | {"scale": ours.scales}))
    network.load_state_dict(ours.state_dict(), strict=True)
    network.set_scale(ours.branch)
    network.eval()
    return lambda x: network(x * ours.rgb_range) / ours.rgb_range
