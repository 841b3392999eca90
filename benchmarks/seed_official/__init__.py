"""Adapters of `bench_seed_official.py`: one module per network of the seed papers.

Each module defines `ARCH` (registry name), `PRESET` (the preset timed, usually "paper"), `REPO` and `COMMIT`
(where the official code comes from; fetched into a temporary folder, never committed) and
`build_official(folder: Path, ours: nn.Module) -> Callable[[Tensor], Tensor]`: the official network built from the
files in `folder`, holding `ours`' weights, wrapped so that it maps [0, 1] RGB to [0, 1] RGB like ours.
Optional: `inputs(lr) -> tuple`, the positional inputs both sides get where the forward takes more than the LR
(KDSR's teacher: `model(lr, hr)`); `ours_forward(folder, ours) -> Callable[[Tensor], Tensor]`, ours under the same
wrapper where the official test path wraps the network (e.g. SAN's `--chop`); without it `ours` is timed as it is.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from kd.models import get_entry


def import_isolated(root: Path, name: str) -> ModuleType:
    """Import `name` (e.g. `model.san`) from the folder `root`, under a top-level package of its own: EDSR-family
    repositories all call their package `model`, so each import starts from a clean `model` and puts back whatever
    was there before (the imported modules keep working through their own references)."""
    top = name.split(".")[0]
    clash = [key for key in sys.modules if key == top or key.startswith(top + ".")]
    saved = {key: sys.modules.pop(key) for key in clash}
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(root))
        for key in [key for key in sys.modules if key == top or key.startswith(top + ".")]:
            del sys.modules[key]
        sys.modules.update(saved)


def constructor_fields(ours: nn.Module) -> dict[str, Any]:
    """Every constructor field of a network built by `kd.models.create` (the builder's defaults under the fields
    `kd_spec` holds: its preset's, overridden by the explicit ones; a preset need not name every field), without
    arch, scale and preset: official `args` names."""
    spec = {k: v for k, v in ours.kd_spec.items() if k not in ("arch", "scale", "preset")}
    parameters = inspect.signature(get_entry(ours.kd_spec["arch"]).builder).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
    return {**defaults, **spec}
