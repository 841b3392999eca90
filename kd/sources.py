"""The hash of a module's code and of the first-party modules it imports, for run identity.

Methods (`kd.methods.sources`) and networks (`kd.models.sources`) put the hash of their code into run ids where a
committed manifest does not vouch for it. The code of a module is normalised to its syntax tree without docstrings,
so a comment, a docstring or the formatting does not count.
"""

from __future__ import annotations

import argparse
import ast
import functools
import hashlib
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Fields whose presence differs between Python versions and carries no behaviour here.
_VOLATILE_FIELDS = frozenset({"type_comment", "type_params", "kind"})
_WITH_DOCSTRING = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def source_file(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None)
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


def _in_scope(module: str, scope: tuple[str, ...]) -> bool:
    """`scope` holds package prefixes ending in a dot (`kd.methods.`) and whole module names (`kd.models.taps`)."""
    return any(module.startswith(entry) if entry.endswith(".") else module == entry for entry in scope)


def _imported_modules(tree: ast.Module, scope: tuple[str, ...]) -> set[str]:
    """The modules in `scope` that a module imports (`from kd.methods.pairing import ...`,
    `from kd.methods import pairing`, `import teachers.rcan`)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if _in_scope(node.module, scope):
                found.add(node.module)
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if _in_scope(submodule, scope) and source_file(submodule) is not None:
                    found.add(submodule)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if _in_scope(alias.name, scope))
    return found


@functools.lru_cache(maxsize=256)
def _normalised(path: Path, mtime_ns: int, size: int, scope: tuple[str, ...]) -> tuple[str, frozenset[str]]:
    """(sha256 of the normalised code, the in-scope modules imported) of one source file; remembered per version of
    the file (a sweep asks for every cell)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    canonical = json.dumps(_canonical(tree), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest(), frozenset(_imported_modules(tree, scope))


def source_hash(module: str, scope: tuple[str, ...]) -> str | None:
    """sha256 (16 hex) of the normalised code of `module` and of the modules in `scope` it imports, transitively;
    None when a source file cannot be read (an installation without sources)."""
    pending, digests = [module], {}
    while pending:
        name = pending.pop()
        if name in digests:
            continue
        path = source_file(name)
        try:
            stat = path.stat() if path is not None else None
        except OSError:
            stat = None
        if stat is None:
            return None
        digests[name], imported = _normalised(path, stat.st_mtime_ns, stat.st_size, scope)
        pending.extend(imported)
    return hashlib.sha256(json.dumps(sorted(digests.items())).encode()).hexdigest()[:16]


def read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    """A committed manifest of code hashes; empty when missing or damaged (every entry then counts as edited)."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def stale_names(manifest: Path, current: dict[str, dict[str, Any]]) -> list[str]:
    """The names whose entry in `current` (name -> version and code hash as they are now) is not what `manifest`
    records."""
    recorded = read_manifest(manifest)
    return [name for name, entry in current.items() if recorded.get(name) != entry]


def refresh_manifest(manifest: Path, current: dict[str, dict[str, Any]]) -> list[str]:
    """Write `current` as the manifest; returns the names whose entry changed."""
    from kd.fileio import atomic_write_text

    changed = stale_names(manifest, current)
    atomic_write_text(manifest, json.dumps(dict(sorted(current.items())), indent=2) + "\n")
    return changed


def manifest_command(argv: list[str] | None, prog: str, description: str, manifest: Path,
                     current: Callable[[], dict[str, dict[str, Any]]]) -> int:
    """`python -m <prog> [--refresh]`: say whether `manifest` is up to date (exit 1 if not), or rewrite it."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=description)
    parser.add_argument("--refresh", action="store_true", help=f"rewrite {manifest.name} from the current code")
    args = parser.parse_args(argv)
    if args.refresh:
        changed = refresh_manifest(manifest, current())
        print(f"{manifest}: {', '.join(changed) if changed else 'no entry'} changed")
        return 0
    stale = stale_names(manifest, current())
    print(f"{manifest}: " + (f"stale for {', '.join(stale)} (`python -m {prog} --refresh`)" if stale else "up to date"))
    return 1 if stale else 0
