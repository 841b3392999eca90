"""NCNet: the official PyTorch port (torch_code/ncnet.py) at x4, n_feats 32 (the paper preset)."""

from __future__ import annotations

import math
from pathlib import Path

from seed_official import import_official

ARCH = "ncnet"
PRESET = "paper"
REPO = "Algolzw/NCNet"
COMMIT = "048486534a209c72ef6bbe991a4a926e61c18345"


def build_official(folder: Path, ours):
    official = import_official(folder / "torch_code" / "ncnet.py", "official_ncnet")
    official.math = math  # the port uses math.log without importing math (SEED_NETWORKS.md section 4)
    net = official.NCNet(n_feats=ours.kd_spec["n_feats"], out_c=3, scale_factor=ours.scale).eval()
    net.load_state_dict(ours.state_dict(), strict=True)
    return lambda x: net(x * 255) / 255
