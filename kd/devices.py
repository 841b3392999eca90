"""The torch device a command runs on: `--device` / the config key `device=`."""

from __future__ import annotations

import re

from kd.errors import KdError


def resolve_device(name: str) -> str:
    """The torch device of `--device` / `device=` for run, teacher train, sweep and eval: auto (cuda when
    available, else cpu), cpu, cuda or cuda:N. A device that is not there is a user error, said in one line."""
    import torch

    name = str(name).strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise KdError(f"--device {name!r} (device=): expected auto, cpu, cuda or cuda:N.")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise KdError(f"--device {name} (device=): CUDA is not available on this machine (torch "
                          f"{torch.__version__} sees no GPU); use --device cpu or --device auto.")
        index, count = int(name.partition(":")[2] or 0), torch.cuda.device_count()
        if index >= count:
            raise KdError(f"--device {name} (device=): only {count} CUDA device(s) are visible, cuda:0 to "
                          f"cuda:{count - 1}.")
    return name
