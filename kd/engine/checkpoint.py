"""Atomic file writes and checkpoint I/O: a crash at any moment leaves either the old file or the new one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from kd.errors import KdError


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: str | Path) -> None:
    """`torch.save` to a temp file beside `path`, then `os.replace`."""
    _atomic(Path(path), lambda handle: torch.save(obj, handle))


def atomic_write_text(path: str | Path, text: str) -> None:
    _atomic(Path(path), lambda handle: handle.write(text.encode("utf-8")))


def load_checkpoint(path: str | Path) -> Any:
    """Load a checkpoint written by kdbench (or any untrusted file) with `weights_only=True`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise KdError(f"checkpoint '{path}' not found.") from None
    except Exception as exc:  # a truncated or foreign file: say which one
        raise KdError(f"checkpoint '{path}' could not be read ({type(exc).__name__}: {exc}).") from None
