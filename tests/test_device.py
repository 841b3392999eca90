"""One `--device` for run, teacher train, sweep and eval, the same as the config key `device=`, checked in one place."""

from __future__ import annotations

import argparse

import pytest
import torch

from kd.cli import main
from kd.cli.run_cmd import add_config_arguments, build_config
from kd.devices import resolve_device
from kd.errors import KdError


def _config(argv: list[str]):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return build_config(parser.parse_args(argv), {})


def test_flag_and_config_key_set_the_same_value():
    assert _config(["--device", "cpu"]).device == "cpu"
    assert _config(["--set", "device=cuda:1"]).device == "cuda:1"
    assert _config(["--device", "cpu", "--set", "device=cuda"]).device == "cuda"  # --set is the last layer
    assert _config([]).device == "auto"


@pytest.mark.parametrize("name, message", [
    ("cuda", "CUDA is not available on this machine"),
    ("cuda:1", "CUDA is not available on this machine"),
    ("tpu", "expected auto, cpu, cuda or cuda:N"),
    ("cuda1", "expected auto, cpu, cuda or cuda:N"),
])
def test_unusable_device_is_a_user_error(name, message, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(KdError, match=message):
        resolve_device(name)
    assert resolve_device("auto") == "cpu" and resolve_device(" CPU ") == "cpu"


def test_cuda_index_beyond_the_visible_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(KdError, match="only 2 CUDA device"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("argv", [
    ["eval", "--model", "bicubic", "--data", "default", "--no-progress", "--device", "cuda"],
    ["run", "--profile", "smoke", "--method", "none", "--device", "cuda"],
    ["teacher", "train", "--teacher", "rcan", "--profile", "smoke", "--device", "cuda"],
    ["sweep", "--profile", "smoke", "--device", "cuda"],
])
def test_every_command_gives_one_line_without_a_gpu(argv, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --device cuda (device=): CUDA is not available") and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing written before the check
