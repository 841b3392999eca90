"""User values printed by the CLI reach the terminal verbatim: no markup parsing, no hard wrapping."""

import io

from rich.console import Console

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
