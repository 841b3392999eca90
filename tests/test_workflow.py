"""A researcher's whole workflow from a fresh clone (issue 38): the README's code, a fresh clone reproducing the
committed grid, the demo's caveat, extending and initialising training, and the smaller points."""

from __future__ import annotations

from pathlib import Path

from conftest import REPO, shared_root


def test_tests_find_the_shared_folder_through_the_environment(tmp_path):
    assert shared_root({"KDBENCH_SHARED": str(tmp_path)}) == tmp_path
    assert shared_root({}) == REPO.parent / "shared"
    assert shared_root({"KDBENCH_SHARED": ""}) == REPO.parent / "shared"
