"""SwinFIR (`paper` preset) against `Zdafeng/SwinFIR`: `swinfir/archs/swinfir_arch.py` + `swinfir_utils.py`, built
with our model's fields (the official names) and run on the official test path (`SwinFIRModel.test()`: mirrored
padding by a whole extra window, then a crop). `swinfir_t` times SwinFIR-T with the same code.

Folder layout: `<folder>/swinfir/archs/{swinfir_arch,swinfir_utils}.py` (the repository root, or just those two
files). The two files are loaded without the package's `__init__` (which imports all of BasicSR); BasicSR itself
is replaced by a stand-in that provides the three names the files import, used at construction only: the registry
decorator (a no-op), `to_2tuple` and `trunc_normal_` (initial values, overwritten by our weights). `einops` must be
importable (`--path`).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ARCH = "swinfir"
PRESET = "paper"
REPO = "Zdafeng/SwinFIR"
COMMIT = "d08db6414a84a442d53fa6ad49b14f27969da80f"
OFFICIAL_FIELDS = ("img_size", "window_size", "embed_dim", "depths", "num_heads", "mlp_ratio", "upsampler",
                   "resi_connection", "img_range", "in_chans")  # our fields carry the official names


def _basicsr_stand_in() -> None:
    registry = types.SimpleNamespace(register=lambda *a, **k: (lambda cls: cls))
    modules = {
        "basicsr": {}, "basicsr.utils": {}, "basicsr.archs": {},
        "basicsr.utils.registry": {"ARCH_REGISTRY": registry},
        "basicsr.archs.arch_util": {"to_2tuple": lambda x: tuple(x) if isinstance(x, (list, tuple)) else (x, x),
                                    "trunc_normal_": nn.init.trunc_normal_},
    }
    for name, attributes in modules.items():
        module = sys.modules.setdefault(name, types.ModuleType(name))
        vars(module).update(attributes)


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build_official(folder: Path, ours: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    _basicsr_stand_in()
    archs = folder / "swinfir" / "archs"
    for package, path in (("swinfir", folder / "swinfir"), ("swinfir.archs", archs)):
        module = sys.modules.setdefault(package, types.ModuleType(package))
        module.__path__ = [str(path)]  # a package without running its __init__
    _load("swinfir.archs.swinfir_utils", archs / "swinfir_utils.py")
    spec = ours.kd_spec
    config = {"upscale": spec["scale"], **{name: spec[name] for name in OFFICIAL_FIELDS}}
    network = _load("swinfir.archs.swinfir_arch", archs / "swinfir_arch.py").SwinFIR(**config)
    network.load_state_dict(ours.state_dict(), strict=True)
    network.eval()
    window, scale = config["window_size"], config["upscale"]

    def official_test(lq: torch.Tensor) -> torch.Tensor:
        _, _, h, w = lq.shape
        mod_pad_h, mod_pad_w = (h // window + 1) * window - h, (w // window + 1) * window - w
        img = torch.cat([lq, torch.flip(lq, [2])], 2)[:, :, :h + mod_pad_h, :]
        img = torch.cat([img, torch.flip(img, [3])], 3)[:, :, :, :w + mod_pad_w]
        return network(img)[..., :h * scale, :w * scale]

    return official_test
