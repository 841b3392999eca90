"""Where datasets live on disk and where kdbench caches generated files.

Data root: `--data-root`, else env `KDBENCH_DATA`, else `$XDG_CACHE_HOME/kdbench/data` (or `~/.cache/kdbench/data`).
Inside it each dataset follows `<root>/<Name>/HR/*` with optional `<root>/<Name>/LR_bicubic/X<s>/*` (same stems).
Cache: env `KDBENCH_CACHE`, else `$XDG_CACHE_HOME/kdbench` (or `~/.cache/kdbench`): generated LR and downloads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from kd.errors import KdError

if TYPE_CHECKING:
    from kd.data.registry import DatasetInfo

DATA_ENV = "KDBENCH_DATA"
CACHE_ENV = "KDBENCH_CACHE"


def _user_cache_base() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg).expanduser() if xdg else Path.home() / ".cache"


def cache_dir() -> Path:
    """kdbench's cache folder (generated LR images, downloaded archives); not created here."""
    explicit = os.environ.get(CACHE_ENV)
    return Path(explicit).expanduser() if explicit else _user_cache_base() / "kdbench"


def resolve_data_root(cli_value: str | Path | None = None) -> Path:
    """The data root: the command-line value, else `$KDBENCH_DATA`, else the per-user cache's `data/` folder."""
    if cli_value not in (None, ""):
        return Path(cli_value).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return _user_cache_base() / "kdbench" / "data"


def dataset_dir(info: DatasetInfo, data_root: Path) -> Path:
    """`<root>/<folder>` holding `HR/` for a dataset on disk; a `KdError` says where to put it when absent."""
    for folder in info.folder_names:
        candidate = data_root / folder
        if (candidate / "HR").is_dir():
            return candidate
    expected = data_root / info.folder_names[0] / "HR"
    if info.download_source:
        how = f"download it with `kdbench data download {info.name} --data-root {data_root}`"
    else:
        how = f"it has no automatic download: place its HR images (PNG/BMP/JPEG) in {expected}/"
    also = f" (folder names accepted: {', '.join(info.folder_names)})" if len(info.folder_names) > 1 else ""
    raise KdError(
        f"dataset {info.name} not found: expected its HR images in {expected}{also}; {how}, or point "
        f"--data-root / ${DATA_ENV} at a folder that holds {info.folder_names[0]}/HR"
    )
