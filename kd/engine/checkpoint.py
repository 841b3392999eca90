"""Atomic file writes and checkpoint I/O: a crash at any moment leaves either the old file or the new one."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from kd.errors import KdError
from kd.fileio import atomic_write


def atomic_save(obj: Any, path: str | Path) -> None:
    """`torch.save` to a temp file beside `path`, then `os.replace`."""
    atomic_write(path, lambda handle: torch.save(obj, handle))


def load_checkpoint(path: str | Path) -> Any:
    """Load a checkpoint written by kdbench (or any untrusted file) with `weights_only=True`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise KdError(f"checkpoint '{path}' not found.") from None
    except Exception as exc:  # a truncated or foreign file: say which one (torch's own text runs over many lines)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if isinstance(exc, pickle.UnpicklingError) and "weights only" in first.lower():
            first = "it holds more than tensors and plain containers, which kdbench never unpickles"
        raise KdError(f"checkpoint '{path}' could not be read ({type(exc).__name__}: {first}).") from None


def check_resumable(path: Path, remedy: str) -> None:
    """A training checkpoint that exists must be readable; otherwise say how to start over (`remedy`)."""
    if not path.is_file():
        return
    try:
        state = load_checkpoint(path)
        if not isinstance(state, dict) or "step" not in state:
            raise KdError(f"checkpoint '{path}' is not a kdbench training checkpoint.")
    except KdError as exc:
        raise KdError(f"{exc} It cannot be resumed: {remedy}.") from None
