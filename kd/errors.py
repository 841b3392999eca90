"""User-facing errors: the CLI prints their message and exits non-zero, without a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class KdError(Exception):
    """A mistake the user can fix (bad option, missing file, wrong checkpoint). The message says how."""


def unknown_choice(kind: str, value: str, choices: Iterable[str]) -> KdError:
    """Error for an unknown name, listing the valid ones and the closest match."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return KdError(f"unknown {kind} '{value}'.{hint} Choose one of: {', '.join(choices)}.")
