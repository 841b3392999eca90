"""`kdbench paper`: published cells in their original layout, our cells beside them, commands for the gaps."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from kd.cli import main
from kd.errors import KdError
from kd.reference_data import published_results, published_results_lightweight, published_results_seed
from kd.report.paper import PAPER_DATASETS, PAPER_TABLES, Measured, grid, paper_table, to_csv, to_text


def _empty() -> Measured:
    return Measured(pd.DataFrame(columns=["arch", "preset", "scale", "dataset_key", "psnr", "ssim"]),
                    pd.DataFrame(columns=["arch", "preset", "method", "teacher", "scale", "dataset_key", "psnr",
                                          "ssim"]))


@pytest.mark.parametrize("name", sorted(PAPER_TABLES))
def test_every_published_cell_of_the_source_appears(name):
    table = paper_table(name, measured=_empty())
    text = to_text(table, "markdown")
    source = {"bicubic": published_results().query("model == 'bicubic'"),
              "fakd": published_results(with_seed=True).query("source.str.startswith('FAKD')"),
              "dckd": published_results()[published_results()["source"].str.startswith("DCKD")],
              "lightweight": pd.concat([published_results().query("role == 'lightweight peer'"),
                                        published_results_seed().query("method in ['SwinFIR-T', 'U-HDN+IKM']"),
                                        published_results_lightweight().dropna(subset="psnr")]),
              "teachers": published_results()[published_results()["source"].str.match(r"(RCAN|HAN|SwinIR) \(")
                                              & (published_results()["role"] == "teacher")],
              "kdsr": published_results_seed()[published_results_seed()["paper"].str.startswith("KDSR")]}[name]
    assert not source.empty
    if name == "lightweight":  # the table's five datasets (NCNet's one published number is on DIV2K-val)
        source = source[source["dataset_key"].isin(PAPER_DATASETS)]
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
    assert "kdbench sweep --profile miniature --students rcan --set student.preset=miniature_student" in text
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


# ------------------------------------------------------------------------------------------------ FAKD's SAN columns

SAN_COLUMNS = {"teacher (TN)": "TN (SAN 20x10)", "student w/o KD (SN w/o FAKD)": "SN (6x10) without FAKD",
               "FAKD": "SN (6x10) with FAKD"}


def _cell(table, dataset: str, scale: int, column: str):
    return next(c for c in table.cells if c.row == (dataset, f"x{scale}") and c.column == column)


def test_fakd_has_the_san_columns_of_table_3_with_the_published_values():
    table = paper_table("fakd", measured=_empty())
    seed = published_results_seed().query("paper.str.startswith('FAKD')")
    assert len(seed) == 48
    for row in seed.itertuples():
        cell = _cell(table, row.dataset_key, row.scale, SAN_COLUMNS[row.method])
        assert (cell.published.psnr, cell.published.ssim) == (row.psnr, row.ssim) and cell.ours is None
        assert cell.evidence == row.source
    assert [title for title, _ in table.parts()] == [table.blocks[0][0], table.blocks[1][0]]
    assert table.blocks[1][1] == list(SAN_COLUMNS.values())
    text = to_text(table, "markdown")
    assert text.index("### FAKD (ICIP 2020) Table 3, RCAN") < text.index("### FAKD (ICIP 2020) Table 3, SAN")
    san_block = text.split("### FAKD (ICIP 2020) Table 3, SAN")[1]
    assert "| Urban100 | x8 | 22.70/0.6314 |" in san_block and "TN (RCAN" not in san_block
    # FAKD's own SAN copy (arch san_fakd) made the table; the commands name it and the student's preset
    assert "kdbench eval --model san_fakd --preset paper" in text
    assert "kdbench run --profile paper-fakd --student san_fakd --student-preset 6x10 --teacher san_fakd" in text


def test_a_san_teacher_eval_csv_fills_the_san_teacher_cell(tmp_path):
    def eval_csv(arch: str) -> Path:
        csv = tmp_path / f"{arch}_x4.csv"
        pd.DataFrame({"model": [arch], "dataset": ["BSD100"], "scale": [4], "images": [100], "psnr_y": [27.70],
                      "ssim_y": [0.7421]}).to_csv(csv, index=False)
        (tmp_path / f"{csv.name}.meta.json").write_text(json.dumps({"model": {"arch": arch, "preset": "paper"}}))
        return csv

    table = paper_table("fakd", eval_csvs=[eval_csv("san_fakd")], miniature_dirs=[])
    teacher = _cell(table, "B100", 4, "TN (SAN 20x10)")
    assert (teacher.ours.psnr, teacher.ours.ssim) == (27.70, 0.7421) and teacher.command is None
    assert teacher.delta == pytest.approx(27.70 - 27.78)
    assert _cell(table, "B100", 4, "TN (RCAN 10x20)").ours is None
    assert _cell(table, "Set5", 4, "TN (SAN 20x10)").ours is None  # other datasets keep their command
    # the official SAN is another network (non-local n_feats // 8): its scores are not FAKD's teacher's
    official = paper_table("fakd", eval_csvs=[eval_csv("san")], miniature_dirs=[])
    assert _cell(official, "B100", 4, "TN (SAN 20x10)").ours is None


def test_a_paper_fakd_san_student_run_fills_the_san_student_cell(tmp_path):
    def write_run(profile: str) -> None:
        summary = {"run_id": f"san_fakd-fakd-{profile}-s0", "student": "san_fakd", "student_preset": "6x10",
                   "method": "fakd", "scale": 4, "seed": 0, "profile": profile,
                   "teacher": {"arch": "san_fakd", "preset": "paper", "eval": {"Set5": {"psnr_y": 32.60,
                                                                                     "ssim_y": 0.9001}}},
                   "datasets": {"Set5": {"psnr_y": 32.41, "ssim_y": 0.8977}}}
        folder = tmp_path / "runs" / summary["run_id"]
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps(summary))

    write_run("cpu")  # another recipe: not a cell of the published table
    table = paper_table("fakd", runs_dir=tmp_path / "runs", miniature_dirs=[])
    assert _cell(table, "Set5", 4, "SN (6x10) with FAKD").ours is None and table.miniature is not None
    write_run("paper-fakd")
    table = paper_table("fakd", runs_dir=tmp_path / "runs", miniature_dirs=[])
    student = _cell(table, "Set5", 4, "SN (6x10) with FAKD")
    assert (student.ours.psnr, student.ours.ssim) == (32.41, 0.8977) and student.command is None
    assert _cell(table, "Set5", 4, "TN (SAN 20x10)").ours.psnr == 32.60  # the run's teacher, evaluated
    assert _cell(table, "Set5", 4, "SN (6x10) without FAKD").ours is None
    assert _cell(table, "Set5", 4, "SN with FAKD").ours is None  # the RCAN student is another cell
    assert table.miniature is None


def test_without_student_runs_the_miniature_has_the_san_pair():
    table = paper_table("fakd", measured=_empty())
    mini = table.miniature
    assert [pair.name for pair in mini.spec.pairs] == ["RCAN", "SAN"]
    assert mini.published[("SAN", "fakd", "Set5")] == pytest.approx(32.472 - 32.360)  # x4, FAKD Table 3
    text = to_text(table, "markdown")
    assert "| SAN | FAKD | +0.11 | – |" in text
    assert ("kdbench sweep --profile miniature --students san_fakd --set student.preset=miniature_student --teachers "
            "san_fakd --methods none,fakd --seeds 0,1,2,3,4") in text


def test_paper_fakd_prints_the_san_block_as_its_own_table_in_80_columns(tmp_path, monkeypatch, capsys, readable):
    monkeypatch.setenv("COLUMNS", "80")
    (tmp_path / "mini").mkdir()  # no miniature runs: the published table's own layout is what this test reads
    assert main(["paper", "fakd", "--runs", str(tmp_path / "none"), "--miniature-runs", str(tmp_path / "mini")]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    readable(out, ["Vincent-Hoo/Knowledge-Distillation-for-Super-resolution", "38.31 → –[",
                   "SN (6x10) without FAKD", "SN (6x10) with FAKD"])
    rcan, san = out.index("Table 3, RCAN"), out.index("Table 3, SAN")
    assert rcan < out.index("TN (RCAN 10x20)") < san < out.index("TN (SAN 20x10)")
    header = next(line for line in out.splitlines() if "TN (SAN 20x10)" in line)
    assert "SN with FAKD" not in header and "Evidence" not in header  # the SAN columns together, RCAN's apart
    x8 = [line for line in out.splitlines() if line.startswith("Set5       x8")]
    assert x8 and out.index(x8[0]) > san  # x8 is a SAN row only


# ---- lightweight: ASID beside the lightweight networks ------------------------------------------------------------

SEED_ROWS = {"A2N": "A2N", "SwinFIR-T": "SwinFIR-T", "U-HDN+IKM": "U-HDN+IKM", "NCNet": "NCNet",
             "HSRNet": "HSRNet", "HPINet-S / M / L": ("HPINet-S", "HPINet-M", "HPINet-L")}


def _section_11(shared_dir) -> dict[str, int]:
    """SEED_NETWORKS.md section 11 (parameters at x4 of the paper presets, by the official code), by table row."""
    text = (shared_dir / "reference" / "SEED_NETWORKS.md").read_text(encoding="utf-8")
    counts = {}
    for line in text.split("## 11.")[1].splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] in SEED_ROWS:
            names = SEED_ROWS[cells[0]]
            numbers = [int(n.replace(",", "")) for n in re.findall(r"\d{1,3}(?:,\d{3})+", cells[2])]
            counts.update(zip([names] if isinstance(names, str) else names, numbers))
    assert len(counts) == 8, counts
    return counts


def _eval_csv(folder, arch: str, preset: str, psnr: float) -> str:
    """A `kdbench eval --out` CSV of `arch` at x4 on the five paper datasets, with its .meta.json."""
    path = folder / f"{arch}.csv"
    pd.DataFrame({"model": arch, "dataset": PAPER_DATASETS, "scale": 4, "images": 5, "psnr_y": psnr,
                  "ssim_y": 0.8}).to_csv(path, index=False)
    path.with_name(path.name + ".meta.json").write_text(json.dumps({"model": {"arch": arch, "preset": preset}}))
    return str(path)


def test_lightweight_lists_every_seed_network_with_its_parameters_in_80_columns(tmp_path, capsys, shared_dir):
    assert main(["paper", "lightweight", "--runs", str(tmp_path / "none"),
                 "--eval-csv", _eval_csv(tmp_path, "a2n", "paper", 32.1234)]) == 0
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= 80
    cost = out.split("\n\n")[0]  # the cost table comes first: one row per network at x4
    assert re.search(r"^x4 +ASID \(student\) +313,104 ", cost, re.M)
    for name, params in _section_11(shared_dir).items():
        assert re.search(rf"^x4 +{re.escape(name)} +{params:,} +- +\d+\.\dG$", cost, re.M), (name, params)
    a2n = published_results_lightweight().query("method == 'A2N' and dataset == 'Urban100'").iloc[0]
    assert f"{a2n.psnr:.2f} → 32.12 ({32.1234 - a2n.psnr:+.2f})" in out  # the eval CSV's cell beside the CSV row's
    assert f"{a2n.ssim:.4f} → 0.8000" in out  # the SSIM block


def test_lightweight_cells_join_the_reference_data_and_our_evaluations(tmp_path):
    table = paper_table("lightweight", eval_csvs=[_eval_csv(tmp_path, "hpinet", "paper", 32.5)])
    cells = {(cell.row, cell.column): cell for cell in table.cells}
    for row in published_results_lightweight().itertuples():
        cell = cells[("x4", row.method), row.dataset_key]
        if pd.isna(row.psnr):  # not found: a dash, and the evidence says so
            assert cell.published is None and cell.evidence.startswith("not found")
        else:
            assert (cell.published.psnr, cell.published.ssim) == (row.psnr, None if pd.isna(row.ssim) else row.ssim)
            assert cell.evidence == row.source and re.search("UNVERIFIED|figure", row.source)
    # HPINet's `paper` preset is HPINet-M: its evaluation fills M's cells, not S's or L's
    hpinet_m = published_results_lightweight().query("method == 'HPINet-M' and dataset == 'Set5'").iloc[0]
    assert cells[("x4", "HPINet-M"), "Set5"].ours.psnr == 32.5
    assert cells[("x4", "HPINet-M"), "Set5"].delta == pytest.approx(32.5 - hpinet_m.psnr)
    assert cells[("x4", "HPINet-S"), "Set5"].ours is None and cells[("x4", "HPINet-L"), "Set5"].ours is None
    assert "kdbench eval --model hpinet --preset s " in cells[("x4", "HPINet-S"), "Set5"].command
    text = to_csv(table)
    assert "Params (ours)" in text.splitlines()[0] and '"895,659"' in text  # the cost columns in the CSV too


def test_lightweight_takes_no_kd_runs_of_its_own_recipe_only():
    def asid_x4_set5(profile):
        students = pd.DataFrame([{"arch": "asid", "preset": "paper", "method": "none", "teacher": None, "scale": 4,
                                  "dataset_key": "Set5", "psnr": 32.0, "ssim": 0.89, "profile": profile}])
        table = paper_table("lightweight", measured=Measured(_empty().models, students))
        return next(c for c in table.cells if c.row == ("x4", "ASID (student)") and c.column == "Set5").ours

    assert asid_x4_set5("cpu") is None  # a cpu-budget ASID is no match for the published networks
    assert asid_x4_set5("paper").psnr == 32.0
