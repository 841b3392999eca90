"""Run identity: the ids of recorded configurations never change unasked (committed reports and `sweep --records`
find finished cells by id), and what the result depends on besides the configuration is part of the id."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from kd.config import run_id
from kd.engine.identity import run_inputs
from kd.profiles import profile_layer, resolve_layers

# Ids of the smoke configuration below, computed by kdbench before method sources entered the identity (commit
# ea0eb0a). dckd and dukd are left out: their ids of then were of version 1, and both are version 2 since (a new
# version is a new id by design), so no id computed on that commit exists for what they are now.
PINNED_IDS = {
    "none": "asid-none-noteacher-x4-smoke-s0-95a6c0a3",
    "logits": "asid-logits-rcan-x4-smoke-s0-ccd46633",
    "fitnet": "asid-fitnet-rcan-x4-smoke-s0-7dd18fb8",
    "fakd": "asid-fakd-rcan-x4-smoke-s0-584a8dcb",
}


@pytest.fixture
def fixed_inputs(tmp_path, monkeypatch) -> Path:
    """Datasets and a teacher checkpoint of fixed bytes (fingerprints hash files, they do not decode them)."""
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # the checkpoint's path is part of the configuration: relative, it is fixed
    for name, count in (("Set5", 5), ("T91", 6)):
        (tmp_path / "data" / name / "HR").mkdir(parents=True)
        for i in range(count):
            (tmp_path / "data" / name / "HR" / f"img{i}.png").write_bytes(f"{name} image {i}".encode() * 10)
    (tmp_path / "teacher.pt").write_bytes(b"teacher weights")
    return tmp_path


def _smoke(method: str, root: Path):
    layer = {"method": {"name": method}, "data": {"train": "T91", "root": str(root / "data")},
             "teacher": {"arch": "rcan", "preset": "tiny", "ckpt": "teacher.pt"},
             "eval": {"datasets": ["Set5"], "val_dataset": None}}
    return resolve_layers([profile_layer("smoke"), ("test", layer)])


@pytest.mark.parametrize("method", sorted(PINNED_IDS))
def test_run_ids_of_unchanged_configurations_are_pinned(fixed_inputs, method):
    config = _smoke(method, fixed_inputs)
    assert run_id(config, run_inputs(config)) == PINNED_IDS[method]


def test_builtin_method_sources_match_the_manifest():
    from kd.methods.sources import MANIFEST, REFRESH_COMMAND, stale_entries

    stale = stale_entries()
    assert not stale, (
        f"the code or version of {', '.join(stale)} is not what {MANIFEST.name} records. If the method's results "
        f"change, bump its `version`; then record the code with `{REFRESH_COMMAND}` (and commit {MANIFEST.name}).")


def test_an_edited_builtin_method_carries_its_code_into_the_id(fixed_inputs, monkeypatch):
    from kd.methods import get_method, sources

    config = _smoke("logits", fixed_inputs)
    assert "method_source" not in run_inputs(config)
    recorded = sources.read_manifest()
    monkeypatch.setattr(sources, "read_manifest",  # as if logits.py had been edited since the manifest was written
                        lambda: {**recorded, "logits": {**recorded["logits"], "source": "0" * 16}})
    inputs = run_inputs(config)
    assert inputs["method_source"] == sources.source_hash(get_method("logits").__module__)
    assert run_id(config, inputs) != PINNED_IDS["logits"]


def test_a_preset_changed_since_the_pins_carries_its_fields_into_ids(fixed_inputs, monkeypatch):
    """Run ids and zoo keys name presets; a preset whose fields changed must not answer with its old runs."""
    from kd.engine.teachers import zoo_key
    from kd.models import preset_identity

    config = _smoke("none", fixed_inputs)
    teacher_config = _smoke("logits", fixed_inputs)
    key = zoo_key(teacher_config)
    assert "student" not in run_inputs(config)
    pinned = preset_identity._pins()
    monkeypatch.setattr(preset_identity, "_pins", lambda: {})  # as if every preset had changed since
    inputs = run_inputs(config)
    assert inputs["student"] == {"fields_sha256": preset_identity.fields_sha256("asid", config.student.preset)}
    assert run_id(config, inputs) != PINNED_IDS["none"]
    assert zoo_key(teacher_config) != key
    monkeypatch.setattr(preset_identity, "_pins", lambda: pinned)
    assert zoo_key(teacher_config) == key


def test_builtin_network_sources_match_the_manifest():
    from kd.models.sources import MANIFEST, REFRESH_COMMAND, stale_entries

    stale = stale_entries()
    assert not stale, (
        f"the code or version of {', '.join(stale)} is not what {MANIFEST.name} records. If the network's outputs "
        f"change, bump its `version`; then record the code with `{REFRESH_COMMAND}` (and commit {MANIFEST.name}).")


def test_an_edited_network_carries_its_code_into_run_ids_and_zoo_keys(fixed_inputs, tmp_path, monkeypatch):
    from kd import sources
    from kd.engine.teachers import zoo_key

    student, teacher = _smoke("none", fixed_inputs), _smoke("logits", fixed_inputs)
    key = zoo_key(teacher)
    assert "student" not in run_inputs(student) and "network" not in run_inputs(teacher)["teacher"]
    real = sources.source_file
    for module in ("students.asid", "teachers.rcan"):
        (tmp_path / f"{module}.py").write_text(real(module).read_text() + "\nEDITED = True\n")
    monkeypatch.setattr(sources, "source_file", lambda module: tmp_path / f"{module}.py"
                        if module in ("students.asid", "teachers.rcan") else real(module))
    inputs = run_inputs(student)
    assert set(inputs["student"]) == {"network"} and set(inputs["student"]["network"]) == {"source"}
    assert run_id(student, inputs) != PINNED_IDS["none"]
    assert zoo_key(teacher) != key  # a zoo teacher of the edited code is another teacher
    assert "network" in run_inputs(teacher)["teacher"]  # and so is an official checkpoint run through it


def test_a_network_version_above_one_enters_ids_and_a_plugin_network_its_code(fixed_inputs, monkeypatch):
    import dataclasses

    from kd.models import registry
    from kd.models.sources import network_source

    entry = registry.get_entry("asid")
    monkeypatch.setitem(registry._ENTRIES, "asid", dataclasses.replace(entry, version=2))
    assert network_source("asid") == {"version": 2, "source": network_source("asid")["source"]}
    assert run_id(_smoke("none", fixed_inputs), run_inputs(_smoke("none", fixed_inputs))) != PINNED_IDS["none"]
    plugin = dataclasses.replace(entry, arch="plugin_net_for_a_test", builder=_plugin_builder)
    monkeypatch.setitem(registry._ENTRIES, "plugin_net_for_a_test", plugin)
    assert set(network_source("plugin_net_for_a_test")) == {"source"}


def _plugin_builder(scale: int = 4, **fields):
    raise AssertionError("never built")


def test_refresh_records_every_builtin_network(tmp_path, monkeypatch):
    from kd.models import sources

    monkeypatch.setattr(sources, "MANIFEST", tmp_path / "sources.json")
    assert sources.main([]) == 1  # no manifest: every network is stale
    assert sources.main(["--refresh"]) == 0
    assert sources.read_manifest() == {arch: sources.manifest_entry(entry)
                                       for arch, entry in sources.builtin_networks().items()}
    assert sources.main([]) == 0


def test_the_preset_pins_are_frozen():
    """Updating a pin would give a changed preset its old runs' ids again: new presets need no pin."""
    from kd.models.preset_identity import PINS

    pinned = "add108ac8e0b29067008174f6b15dcd408e54bd38c98a161a1ac88dfd061fa47"
    assert hashlib.sha256(PINS.read_bytes()).hexdigest() == pinned, (
        f"{PINS.name} was edited; restore it (git checkout -- {PINS}). A changed or new preset needs no pin.")


