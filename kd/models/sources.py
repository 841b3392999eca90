"""Which source code a network's results come from, as part of run ids and zoo keys.

As for methods (`kd.methods.sources`), a network's code enters the identity only where the manifest cannot vouch
for it:

* a built-in network whose `version` and code are what `sources.json` (committed beside this file) records keeps
  the ids it always had, so committed records and `sweep --records` keep matching their runs;
* a built-in network edited locally gets the hash of its code added, so it never reuses runs of the old code;
* a network registered by a plugin always gets the hash of its code;
* a `version` above 1 is always added: bump it when an edit changes what the network computes.

A network's code is its builder's module and the modules it imports from `teachers`, `students` and the network
parts of `kd.models` (taps, field checks), normalised as `kd.sources` does. A test fails when a built-in network's
code no longer matches the manifest; after such a change bump the network's `version` if its outputs change, then
record the code with

    python -m kd.models.sources --refresh
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from kd import sources
from kd.models.registry import BUILTIN_MODULES, BUILTIN_PACKAGES, ModelEntry, get_entry, list_entries

MANIFEST = Path(__file__).with_name("sources.json")
SCOPE = (*(f"{package}." for package in BUILTIN_PACKAGES), "kd.models.taps", "kd.models.fields")
REFRESH_COMMAND = "python -m kd.models.sources --refresh"


def _module(entry: ModelEntry) -> str:
    builder = getattr(entry.builder, "func", entry.builder)  # a functools.partial names its function's module
    return builder.__module__


def is_builtin(entry: ModelEntry) -> bool:
    module = _module(entry)
    return module in BUILTIN_MODULES or module.split(".")[0] in BUILTIN_PACKAGES


def manifest_entry(entry: ModelEntry) -> dict[str, Any]:
    """What the manifest holds for a network as it is now."""
    return {"version": entry.version, "source": sources.source_hash(_module(entry), SCOPE)}


def read_manifest() -> dict[str, dict[str, Any]]:
    return sources.read_manifest(MANIFEST)


def network_source(arch: str) -> dict[str, Any] | None:
    """What of a network's code enters the identity: its `version` when above 1, its code hash when the manifest
    does not record it (edited, or a plugin); None for a built-in network as recorded at version 1."""
    entry = get_entry(arch)
    current = manifest_entry(entry)
    identity: dict[str, Any] = {"version": entry.version} if entry.version > 1 else {}
    recorded = is_builtin(entry) and read_manifest().get(entry.arch) == current
    if not recorded and current["source"] is not None:
        identity["source"] = current["source"]
    return identity or None


def builtin_networks() -> dict[str, ModelEntry]:
    return {entry.arch: entry for entry in list_entries() if is_builtin(entry)}


def current_entries() -> dict[str, dict[str, Any]]:
    """Every built-in network's version and code as they are now."""
    return {name: manifest_entry(entry) for name, entry in builtin_networks().items()}


def stale_entries() -> list[str]:
    """Built-in networks whose code or version is not what the manifest records."""
    return sources.stale_names(MANIFEST, current_entries())


def refresh() -> list[str]:
    """Record every built-in network's version and code in the manifest; returns the networks whose entry changed."""
    return sources.refresh_manifest(MANIFEST, current_entries())


def main(argv: list[str] | None = None) -> int:
    description = __doc__.split("\n\n")[0]
    return sources.manifest_command(argv, "kd.models.sources", description, MANIFEST, current_entries)


if __name__ == "__main__":
    sys.exit(main())
