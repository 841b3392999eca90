"""Checks of network constructor fields shared by the network files (each names the network and the field)."""

from __future__ import annotations

from kd.errors import KdError


def check_positive_ints(network: str, **fields: object) -> None:
    """Every given field is an int >= 1 (bools refused), else a KdError naming the field and its value."""
    for name, value in fields.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise KdError(f"{network}: field '{name}' must be a positive integer; got {value!r}")


def check_rgb(network: str, channels: object, field: str = "n_colors") -> None:
    """The official colour-channels `field` is 3: kdbench networks map RGB to RGB (a bool is refused)."""
    if isinstance(channels, bool) or channels != 3:
        raise KdError(f"{network}: field '{field}' must be 3 (kdbench networks map RGB to RGB); got {channels!r}")
