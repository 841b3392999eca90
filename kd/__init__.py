"""kdbench: knowledge-distillation benchmark for single-image super-resolution.

The Python API (see kd.api and the README):

    kd.create_model(name, scale=4, preset=None, **fields)   a registered network
    kd.load_official(model_or_name, path, ...)              official or kdbench checkpoints, weights_only=True
    kd.distill(student=..., teacher=..., method=..., data=..., profile=..., **sections)   one recorded run
    kd.evaluate_model(model, datasets, scales, ...)         PSNR/SSIM (Y) and LPIPS, the SR-paper protocol
    kd.build_report(runs_dir, out_dir)                      the comparison report over finished runs

Attributes are imported on first use, so `import kd` stays light (no torch until a function is used).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "create_model": "kd.api",
    "load_official": "kd.api",
    "distill": "kd.api",
    "evaluate_model": ("kd.evaluate", "evaluate"),  # not `kd.evaluate`: that name is the submodule's
    "build_report": "kd.api",
    "list_models": ("kd.models", "list_entries"),
    "list_methods": ("kd.methods", "list_methods"),
    "KdError": "kd.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'kd' has no attribute {name!r}")
    module, attribute = target if isinstance(target, tuple) else (target, name)
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, "__version__"})
