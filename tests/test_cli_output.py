"""Every CLI table at 80 columns and piped: plain text, nothing cut, no number split across lines."""

from __future__ import annotations

import io
import re

import pandas as pd
import pytest
from rich.console import Console

from kd.cli import main
from kd.output import TextTable, column_groups, print_table


def _table() -> TextTable:
    table = TextTable(title="rcan (paper) [x4]", caption="PSNR/SSIM on Y (BT.601), crop = scale, mean of per-image "
                      "values; published = RCAN Table 3", key=2)
    for name in ("Dataset", "Scale", "N", "PSNR/SSIM", "ref", "Δ", "published", "LPIPS"):
        table.add_column(name, justify="left" if name == "Dataset" else "right")
    table.add_row("[bold]Set5[/]", "x4", "5", "28.431/0.8113", "28.4314/0.81127", "+0.000", "28.42/0.8104", "0.1234")
    table.add_row("Urban100", "x4", "100", "26.123/0.7801", "-", "-", "26.82/0.8087", "0.2345")
    return table


def _render(table: TextTable, width: int, terminal: bool) -> str:
    buffer = io.StringIO()
    print_table(table, Console(file=buffer, width=width, force_terminal=terminal, color_system=None))
    return buffer.getvalue()


@pytest.mark.parametrize("width", [160, 80, 50, 30])
@pytest.mark.parametrize("terminal", [True, False])
def test_every_cell_stays_whole_at_any_width(width, terminal, readable):
    out = _render(_table(), width, terminal)
    cells = [cell.plain for row in _table().rows for cell in row[0]]
    readable(out, cells, width=width)
    assert "[bold]Set5[/]" in out  # a user value is text, not markup


def test_wide_table_folds_into_groups_that_repeat_the_key_columns():
    groups = column_groups(_table(), 50)
    assert groups is not None and len(groups) > 1
    assert all(group[:2] == [0, 1] for group in groups)
    assert sorted({i for group in groups for i in group}) == list(range(8))


def test_too_narrow_for_any_group_prints_one_block_per_row():
    out = _render(_table(), 30, terminal=False)
    assert column_groups(_table(), 30) is None
    assert re.search(r"^  PSNR/SSIM +28\.431/0\.8113$", out, re.M)


def test_piped_output_is_ascii_ruled_and_uncoloured():
    out = _render(_table(), 160, terminal=False)
    assert "---" in out and "─" not in out
    assert len([line for line in out.splitlines() if "28.431/0.8113" in line]) == 1  # one line per row


def test_wrap_columns_break_only_between_words(readable):
    table = TextTable()
    table.add_column("name")
    table.add_column("description", wrap=True)
    text = "Attention-sharing information distillation network with a description longer than eighty columns"
    table.add_row("asid", text)
    out = _render(table, 40, terminal=False)
    words = [w for line in out.splitlines() for w in line.split()]
    assert set(text.split()) <= set(words)
    readable(out, [], width=40)


# ---- the commands, at COLUMNS=80 (conftest) with stdout captured --------------------------------------------


def test_eval_table(tmp_path, capsys, readable):
    csv = tmp_path / "eval.csv"
    assert main(["eval", "--model", "bicubic", "--data", "default", "--scale", "2,3,4", "--out", str(csv),
                 "--no-progress", "--no-lpips"]) == 0
    out = capsys.readouterr().out
    expected = [f"{row.psnr_y:.2f}/{row.ssim_y:.4f}" for row in pd.read_csv(csv).itertuples()]
    readable(out, [*expected, "x2", "x3", "x4"])
    assert out.startswith("bicubic (paper)")  # nothing (such as a progress bar's blank line) before the table


