"""TensorBoard event files mirroring `metrics.jsonl` (`--set log.tensorboard=true`; needs the `tensorboard`
extra). The scalars are exactly the numbers of each metrics record, nested keys joined by `/` (`terms/rec`)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kd.errors import KdError


def check_tensorboard() -> None:
    if importlib.util.find_spec("tensorboard") is None:
        raise KdError("log.tensorboard=true needs the tensorboard package, which is not installed: "
                      "pip install 'kdbench[tensorboard]' (or pip install tensorboard), or leave the option out.")


def scalars(record: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """(tag, value) of every number in a metrics record except its step."""
    for key, value in record.items():
        if isinstance(value, dict):
            yield from scalars(value, f"{prefix}{key}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and (prefix or key != "step"):
            yield f"{prefix}{key}", float(value)


class EventWriter:
    """Appends records to `<run>/tensorboard/`; on resume, events after `start_step` are purged by TensorBoard."""

    def __init__(self, folder: Path, start_step: int) -> None:
        check_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(folder), purge_step=start_step)

    def write(self, record: dict[str, Any]) -> None:
        for tag, value in scalars(record):
            self._writer.add_scalar(tag, value, record["step"])
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
