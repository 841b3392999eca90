"""KDSR student (KDSR_S-M, `paper`) against the official `model_ST/blindsr.py` of `Zj-BinXia/KDSR`.

Folder: the repository's files (`KDSR-classic/...`), e.g. `git archive` of the snapshot into /tmp/official/kdsr.
The official network holds our weights (same keys) and, with `rgb_range` 1, already maps [0, 1] to [0, 1].
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import SimpleNamespace

from torch import nn

ARCH = "kdsr"
PRESET = "paper"
REPO = "Zj-BinXia/KDSR"
COMMIT = "c7c9e8110654571596c6f04203bd305d84698259"


def official_blindsr(folder: Path, package: str, ours: nn.Module) -> nn.Module:
    """The official `BlindSR` of `package` (`model_ST` student, `model_TA` teacher) holding `ours`' weights."""
    sys.path.insert(0, str(folder / "KDSR-classic"))
    blindsr = importlib.import_module(f"{package}.blindsr")
    args = SimpleNamespace(n_feats=ours.n_feats, n_blocks=ours.n_blocks, n_resblocks=ours.n_resblocks,
                           scale=[ours.scale], rgb_range=ours.rgb_range)
    official = blindsr.BlindSR(args).eval()
    official.load_state_dict(ours.state_dict(), strict=True)
    return official


def build_official(folder: Path, ours: nn.Module) -> nn.Module:
    return official_blindsr(folder, "model_ST", ours)
