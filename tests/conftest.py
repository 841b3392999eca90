from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_root(environ: Mapping[str, str] = os.environ) -> Path:
    """The shared reference folder: `$KDBENCH_SHARED` when set, else `../shared` beside the repository."""
    given = environ.get("KDBENCH_SHARED", "").strip()
    return Path(given).expanduser() if given else REPO.parent / "shared"


SHARED = shared_root()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared reference folder (`shared_root`); tests that need it skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"shared reference folder not found at {SHARED} (it sits beside the repo in CI; set "
                    "$KDBENCH_SHARED to use another place)")
    return SHARED


@pytest.fixture(scope="session")
def shared_data(shared_dir: Path) -> Path:
    return shared_dir / "data"


@pytest.fixture(scope="session")
def parity_dir(shared_dir: Path) -> Path:
    return shared_dir / "reference" / "parity"


@pytest.fixture(autouse=True)
def narrow_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLI tests read the tables as a user at an 80-column terminal or in a log file would (stdout is captured,
    so it is not a TTY); fixing the width also keeps the runner's own COLUMNS out of the results."""
    monkeypatch.setenv("COLUMNS", "80")


def assert_readable(out: str, expected: list[str], width: int = 80) -> None:
    """`out` (captured, so not a TTY) is plain and fits `width`, and each expected cell appears whole on one line.

    A line may run past the width only for a single token longer than half of it (a path is never split)."""
    assert "…" not in out and "\x1b[" not in out, out
    lines = out.splitlines()
    too_wide = [line for line in lines if len(line) > width and max(map(len, line.split())) <= width // 2]
    assert not too_wide, too_wide
    missing = [cell for cell in expected if not any(cell in line for line in lines)]
    assert not missing, (missing, out)


@pytest.fixture
def readable():
    return assert_readable


@pytest.fixture
def one_torch_thread():
    """Tiny networks run as fast on one thread, and one thread leaves the other core to other processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
