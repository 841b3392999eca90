"""`kdbench paper`: published cells in their original layout, our cells beside them, commands for the gaps."""

from __future__ import annotations

import pandas as pd
import pytest

from kd.cli import main
from kd.errors import KdError
from kd.reference_data import published_results, published_results_seed
from kd.report.paper import PAPER_TABLES, Measured, grid, paper_table, to_csv, to_text


def _empty() -> Measured:
    return Measured(pd.DataFrame(columns=["arch", "preset", "scale", "dataset_key", "psnr", "ssim"]),
                    pd.DataFrame(columns=["arch", "preset", "method", "teacher", "scale", "dataset_key", "psnr",
                                          "ssim"]))


@pytest.mark.parametrize("name", sorted(PAPER_TABLES))
def test_every_published_cell_of_the_source_appears(name):
    table = paper_table(name, measured=_empty())
    text = to_text(table, "markdown")
    source = {"bicubic": published_results().query("model == 'bicubic'"),
              "fakd": published_results()[published_results()["source"].str.startswith("FAKD")],
              "dckd": published_results()[published_results()["source"].str.startswith("DCKD")],
              "lightweight": published_results().query("role == 'lightweight peer'"),
              "teachers": published_results()[published_results()["source"].str.match(r"(RCAN|HAN|SwinIR) \(")
                                              & (published_results()["role"] == "teacher")],
              "kdsr": published_results_seed()[published_results_seed()["paper"].str.startswith("KDSR")]}[name]
    assert not source.empty
    for row in source.itertuples():
        cell = f"{row.psnr:.2f}/{row.ssim:.4f}" if pd.notna(row.ssim) else f"{row.psnr:.2f}"
        assert cell in text, (name, row)
    assert len([c for c in table.cells if c.published]) == len(source)


def test_missing_cells_show_a_dash_and_the_command():
    table = paper_table("fakd", measured=_empty())
    text = to_text(table, "markdown")
    assert "– [1]" in text
    assert "kdbench run --profile paper-fakd --student rcan" in text and "--method fakd" in text
    assert "kdbench eval --model rcan --preset paper" in text
    csv = pd.read_csv(__import__("io").StringIO(to_csv(table)))
    assert csv["ours_psnr"].isna().all() and csv["command"].notna().all()


def test_measured_cells_sit_beside_the_published_one_with_the_difference(tmp_path):
    csv = tmp_path / "bicubic.csv"
    pd.DataFrame({"model": ["bicubic"], "dataset": ["BSD100"], "scale": [4], "images": [100],
                  "psnr_y": [25.9634], "ssim_y": [0.66821]}).to_csv(csv, index=False)
    table = paper_table("bicubic", eval_csvs=[csv])
    header, body = grid(table)
    x4 = next(row for row in body if row[0] == "x4")
    published = published_results().query("model == 'bicubic' and scale == 4 and dataset == 'B100'").iloc[0]
    at = header.index("B100 ours")
    assert x4[at] == "25.96/0.6682"
    assert x4[at - 1] == f"{published.psnr:.2f}/{published.ssim:.4f}"
    assert x4[at + 1] == f"{25.9634 - published.psnr:+.2f}"
    assert x4[header.index("Set5 ours")].startswith("–")  # not measured: dash + footnote


def test_cli_unknown_table_and_bad_csv(tmp_path, capsys):
    assert main(["paper", "fakdd", "--runs", str(tmp_path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "fakd" in err and "lightweight" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(KdError, match="lacks column"):
        paper_table("bicubic", eval_csvs=[bad])
    assert main(["paper", "dckd", "--runs", str(tmp_path), "--format", "csv"]) == 0
    assert "DCKD" not in capsys.readouterr().out.splitlines()[0]  # plain CSV header
    assert main(["paper", "dckd", "--runs", str(tmp_path), "--format", "markdown"]) == 0  # a folder with no run
    text = capsys.readouterr().out
    assert "no student run of the paper-dckd profile" in text and "A report needs" not in text  # not the report's error


@pytest.mark.parametrize("name", ["fakd", "dckd"])
def test_fakd_and_dckd_commands_are_runnable_and_the_miniature_stands_in(name):
    text = to_text(paper_table(name, measured=_empty()), "markdown")
    assert "not implemented" not in text and "not registered" not in text  # methods and presets exist now
    assert "--student-preset 10x6" in text
    assert "miniature of this table" in text and "has not been run yet" in text
    assert "kdbench sweep --profile cpu --students rcan --set student.preset=mini_student" in text
    profile = f"paper-{name}"  # the table's own training recipe (kd.profiles)
    commands = [line for line in text.splitlines() if "kdbench run " in line]
    assert commands and all(f"kdbench run --profile {profile} " in line for line in commands)
    if name == "dckd":
        assert "--student-preset e60" in text and "--method mipkd" in text
        assert "kdbench runs one method per run" in text  # the DCKD* (+DUKD) row


def test_student_cells_come_only_from_runs_of_the_table_s_own_recipe():
    def measured(profile):
        students = pd.DataFrame([{"arch": "rcan", "preset": "10x6", "method": "fakd", "teacher": "rcan", "scale": 4,
                                  "dataset_key": "Set5", "psnr": 32.5, "ssim": 0.899, "profile": profile}])
        return Measured(_empty().models, students)

    def set5_x4(table):
        return next(c for c in table.cells if c.row == ("Set5", "x4") and c.column == "SN with FAKD")

    cpu = paper_table("fakd", measured=measured("cpu"))
    assert set5_x4(cpu).ours is None and cpu.miniature is not None
    assert any("miniature of this table" in note for note in cpu.notes)
    asid_recipe = paper_table("fakd", measured=measured("paper"))  # the lightweight table's recipe, not FAKD's
    assert set5_x4(asid_recipe).ours is None and asid_recipe.miniature is not None
    paper = paper_table("fakd", measured=measured("paper-fakd"))
    assert set5_x4(paper).ours.psnr == 32.5 and paper.miniature is None
    assert not any("miniature" in note for note in paper.notes)
