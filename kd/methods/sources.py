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

import argparse
import ast
import functools
import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

MANIFEST = Path(__file__).with_name("sources.json")
PACKAGE = "kd.methods"
REFRESH_COMMAND = "python -m kd.methods.sources --refresh"
# Fields whose presence differs between Python versions and carries no behaviour here.
_VOLATILE_FIELDS = frozenset({"type_comment", "type_params", "kind"})
_WITH_DOCSTRING = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _source_file(module: str) -> Path | None:
    origin = getattr(importlib.util.find_spec(module), "origin", None)
    return Path(origin) if origin and origin.endswith(".py") else None


def _canonical(node: Any) -> Any:
    """The syntax tree as plain data, without docstrings and without fields that are empty or version-specific."""
    if isinstance(node, ast.AST):
        body = getattr(node, "body", None)
        if isinstance(node, _WITH_DOCSTRING) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            body = body[1:]
        fields = []
        for name in node._fields:
            if name in _VOLATILE_FIELDS:
                continue
            value = _canonical(body if name == "body" and body is not None else getattr(node, name, None))
            if value is not None and value != []:
                fields.append([name, value])
        return [type(node).__name__, fields]
    if isinstance(node, list):
        return [_canonical(item) for item in node]
    return None if node is None else repr(node)


def _imported_method_modules(tree: ast.Module) -> set[str]:
    """The modules of this package that a module imports (`from kd.methods.pairing import ...`,
    `from kd.methods import pairing`)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith(f"{PACKAGE}."):
                found.add(node.module)
            elif node.module == PACKAGE:
                found.update(f"{PACKAGE}.{alias.name}" for alias in node.names
                             if importlib.util.find_spec(f"{PACKAGE}.{alias.name}") is not None)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith(f"{PACKAGE}."))
    return found


@functools.lru_cache(maxsize=256)
def _normalised(path: Path, mtime_ns: int, size: int) -> tuple[str, frozenset[str]]:
    """(sha256 of the normalised code, the kd.methods modules imported) of one source file; remembered per version of
    the file (a sweep asks for every cell)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    canonical = json.dumps(_canonical(tree), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest(), frozenset(_imported_method_modules(tree))


def source_hash(module: str) -> str | None:
    """sha256 (16 hex) of the normalised code of `module` and of the `kd.methods` modules it imports, transitively;
    None when a source file cannot be read (an installation without sources)."""
    pending, digests = [module], {}
    while pending:
        name = pending.pop()
        if name in digests:
            continue
        path = _source_file(name)
        try:
            stat = path.stat() if path is not None else None
        except OSError:
            stat = None
        if stat is None:
            return None
        digests[name], imported = _normalised(path, stat.st_mtime_ns, stat.st_size)
        pending.extend(imported)
    return hashlib.sha256(json.dumps(sorted(digests.items())).encode()).hexdigest()[:16]


def read_manifest() -> dict[str, dict[str, Any]]:
    try:
        manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


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


def stale_entries() -> list[str]:
    """Built-in methods whose code or version is not what the manifest records."""
    manifest = read_manifest()
    return [name for name, cls in builtin_methods().items() if manifest.get(name) != manifest_entry(cls)]


def refresh() -> list[str]:
    """Record every built-in method's version and code in the manifest; returns the methods whose entry changed."""
    from kd.fileio import atomic_write_text

    changed = stale_entries()
    manifest = {name: manifest_entry(cls) for name, cls in builtin_methods().items()}
    atomic_write_text(MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kd.methods.sources", description=__doc__.split("\n\n")[0])
    parser.add_argument("--refresh", action="store_true", help=f"rewrite {MANIFEST.name} from the current code")
    args = parser.parse_args(argv)
    if args.refresh:
        changed = refresh()
        print(f"{MANIFEST}: {', '.join(changed) if changed else 'no entry'} changed")
        return 0
    stale = stale_entries()
    print(f"{MANIFEST}: " + (f"stale for {', '.join(stale)} (`{REFRESH_COMMAND}`)" if stale else "up to date"))
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
