"""User values printed by the CLI reach the terminal verbatim: no markup parsing, no hard wrapping."""

import argparse
import io
import warnings

import pytest
from rich.console import Console

import kd.cli
from kd.cli import main
from kd.messages import say


def _narrow_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=30, force_terminal=False), buffer


def test_say_keeps_brackets_and_does_not_wrap_a_long_path():
    console, buffer = _narrow_console()
    path = "/tmp/runs/[bold]/a-very-long-directory-name-that-exceeds-the-width/broken.png"
    say(console, f"cannot read image {path}; choose one of [rcan, han]", "error")
    assert buffer.getvalue() == f"error: cannot read image {path}; choose one of [rcan, han]\n"


def test_say_without_label_prints_the_text_alone():
    console, buffer = _narrow_console()
    say(console, "wrote [1] results")
    assert buffer.getvalue() == "wrote [1] results\n"


def test_cli_error_names_a_file_whose_path_has_brackets(tmp_path, capsys):
    root = tmp_path / "[data]" / ("deep-" * 20)
    hr = root / "Set5" / "HR"
    hr.mkdir(parents=True)
    (hr / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    code = main(["eval", "--model", "bicubic", "--data", "Set5", "--data-root", str(root), "--no-lpips",
                 "--no-progress", "--out", str(tmp_path / "r.csv")])
    err = capsys.readouterr().err
    assert code == 2
    assert str(hr / "broken.png") in err
    assert not (tmp_path / "r.csv").exists()


def _warning_command(monkeypatch) -> None:
    def handler(args: argparse.Namespace) -> int:
        warnings.warn("51 image(s) smaller than the HR patch 192px skipped: T91/t1.bmp", UserWarning, stacklevel=1)
        return 0

    def parser() -> argparse.ArgumentParser:
        built = argparse.ArgumentParser(prog="kdbench")
        built.set_defaults(handler=handler)
        return built

    monkeypatch.setattr(kd.cli, "build_parser", parser)


def test_cli_shows_a_warning_as_one_line_without_source(monkeypatch, capsys):
    _warning_command(monkeypatch)
    assert main([]) == 0
    err = capsys.readouterr().err
    assert err == "warning: 51 image(s) smaller than the HR patch 192px skipped: T91/t1.bmp\n"


def test_cli_debug_leaves_the_warning_to_python(monkeypatch, capsys):
    _warning_command(monkeypatch)
    with pytest.warns(UserWarning, match="51 image"):
        assert main(["--debug"]) == 0
    assert capsys.readouterr().err == ""
