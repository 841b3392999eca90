"""HSRNet: the official `Net` (hsrnet.py) at x4; its hard-coded 10 stages and 3 iterations are the paper preset's."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from torch import nn

from seed_official import import_official

ARCH = "hsrnet"
PRESET = "paper"
REPO = "yuqing-liu-dut/HSRNet"
COMMIT = "04da000b105f14235e0abd7deb4a9908a554d334"


def build_official(folder: Path, ours):
    official = import_official(folder / "hsrnet.py", "official_hsrnet")
    net = official.Net(SimpleNamespace(scale=[ours.scale])).eval()
    nn.Module.load_state_dict(net, ours.state_dict(), strict=True)  # Net overrides it with a lenient copy loop
    return lambda x: net(x * 255) / 255
