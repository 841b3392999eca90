"""Method discovery: built-ins found without a hand-kept list, third-party methods through entry points.

The example package under examples/ is pip-installed (no dependencies, no build isolation: works offline) into a
temporary folder that is put on sys.path; its `kdbench.methods` entry point must then make its method usable.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kd.methods as methods
from kd.errors import KdError
from kd.methods import create_method, get_method, list_methods, loss_weights
from kd.models import create

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "kdbench-plugin-example"


@pytest.fixture
def clean_registry(monkeypatch):
    """The registry as it is now, restored afterwards (a plugin registered in one test must not leak)."""
    monkeypatch.setattr(methods, "_METHODS", dict(methods._METHODS))
    yield


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("plugin_site")
    source = tmp_path_factory.mktemp("plugin_source") / EXAMPLE.name
    shutil.copytree(EXAMPLE, source)  # the build writes build/ and *.egg-info beside the sources: not in the repo
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    if result.returncode != 0:
        pytest.skip(f"pip could not install the example plugin offline: {result.stderr.strip()[-300:]}")
    return target


def test_every_builtin_module_is_discovered():
    names = {name for name, _ in list_methods()}
    modules = {m.name for m in pkgutil.iter_modules(methods.__path__)}
    defined = set()
    for module in modules:
        mod = importlib.import_module(f"kd.methods.{module}")
        defined |= {obj.name for obj in vars(mod).values()
                    if isinstance(obj, type) and issubclass(obj, methods.Distiller) and obj.name
                    and obj.__module__ == mod.__name__}
    assert defined and defined <= names
    assert {"none", "logits", "fitnet", "lsfd", "facd", "attention", "krnet", "fakd", "dukd", "dckd", "mipkd"} <= names


def test_example_plugin_is_found_and_trains(installed_example, monkeypatch, clean_registry):
    monkeypatch.syspath_prepend(str(installed_example))
    importlib.invalidate_caches()
    assert "mse_logits" in methods.plugin_entry_points()
    assert "mse_logits" in dict(list_methods())
    cls = get_method("mse_logits")
    assert cls.__module__ == "kdbench_example_method.mse_logits"
    assert loss_weights("mse_logits") == {"rec": 1.0, "kd_mse": 10.0}

    torch.manual_seed(0)
    student, teacher = create("asid", 2, "tiny"), create("rcan", 2, "tiny")
    method = create_method("mse_logits", student, teacher)
    lr = torch.rand(2, 3, 12, 12)
    hr = torch.rand(2, 3, 24, 24)
    with torch.no_grad():
        teacher_out = teacher(lr)
    terms = method.losses(methods.StepInputs(lr, hr, student(lr), teacher_out))
    assert set(terms) == {"rec", "kd_mse"}
    terms["kd_mse"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def _fake_entry_point(monkeypatch, name: str, value: str) -> None:
    ep = importlib.metadata.EntryPoint(name=name, value=value, group=methods.PLUGIN_GROUP)
    monkeypatch.setattr(methods, "plugin_entry_points", lambda: {name: ep})


def test_broken_plugin_is_a_clear_error_naming_it(monkeypatch, clean_registry):
    _fake_entry_point(monkeypatch, "broken", "no_such_module_kdbench_test:Method")
    with pytest.raises(KdError, match=r"method plugin 'broken' \(no_such_module_kdbench_test:Method\) failed to load"):
        get_method("broken")
    listed = dict(list_methods())
    assert listed["broken"].startswith("(not loaded)") and "logits" in listed  # the others still work


def test_plugin_name_must_match_its_method(monkeypatch, clean_registry):
    _fake_entry_point(monkeypatch, "renamed", "kd.methods.logits:OutputDistillation")
    with pytest.raises(KdError, match="entry point must carry the same name"):
        get_method("renamed")


def test_unknown_method_still_suggests():
    with pytest.raises(KdError, match="logits"):
        get_method("logit")


def test_plugin_method_runs_from_the_cli(installed_example, monkeypatch, clean_registry, tmp_path):
    from kd.cli import main

    monkeypatch.syspath_prepend(str(installed_example))
    importlib.invalidate_caches()
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    assert main(["run", "--profile", "smoke", "--method", "mse_logits", "--threads", "1", "--no-progress",
                 "--out-dir", str(tmp_path / "runs")]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert "kd_mse" in (run_dir / "metrics.jsonl").read_text()


def test_cli_lists_a_broken_plugin_without_a_traceback(monkeypatch, clean_registry, capsys):
    from kd.cli import main

    _fake_entry_point(monkeypatch, "broken", "no_such_module_kdbench_test:Method")
    assert main(["list", "methods"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "broken" in out and "failed to load" in out and "fitnet" in out
