"""Which network a preset name stands for, as part of run ids and zoo keys.

Run ids and zoo keys name a network by its registry name and preset. A preset whose fields change would otherwise
keep its ids, and `kdbench run` would answer "already finished" with the old network's numbers. So the fields enter
the identity where the name alone cannot vouch for them:

* a preset whose fields are what `preset_pins.json` (committed beside this file) recorded when ids were first
  made keeps the ids it always had, so committed records and `sweep --records` keep matching their runs;
* a preset changed since, or added since, gets the hash of its fields added.

The manifest is frozen: never add or update an entry (a changed preset would then take its old runs' ids again).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from kd.models.registry import get_entry, resolve_fields

PINS = Path(__file__).with_name("preset_pins.json")


@functools.cache
def _pins() -> dict[str, str]:
    return json.loads(PINS.read_text(encoding="utf-8"))


def fields_sha256(arch: str, preset: str | None) -> str:
    """sha256 (16 hex digits) of the constructor fields the preset resolves to."""
    canonical = json.dumps(resolve_fields(arch, preset), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def unpinned_fields(arch: str, preset: str | None) -> str | None:
    """The preset's `fields_sha256` where it differs from the pinned one (or none is pinned), else None."""
    entry = get_entry(arch)
    digest = fields_sha256(entry.arch, preset)
    name = f"{entry.arch}/{preset or entry.default_preset}"
    return None if _pins().get(name) == digest else digest
