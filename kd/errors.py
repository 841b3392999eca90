"""User-facing errors: the CLI prints their message and exits non-zero, without a traceback."""

from __future__ import annotations

import difflib
import errno
import json
from collections.abc import Iterable


class KdError(Exception):
    """A mistake the user can fix (bad option, missing file, wrong checkpoint). The message says how."""

    exit_code = 2


def unknown_choice(kind: str, value: str, choices: Iterable[str]) -> KdError:
    """Error for an unknown name, listing the valid ones and the closest match."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return KdError(f"unknown {kind} '{value}'.{hint} Choose one of: {', '.join(choices)}.")


_OS_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space or write to another folder",
    errno.EDQUOT: "the disk quota is exceeded: free some space or write to another folder",
    errno.EROFS: "the file system is read-only: write to another folder",
    errno.EACCES: "permission denied: fix the permissions or use another folder",
    errno.EPERM: "operation not permitted: fix the permissions or use another folder",
    errno.ENOENT: "no such file or folder: check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
    errno.EISDIR: "this is a folder where a file was expected: check the path",
    errno.ENOMEM: "out of memory: use smaller inputs (e.g. eval --tile) or free memory",
}


def describe_failure(exc: BaseException) -> tuple[str, int]:
    """(one-line message, exit code) for any exception that reaches the command line."""
    if isinstance(exc, KdError):
        return str(exc), exc.exit_code
    if isinstance(exc, OSError):
        names = " -> ".join(str(name) for name in (exc.filename, exc.filename2) if name is not None)
        advice = _OS_ADVICE.get(exc.errno or 0, exc.strerror or str(exc))
        return f"{names or 'a file operation failed'}: {advice} ({exc.strerror or exc}).", 2
    if isinstance(exc, MemoryError):
        return "out of memory: use smaller inputs (e.g. eval --tile, a smaller train.batch_size) or free memory.", 2
    if isinstance(exc, (UnicodeError, json.JSONDecodeError)):
        return f"a file could not be decoded ({type(exc).__name__}: {exc}); rerun with --debug to see which.", 2
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "CUDA" in text or "cuda" in text:
        return f"device error: {text}. Check the GPU (nvidia-smi) or choose device cpu.", 2
    return (f"unexpected {type(exc).__name__}: {text}. Rerun with --debug (or KDBENCH_DEBUG=1) for the traceback "
            "and report it."), 2
