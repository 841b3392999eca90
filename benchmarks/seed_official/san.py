"""SAN (`teachers/san.py`) against `daitao/SAN`, timed on the official test path (`--chop`).

Folder layout: the repository's `TrainCode/model/` (san.py, common.py, MPNCOV/) and `TestCode/code/model/__init__.py`
(the test wrapper whose `forward_chop` the README's test commands use), e.g.

    git --git-dir=<fetched SAN> archive 7c1e61f TrainCode/model TestCode/code/model/__init__.py \
        | tar x -C /tmp/official/san

The official `Covpool` materialises an (hw)^2 centring matrix per image (13 GB for a whole 320x180 map), so its
test path splits the LR image into four overlapping parts (`forward_chop`, shave 10: 100x170 each at 320x180) and
runs them one by one. Both networks are timed through that same `forward_chop` (official code, called with a
stand-in for its `Model` wrapper: scale 4, one GPU's worth of parts per call); ours also runs a whole image in one
call (`kdbench eval` does), which the official network cannot.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from seed_official import constructor_fields, import_isolated

ARCH = "san"
PRESET = "paper"
REPO = "daitao/SAN"
COMMIT = "7c1e61f0d17b58e3400a14e631d9185dde1881b6"
OFFICIAL_MODULE = "model.san"


def chopped(folder: Path, network: Callable[[torch.Tensor], torch.Tensor], scale: int = 4):
    """`network` under the official test wrapper's `forward_chop` (default shave 10, min_size 160000)."""
    wrapper = import_isolated(folder / "TestCode" / "code", "model").Model
    stand_in = types.SimpleNamespace(scale=[scale], idx_scale=0, n_GPUs=1, model=network)
    stand_in.forward_chop = functools.partial(wrapper.forward_chop, stand_in)
    return stand_in.forward_chop


def official_network(folder: Path, ours: nn.Module, module: str = OFFICIAL_MODULE) -> nn.Module:
    official = import_isolated(folder / "TrainCode", module)
    args = types.SimpleNamespace(**constructor_fields(ours), scale=[ours.scale])
    network = official.SAN(args)
    network.load_state_dict(ours.state_dict(), strict=True)
    return network.eval()


def build_official(folder: Path, ours: nn.Module):
    network = official_network(folder, ours)
    forward = chopped(folder, network, ours.scale)
    rgb_range = ours.rgb_range
    return lambda x: forward(x * rgb_range) / rgb_range


def ours_forward(folder: Path, ours: nn.Module):
    return chopped(folder, ours, ours.scale)