def test_sweep_dry_run_table(tmp_path, capsys, readable):
    assert main(["sweep", "--teachers", "rcan,han,swinir", "--methods", "none,logits,fitnet,attention", "--seeds",
                 "0,1", "--profile", "cpu", "--out-dir", str(tmp_path / "runs"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    table = out.split("\nteacher ")[0]  # the message lines after the table are one line each, as in a log
    readable(table, ["attention", "fitnet", "logits", "swinir", "asid-attention-swinir-x4-cpu-s1"])
    assert "asid-attention-swinir-x4-cpu-s1-" in out  # the run id (with its hash) is on one line


def test_data_list_table(tmp_path, capsys, readable):
    root = tmp_path / "a-data-root-with-a-rather-long-name" / "[brackets]"
    (root / "Set5" / "HR").mkdir(parents=True)
    assert main(["data", "list", "--data-root", str(root)]) == 0
    out = capsys.readouterr().out
    readable(out, [str(root / "Set5"), str(root / "DIV2K"), "Set5", "DIV2K_train"])


@pytest.mark.parametrize("name", ["bicubic", "fakd", "lightweight"])
def test_paper_table_wraps_to_the_width(name, capsys, readable):
    from kd.reference_data import published_results

    assert main(["paper", name, "--no-compute", "--runs", "no-such-folder"]) == 0
    out = capsys.readouterr().out
    pub = published_results()
    rows = pub[pub["model"] == "bicubic"] if name == "bicubic" else pub
    cells = {f"{r.psnr:.2f} → " for r in rows.itertuples()}  # published, then ours beside it in the same cell
    printed = {c for c in cells if c in out}
    assert printed  # the table's published cells (the source has more tables than this one)
    readable(out, sorted(printed))  # the table, its footnoted commands and the notes all fit the width


@pytest.mark.parametrize("argv", [["list", "models"], ["list", "methods"], ["list", "models", "--taps"]])
def test_list_tables(argv, capsys, readable):
    from kd.methods import list_methods
    from kd.models import list_entries

    assert main(argv) == 0
    out = capsys.readouterr().out
    names = [name for name, _ in list_methods()] if argv[1] == "methods" else [e.arch for e in list_entries()]
    readable(out, names)


def test_teacher_list(tmp_path, monkeypatch, capsys, readable):
    import json

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    assert main(["teacher", "list"]) == 0
    readable(capsys.readouterr().out, ["no cached teachers"])
    key = "swinir-mini-x4-291-train-seed0-0123456789abcdef"
    scores = {name: {"psnr_y": 30 + i / 7, "ssim_y": 0.8} for i, name in enumerate(["Set5", "Set14", "B100", "291-val"])}
    (tmp_path / "cache" / "teachers" / key).mkdir(parents=True)
    (tmp_path / "cache" / "teachers" / key / "teacher.json").write_text(
        json.dumps({"key": key, "steps": 4000, "train_seconds": 12345.6, "eval": scores}))
    assert main(["teacher", "list"]) == 0
    out = capsys.readouterr().out
    readable(out, [key, "4000", "12346", *scores, *(f"{s['psnr_y']:.2f}" for s in scores.values())])


def test_run_prints_plain_progress_and_its_results_close_train_log(tmp_path, monkeypatch, capsys, readable):
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    assert main(["run", "--profile", "smoke", "--method", "none", "--set", "train.steps=4", "--set",
                 "train.log_every=2", "--set", "eval.val_dataset=null", "--out-dir", str(tmp_path / "runs")]) == 0
    captured = capsys.readouterr()
    summary = next((tmp_path / "runs").glob("*/summary.json"))
    psnr = __import__("json").loads(summary.read_text())["datasets"]["default"]["psnr_y"]
    readable(captured.out, ["dataset", "PSNR-Y", f"{psnr:.3f}"])
    steps = re.findall(r"^asid/none step (\d)/4 \|.*\| ETA \d:\d\d:\d\d$", captured.err, re.M)
    assert steps == ["2", "4"]  # stderr is not a terminal: plain lines instead of a bar
    log = (summary.parent / "train.log").read_text()
    assert log.rstrip().endswith(captured.out.rstrip()) and "asid/none step 4/4" in log
