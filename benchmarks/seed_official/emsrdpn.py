"""EMSRDPN (`teachers/emsrdpn.py`) against `yangbincheng/EMSRDPN` `src/model/emsrdpn.py` + `common.py`.

Folder layout: the repository's `src/` (at least `src/model/`), e.g.
`git --git-dir=<fetched EMSRDPN> archive 60be9f9 src/model | tar x -C /tmp/official/emsrdpn`. The paper network
(config A, heads x2/x3/x4/x8) runs its x4 head (`set_scale(2)`, `multi_scale_infer` off) on the whole image.
"""

from __future__ import annotations

import types
from pathlib import Path

from torch import nn

from seed_official import constructor_fields, import_isolated

ARCH = "emsrdpn"
PRESET = "paper"
REPO = "yangbincheng/EMSRDPN"
COMMIT = "60be9f9f82815ad84f0b7c1971479f6807654201"
CONFIGS = {"A": (64, 64, 16, 4, 64), "B": (135, 0, 16, 4, 0), "C": (0, 122, 16, 4, 122)}


def build_official(folder: Path, ours: nn.Module):
    official = import_isolated(folder / "src", "model.emsrdpn")
    fields = constructor_fields(ours)
    shape = tuple(fields[name] for name in ("Gr", "Gd", "D", "C", "G"))
    config = next((name for name, value in CONFIGS.items() if value == shape), None)
    if config is None:
        raise SystemExit(f"the official EMSRDPN builds only its named configs {CONFIGS}; the preset gives {shape}")
    network = official.EMSRDPN(types.SimpleNamespace(**fields, SRDPNconfig=config, multi_scale_infer=False,
                                                     scale=ours.scales))
    network.load_state_dict(ours.state_dict(), strict=True)
    network.set_scale(ours.branch)
    network.eval()
    return lambda x: network(x * ours.rgb_range) / ours.rgb_range