def test_the_resized_swinir_miniature_is_not_its_old_self():
    """The SwinIR miniature pair was resized after its first runs; the RCAN pair, whose records are committed, was
    not, and keeps its ids."""
    from kd.models.preset_identity import unpinned_fields

    assert unpinned_fields("swinir", "miniature_teacher") is not None
    assert unpinned_fields("swinir", "miniature_student") is not None
    assert unpinned_fields("rcan", "miniature_teacher") is None
    assert unpinned_fields("rcan", "miniature_student") is None


def test_a_plugin_method_always_carries_its_code():
    from kd.methods import Distiller
    from kd.methods.sources import source_hash, source_identity

    class Plugin(Distiller):
        name = "plugin-for-a-test"
        needs_teacher = False

    assert source_identity(Plugin) == source_hash(__name__) is not None


def test_normalised_code_ignores_comments_docstrings_and_layout(tmp_path, monkeypatch):
    import sys

    from kd.methods.sources import source_hash

    def digest(text: str) -> str:
        (tmp_path / "probe_module.py").write_text(text)
        sys.modules.pop("probe_module", None)
        return source_hash("probe_module")

    monkeypatch.syspath_prepend(str(tmp_path))
    base = digest('"""Doc."""\n\ndef f(x):\n    """Doc."""\n    return x + 1\n')
    assert digest("# a comment\ndef f( x ):\n    return (x + 1)  # why\n") == base
    assert digest('def f(x):\n    return x + 2\n') != base


def test_refresh_records_every_builtin_method(tmp_path, monkeypatch):
    from kd.methods import sources

    monkeypatch.setattr(sources, "MANIFEST", tmp_path / "sources.json")
    assert sources.main(["--refresh"]) == 0
    assert sources.read_manifest() == {name: sources.manifest_entry(cls)
                                       for name, cls in sources.builtin_methods().items()}
    assert sources.main([]) == 0  # up to date
