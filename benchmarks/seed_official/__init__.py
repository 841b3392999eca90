"""Adapters of `bench_seed_official.py`: one module per network of the seed papers.

Each module defines `ARCH` (registry name), `PRESET` (the preset timed, usually "paper"), `REPO` and `COMMIT`
(where the official code comes from; fetched into a temporary folder, never committed) and
`build_official(folder: Path, ours: nn.Module) -> Callable[[Tensor], Tensor]`: the official network built from the
files in `folder`, holding `ours`' weights, wrapped so that it maps [0, 1] RGB to [0, 1] RGB like ours. A network
whose forward takes more than the LR (KDSR's teacher: `model(lr, hr)`) also defines `inputs(lr) -> tuple`, the
positional inputs both sides get.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def import_official(file: Path, name: str, *, search_path: Path | None = None,
                    fresh: tuple[str, ...] = ()) -> ModuleType:
    """Import one official source file as the module `name`. `search_path` leads sys.path while it runs (for the
    file's own imports); the top-level packages named in `fresh` (e.g. "model", which several code bases share)
    are imported anew from there and forgotten afterwards, so two repositories' packages of one name never mix."""
    def ours(module: str) -> bool:
        return module.split(".")[0] in fresh

    saved = {key: sys.modules.pop(key) for key in list(sys.modules) if ours(key)}
    if search_path is not None:
        sys.path.insert(0, str(search_path))
    try:
        spec = importlib.util.spec_from_file_location(name, file)
        if spec is None or spec.loader is None:
            raise FileNotFoundError(f"no official source at {file}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if search_path is not None:
            sys.path.remove(str(search_path))
        for key in [key for key in sys.modules if ours(key)]:
            del sys.modules[key]
        sys.modules.update(saved)
    return module
