"""FAKD's SAN copy (`teachers/san_fakd.py`) against `Vincent-Hoo/Knowledge-Distillation-for-Super-resolution`,
timed like SAN (`san.py`) on the official SAN test path (`--chop`): FAKD's own test script evaluates its SAN with
the same EDSR-style chop.

Folder layout: `code/models/` of the FAKD repository (san.py, common.py, MPNCOV/) as `TrainCode/models/`, plus
SAN's `TestCode/code/model/__init__.py` for `forward_chop`, e.g.

    git --git-dir=<fetched FAKD> archive 589d35f code/models | tar x -C /tmp/official/san_fakd
    mv /tmp/official/san_fakd/code /tmp/official/san_fakd/TrainCode
    git --git-dir=<fetched SAN> archive 7c1e61f TestCode/code/model/__init__.py | tar x -C /tmp/official/san_fakd

The official forward returns (feature maps, SR); the SR image is timed.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from seed_official.san import chopped, official_network, ours_forward  # noqa: F401 - ours_forward: SAN's chop

ARCH = "san_fakd"
PRESET = "paper"
REPO = "Vincent-Hoo/Knowledge-Distillation-for-Super-resolution"
COMMIT = "589d35f750e63209e1213e89c414ac706fe6b9b1"


def build_official(folder: Path, ours: nn.Module):
    network = official_network(folder, ours, module="models.san")
    forward = chopped(folder, lambda x: network(x)[1], ours.scale)
    rgb_range = ours.rgb_range
    return lambda x: forward(x * rgb_range) / rgb_range
