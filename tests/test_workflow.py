"""A researcher's whole workflow from a fresh clone (issue 38): the README's code, a fresh clone reproducing the
committed grid, the demo's caveat, extending and initialising training, and the smaller points."""

from __future__ import annotations

import pytest
import torch

import kd
from conftest import REPO, shared_root
from kd.errors import KdError
from kd.models.loading import matching_presets


def test_tests_find_the_shared_folder_through_the_environment(tmp_path):
    assert shared_root({"KDBENCH_SHARED": str(tmp_path)}) == tmp_path
    assert shared_root({}) == REPO.parent / "shared"
    assert shared_root({"KDBENCH_SHARED": ""}) == REPO.parent / "shared"


def test_load_official_names_the_preset_whose_shapes_fit(tmp_path):
    path = tmp_path / "teacher.pt"
    torch.save(kd.create_model("asid", scale=3, preset="tiny").state_dict(), path)  # a bare state dict, as the zoo
    with pytest.raises(KdError, match=r"preset 'tiny' at x3: build that one \(kd.load_official\('asid', path, "
                                      r"preset='tiny', scale=3\); --preset tiny --scale 3"):
        kd.load_official("asid", path)  # the paper preset at x4 by default
    state = torch.get_rng_state()
    assert matching_presets("asid", torch.load(path, weights_only=True), scale=4) == [("tiny", 3)]
    assert torch.equal(torch.get_rng_state(), state)  # trying the presets draws nothing from the caller's stream
    with pytest.raises(KdError) as other:
        kd.load_official("rcan", path, preset="tiny", scale=3)  # another network: no preset of RCAN can fit
    assert "Its keys and shapes" not in str(other.value)
