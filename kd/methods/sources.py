"""Which source code a method's results come from, as part of the run id.

A method's `version` is in every run id; its source enters the id only where the version alone cannot vouch for it:

* a built-in method whose code is what `sources.json` (committed beside this file) records for its version keeps
  the id it always had, so committed records and `sweep --records` keep matching their runs;
* a built-in method edited locally (its code no longer what the manifest records for its version) gets the hash of
  its code added, so it never reuses runs made with the old code;
* a plugin method always gets the hash of its code.

The code of a method is its class's module and the `kd.methods` modules that module imports (base, pairing, ...),
each normalised to its syntax tree without docstrings, so a comment, a docstring or the formatting does not count.
A test fails when a built-in method's code no longer matches the manifest entry of its version; after such a change
bump the method's `version` when its results change, then record the code with

    python -m kd.methods.sources --refresh
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from kd import sources

MANIFEST = Path(__file__).with_name("sources.json")
PACKAGE = "kd.methods"
SCOPE = (f"{PACKAGE}.",)  # a method's code: its module and the kd.methods modules it imports
REFRESH_COMMAND = "python -m kd.methods.sources --refresh"


def source_hash(module: str) -> str | None:
    """sha256 (16 hex) of the normalised code of `module` and of the `kd.methods` modules it imports, transitively;
    None when a source file cannot be read (an installation without sources)."""
    return sources.source_hash(module, SCOPE)


def read_manifest() -> dict[str, dict[str, Any]]:
    return sources.read_manifest(MANIFEST)


def manifest_entry(cls: type) -> dict[str, Any]:
    """What the manifest holds for a built-in method as it is now."""
    return {"version": int(getattr(cls, "version", 1)), "source": source_hash(cls.__module__)}


def source_identity(cls: type) -> str | None:
    """The method's code hash when it enters the run id (a plugin, or a built-in method edited without a new
    manifest entry); None for a built-in method whose code is the one recorded for its version."""
    entry = manifest_entry(cls)
    if entry["source"] is None:
        return None
    builtin = cls.__module__.startswith(f"{PACKAGE}.")
    if builtin and read_manifest().get(cls.name) == entry:
        return None
    return entry["source"]


def builtin_methods() -> dict[str, type]:
    from kd.methods import _METHODS, _load_builtins

    _load_builtins()
    return {name: cls for name, cls in sorted(_METHODS.items()) if cls.__module__.startswith(f"{PACKAGE}.")}


def current_entries() -> dict[str, dict[str, Any]]:
    """Every built-in method's version and code as they are now."""
    return {name: manifest_entry(cls) for name, cls in builtin_methods().items()}


def stale_entries() -> list[str]:
    """Built-in methods whose code or version is not what the manifest records."""
    return sources.stale_names(MANIFEST, current_entries())


def refresh() -> list[str]:
    """Record every built-in method's version and code in the manifest; returns the methods whose entry changed."""
    return sources.refresh_manifest(MANIFEST, current_entries())


def main(argv: list[str] | None = None) -> int:
    description = __doc__.split("\n\n")[0]
    return sources.manifest_command(argv, "kd.methods.sources", description, MANIFEST, current_entries)


if __name__ == "__main__":
    sys.exit(main())
