"""A2N: the official `AAN` (code/model/aan.py, EDSR code base) at x4; its widths are the paper preset's."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from seed_official import import_official

ARCH = "a2n"
PRESET = "paper"
REPO = "haoyuc/A2N"
COMMIT = "210b38cbe721f0283aa5ad20c98373c5822f917a"


def build_official(folder: Path, ours):
    code = folder / "code"
    official = import_official(code / "model" / "aan.py", "official_a2n", search_path=code, fresh=("model",))
    net = official.AAN(SimpleNamespace(scale=[ours.scale])).eval()
    net.load_state_dict(ours.state_dict(), strict=True)
    return lambda x: net(x * 255) / 255
