"""Atomic writes and file hashing, shared by everything that writes results, caches or checkpoints.

An atomic write goes to a temporary file beside the target and is renamed over it, so a crash at any moment
leaves either the old file or the complete new one, never a half-written result.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from kd.errors import KdError

_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call `write(handle)` on a temporary binary file beside `path`, flush it to disk, then rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600: colleagues on a shared disk could not read it
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None:  # a failed write (disk full) names no file: name the one being written
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def current_umask() -> int:
    """The process umask, read without changing it where Linux reports it (os.umask alone must set it to read it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json_lines(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file (metrics.jsonl), skipping what is not one: a line cut short by a kill,
    bytes that are not UTF-8, a value that is not an object. A missing file has none."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    records = []
    for line in data.splitlines():
        try:
            record = json.loads(line.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError and JSONDecodeError
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def check_plain_name(name: object, what: str) -> str:
    """`name` when it is a plain file name (letters, digits, `.`, `_`, `+`, `-`; not starting with `.` or `-`):
    a name kdbench joins to a folder can never point outside it."""
    if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name):
        raise KdError(f"{what} {name!r} is not a plain name (letters, digits, '.', '_', '+', '-', starting with a "
                      "letter or digit): kdbench uses it as a file name and never writes outside its folder.")
    return name


def check_child_name(name: object, what: str) -> str:
    """`name` when joining it to a folder names a child of that folder: one non-empty path component, not `.` or
    `..` (looser than `check_plain_name`: run ids of Python objects hold `@` and may start with `_`)."""
    if not isinstance(name, str) or name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise KdError(f"{what} {name!r} is not one file name: kdbench uses it as a folder name and never writes "
                      "outside its folder.")
    return name


def path_component(name: str) -> str:
    """`name` (a dataset given by path, a label) made into one safe file-name part: runs of other characters become
    `_`, and leading or trailing dots and underscores go, so it never names a parent folder."""
    return re.sub(r"[^\w.-]+", "_", name).strip("._")


def check_new_files(targets: Sequence[Path], *, option: str, force: bool, inputs: Sequence[Path] = ()) -> None:
    """Before any work: refuse a target that is one of the `inputs` (always), two outputs on one path, and a file
    that exists already unless `force` (kdbench replaces nothing it did not write without being asked)."""
    own = {path.resolve() for path in inputs}
    clobbered = [t for t in targets if t.exists() and t.resolve() in own]
    if clobbered:
        raise KdError(f"{option}: {clobbered[0]} would replace its own input; choose another {option}.")
    seen: set[Path] = set()
    for target in targets:
        if target in seen:
            raise KdError(f"{option}: two outputs would be written to {target} (e.g. two datasets whose names "
                          f"share a folder name); evaluate them one at a time or choose another {option}.")
        seen.add(target)
    existing = [t for t in targets if t.exists() or t.is_symlink()]
    if existing and not force:
        shown = ", ".join(str(t) for t in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise KdError(f"{option}: {len(existing)} of the files to write exist already ({shown}); pass --force to "
                      f"replace them, or choose another {option}.")


def checkout_root() -> Path | None:
    """The repository kdbench runs from, when it runs from a checkout (an installed package has none)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "reports").is_dir() else None
