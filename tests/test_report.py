"""`kdbench report` over a real smoke grid (tiny networks, seconds per run) and the seed statistics behind it."""

from __future__ import annotations

import json
import math
import shutil

import pandas as pd
import pytest

from kd.cli import main
from kd.config import parse_override, resolve
from kd.engine import execute_run
from kd.errors import KdError
from kd.profiles import profile_layer
from kd.report import build_report
from kd.report.plots import place_labels, plt
from kd.report.stats import gap_recovered, mean_std, paired_delta
from kd.report.tables import COLUMNS, finding, reconstructed_methods

T_975_DF2 = 4.303  # Student t table, two-sided 95%, 2 degrees of freedom


def test_paired_interval_matches_a_hand_calculation():
    method = {0: 30.1, 1: 30.5, 2: 30.2}
    base = {0: 30.0, 1: 30.2, 2: 30.0, 7: 99.0}  # seed 7 has no partner and is ignored
    delta = paired_delta(method, base)
    # differences 0.1, 0.3, 0.2: mean 0.2, sd 0.1, half-width t * 0.1 / sqrt(3)
    half = T_975_DF2 * 0.1 / math.sqrt(3)
    assert delta.n == 3 and delta.mean == pytest.approx(0.2) and delta.std == pytest.approx(0.1)
    assert delta.low == pytest.approx(0.2 - half, abs=1e-3) and delta.high == pytest.approx(0.2 + half, abs=1e-3)
    single = paired_delta({0: 30.3}, {0: 30.0})
    assert single.n == 1 and single.mean == pytest.approx(0.3) and not single.has_interval
    assert mean_std([1.0, 3.0]) == pytest.approx((2.0, math.sqrt(2.0)))
    assert gap_recovered(30.25, 30.0, 31.0) == pytest.approx(0.25)
    assert math.isnan(gap_recovered(30.25, 30.0, 29.0)) and math.isnan(gap_recovered(30.25, 30.0, None))


def _table(*rows: dict) -> pd.DataFrame:
    base = {"profile": "cpu", "student": "asid", "scale": 4, "teacher": "rcan", "dataset": "Set5", "seeds": 3,
            "psnr_mean": 30.0}
    return pd.DataFrame([{**dict.fromkeys(COLUMNS, math.nan), **base, **row} for row in rows], columns=COLUMNS)


def test_reports_name_each_reconstructed_method_from_its_class():
    table = pd.DataFrame({"method": ["none", "(teacher)", "logits", "fakd", "mipkd", "dckd", "uninstalled_plugin"]})
    assert reconstructed_methods(table) == ["DCKD (a seeded random encoder in place of its pretrained VQGAN)",
                                            "MiPKD (from the paper's description; no public code)"]


def test_finding_states_separation_only_beyond_the_interval():
    none = {"method": "none"}
    inside = {"method": "logits", "delta": 0.0, "delta_low": -0.003, "delta_high": 0.004, "delta_n": 3}
    one_seed = {"method": "fitnet", "delta": 0.2, "delta_n": 1}
    assert finding(_table(none, inside)) == ("No method separates from no-KD at 3 seeds (every paired 95% interval "
                                             "of Δ PSNR includes 0).")
    assert finding(_table(none, one_seed)).startswith("No method is ranked yet: 1 paired seed (the protocol needs 3")
    above = {"method": "facd", "delta": 0.12, "delta_low": 0.05, "delta_high": 0.19, "delta_n": 3, "psnr_mean": 30.1}
    below = {"method": "lsfd", "delta": -0.2, "delta_low": -0.3, "delta_high": -0.1, "delta_n": 3}
    assert finding(_table(none, inside, above)) == (
        "facd beats the no-KD student beyond the paired 95% interval on Set5; the clearest is facd from rcan on Set5 "
        "x4: +0.12 dB [+0.05, +0.19] at 3 seeds.")
    above_set14 = {**above, "dataset": "Set14"}
    logits_set5 = {**above, "method": "logits", "delta": 0.08, "delta_low": 0.01}
    assert finding(_table(none, above, above_set14, logits_set5)) == (
        "facd beats the no-KD student beyond the paired 95% interval on Set14, Set5; logits on Set5 only; the "
        "clearest is facd from rcan on Set5 x4: +0.12 dB [+0.05, +0.19] at 3 seeds.")
    assert finding(_table(none, inside, above, below)) == (
        "facd beats the no-KD student beyond the paired 95% interval on Set5; the clearest is facd from rcan on Set5 "
        "x4: +0.12 dB [+0.05, +0.19] at 3 seeds; lsfd from rcan is worse than no-KD beyond the interval on Set5.")
    worst = {**below, "method": "fitnet", "teacher": "swinir", "dataset": "Set14", "delta": -0.3}
    assert finding(_table(none, inside, below, worst)) == (
        "No method beats the no-KD student beyond the paired 95% interval at 3 seeds; fitnet from swinir and lsfd "
        "from rcan are worse than no-KD beyond the interval on at least one of Set14, Set5.")
    set14 = {**below, "dataset": "Set14"}  # lsfd from rcan below on both sets: named without "at least one of"
    assert finding(_table(none, inside, below, set14)).endswith(
        "lsfd from rcan is worse than no-KD beyond the interval on Set14, Set5.")


def test_two_seeds_mark_nothing_best_even_when_their_interval_excludes_zero():
    from kd.report.tables import separates

    def cells(seeds: int) -> pd.DataFrame:
        return _table({"method": "none", "seeds": seeds},
                      {"method": "logits", "seeds": seeds, "delta": 0.1, "delta_low": 0.07, "delta_high": 0.13,
                       "delta_n": seeds, "psnr_mean": 30.1})

    assert not separates(cells(2)).any()
    assert finding(cells(2)) == ("No method is ranked yet: 2 paired seeds (the protocol needs 3 or more before "
                                 "calling a method better or worse than no-KD).")
    assert separates(cells(3)).tolist() == [False, True]
    assert finding(cells(3)).startswith("logits beats the no-KD student beyond the paired 95% interval")
    two = paired_delta({0: 30.1, 1: 30.2}, {0: 30.0, 1: 30.1})
    assert two.has_interval and not two.can_rank and not two.above_zero


def test_two_runs_of_one_seed_are_not_silently_merged():
    from pathlib import Path

    from kd.report.runs import Run, RunSet
    from kd.report.tables import comparison_table

    def run(run_id: str, method: str, datasets: dict, steps: int = 1000) -> Run:
        summary = {"run_id": run_id, "student": "asid", "student_preset": None, "method": method, "scale": 4,
                   "seed": 0, "profile": "cpu", "datasets": datasets, "steps": steps,
                   "teacher": {} if method == "none" else {"arch": "rcan", "preset": "mini"}}
        return Run(Path(run_id), summary)

    for full, short in (("b-fitnet", "c-fitnet"), ("d-fitnet", "c-fitnet")):  # either order of the run ids
        runs = [run("a-none", "none", {"Set5": {"psnr_y": 30.0}}), run(full, "fitnet", {"Set5": {"psnr_y": 30.2}}),
                run(short, "fitnet", {"291-val": {"psnr_y": 25.7}}, steps=250)]  # a tuning run with seed 0
        tidy = pd.DataFrame([{"run_id": r.run_id, "dataset": d, "metric": "psnr_y", "value": v["psnr_y"]}
                             for r in runs for d, v in r.summary["datasets"].items()])
        runset = RunSet(runs, tidy)
        table = comparison_table(runset)
        fitnet = table[(table["method"] == "fitnet") & (table["dataset"] == "Set5")].iloc[0]
        assert fitnet["seeds"] == 1 and fitnet["psnr_mean"] == pytest.approx(30.2)
        assert fitnet["delta"] == pytest.approx(0.2)
        assert set(table["dataset"]) == {"Set5"}  # the run left out adds no rows
        assert any(f"{full} and {short}" in w and "separate --runs folders" in w for w in runset.warnings)


def test_teacher_precisions_mixed_across_machines_are_noted(tmp_path):
    from kd.report.runs import Run, RunSet
    from kd.report.tables import mixed_teacher_dtypes

    def run(method, seed, dtype):
        teacher = {"arch": "rcan", "preset": "mini", "dtype": dtype} if dtype else None
        return Run(tmp_path, {"run_id": f"{method}-{seed}", "student": "asid", "method": method, "scale": 4,
                              "seed": seed, "datasets": {"Set5": {"psnr_y": 30.0}}, "teacher": teacher})

    same = RunSet([run("none", 0, None), run("logits", 0, "float32"), run("fitnet", 1, "float32")], pd.DataFrame())
    assert mixed_teacher_dtypes(same) == []
    mixed = RunSet([*same.runs, run("logits", 1, "bfloat16")], pd.DataFrame())
    (note,) = mixed_teacher_dtypes(mixed)
    assert "bfloat16: logits s1; float32: fitnet s1, logits s0" in note and "teacher_dtype=fp32" in note


def test_peer_labels_do_not_overlap():
    fig, ax = plt.subplots(figsize=(4, 3))
    points = [(300e3 + 1e3 * i, 32.0 + 0.001 * i) for i in range(6)]  # six peers almost on one spot
    ax.scatter(*zip(*points))
    ax.set_xscale("log")
    texts = place_labels(ax, points, [f"PeerNet-{i}" for i in range(6)])
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in texts]
    assert all(not a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close(fig)


@pytest.fixture(scope="module")
def smoke_grid(tmp_path_factory):
    """none + logits from an RCAN teacher, seeds 0 and 1, smoke profile cut to 2 steps without validation."""
    root = tmp_path_factory.mktemp("grid")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KDBENCH_CACHE", str(root / "cache"))
        for method in ("none", "logits"):
            for seed in (0, 1):
                config = resolve([profile_layer("smoke"),
                                  ("test", parse_override(f"method.name={method}")),
                                  ("test", {"seed": seed, "teacher": {"arch": "rcan", "train": {"steps": 2}},
                                            "train": {"steps": 2}, "eval": {"val_dataset": None}})])
                execute_run(config, out_dir=root / "runs", progress=False)
        yield root


def test_report_from_a_smoke_grid(smoke_grid, tmp_path, monkeypatch):
    monkeypatch.setenv("KDBENCH_CACHE", str(smoke_grid / "cache"))
    out = tmp_path / "report"
    build_report(smoke_grid / "runs", out, visual_images=1)
    for name in ("report.html", "report.md", "results.csv", "figures/delta_bars.png", "figures/delta_bars.svg",
                 "figures/training_curves.png", "figures/psnr_vs_cost.svg", "figures/visual_spec.json"):
        assert (out / name).is_file(), name
    html, md = (out / "report.html").read_text(), (out / "report.md").read_text()
    for text in (html, md):
        assert "smoke profile" in text and "logits" in text and "none" in text and "(teacher)" in text
    assert "Reconstructed by kdbench" not in html  # logits is verified against published code

    # the delta in the table is the mean of per-seed differences read straight from the summaries
    summaries = [json.loads(p.read_text()) for p in (smoke_grid / "runs").glob("*/summary.json")]
    psnr = {(s["method"], s["seed"]): s["datasets"]["default"]["psnr_y"] for s in summaries}
    expected = ((psnr["logits", 0] - psnr["none", 0]) + (psnr["logits", 1] - psnr["none", 1])) / 2
    table = pd.read_csv(out / "results.csv")
    row = table[table["method"] == "logits"].iloc[0]
    assert row["delta"] == pytest.approx(expected) and row["delta_n"] == 2 and math.isfinite(row["delta_low"])
    assert bool(row["best"]) == (row["delta_low"] > 0)  # ★ only where the interval lies above 0
    assert "data:image/png;base64," in html and "src=\"figures/" not in html  # one self-contained file
    assert html.index("class='finding'") < html.index("<h2>Results</h2>") and md.startswith("# ")
    assert md.splitlines()[2].startswith("**") and md.splitlines()[2].endswith(".**")
    spec = json.loads((out / "figures" / "visual_spec.json").read_text())
    labels = [p["label"] for p in spec["figures"][0]["panels"]]
    assert labels[:3] == ["HR", "bicubic", "no-KD"] and "logits" in labels and labels[-1].startswith("teacher")
    assert set(spec["figures"][0]["crop_hr"]) == {"top", "left", "size"}
    assert not list(tmp_path.glob(".report*"))  # no temporary folder left behind


def test_visual_comparison_uses_a_seed_whose_weights_are_here(smoke_grid, tmp_path, monkeypatch):
    """Records of a committed report keep no weights: a later session's figure shows the seed it trained."""
    from kd.report.runs import scan_runs
    from kd.report.visual import visual_comparison

    monkeypatch.setenv("KDBENCH_CACHE", str(smoke_grid / "cache"))
    runs = tmp_path / "runs"
    shutil.copytree(smoke_grid / "runs", runs)
    for weights in runs.glob("*-s0-*/student.pt"):
        weights.unlink()
    stems, notes = visual_comparison(scan_runs(runs).runs, tmp_path / "figures", images=1)
    spec = json.loads((tmp_path / "figures" / "visual_spec.json").read_text())
    panels = {p["label"]: p["weights"] for p in spec["figures"][0]["panels"]}
    assert spec["seed"] == 1 and stems and not [n for n in notes if "left out" in n]
    assert "-s1-" in panels["no-KD"] and "-s1-" in panels["logits"]

    shutil.rmtree(next(runs.glob("asid-logits-*-s1-*")))  # logits has only its seed 0, without weights
    _, notes = visual_comparison(scan_runs(runs).runs, tmp_path / "figures2", images=1)
    assert any(n.startswith("visual comparison: logits (seed 0) left out (weights not found") for n in notes)


def test_visual_comparison_is_rebuilt_from_recorded_crops(smoke_grid, tmp_path, monkeypatch):
    """A grid reported across machines: the records of the first report carry each run's crops, so a report built
    from those records alone (no weights anywhere) shows the same panels with the same figures."""
    monkeypatch.setenv("KDBENCH_CACHE", str(smoke_grid / "cache"))
    first, second = tmp_path / "first", tmp_path / "second"
    build_report(smoke_grid / "runs", first, visual_images=1)
    assert len(list((first / "records").glob("*/visual_crops/*.png"))) == 4  # none and logits, seeds 0 and 1
    assert not list((first / "records").glob("*/student.pt"))
    report = build_report(first / "records", second, visual_images=1)
    spec_first, spec_second = (json.loads((out / "figures" / "visual_spec.json").read_text()) for out in (first, second))
    panels_first = {p["label"]: p["psnr_y"] for p in spec_first["figures"][0]["panels"]}
    panels_second = {p["label"]: p for p in spec_second["figures"][0]["panels"]}
    assert {"no-KD", "logits"} <= set(panels_second) and spec_second["seed"] == spec_first["seed"] == 0
    for label in ("no-KD", "logits"):
        assert panels_second[label]["psnr_y"] == panels_first[label]
        assert "visual_crops" in panels_second[label]["weights"]
    assert not [n for n in report.content.notes if "left out" in n and "teacher" not in n]
    assert len(list((second / "records").glob("*/visual_crops/*.png"))) == 4  # carried on


def test_corrupt_run_is_skipped_and_reconstructions_are_named(smoke_grid, tmp_path, monkeypatch):
    monkeypatch.setenv("KDBENCH_CACHE", str(smoke_grid / "cache"))
    runs = tmp_path / "runs"
    shutil.copytree(smoke_grid / "runs", runs)
    broken = runs / "asid-broken-run"
    broken.mkdir()
    (broken / "summary.json").write_text("{not json")
    source = next(runs.glob("asid-logits-*-s0-*"))
    lsfd = runs / source.name.replace("logits", "lsfd")
    shutil.copytree(source, lsfd)
    summary = json.loads((lsfd / "summary.json").read_text())
    summary.update(method="lsfd", run_id=lsfd.name)
    (lsfd / "summary.json").write_text(json.dumps(summary))
    report = build_report(runs, tmp_path / "out", visual_images=0)
    assert any("asid-broken-run" in note for note in report.content.notes)
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Reconstructed by kdbench, not run from published code: LSFD (from the abstract)." in html
    assert "asid-broken-run" in html
    assert "lsfd" in set(pd.read_csv(tmp_path / "out" / "results.csv")["method"])


def test_records_rebuild_the_report_and_join_new_runs(smoke_grid, tmp_path, monkeypatch):
    """A committed report keeps each run's record (no weights); a later session renders the same table from them
    and joins its new runs to them."""
    monkeypatch.setenv("KDBENCH_CACHE", str(smoke_grid / "cache"))
    seed0, seed1 = tmp_path / "seed0", tmp_path / "seed1"
    for run in (smoke_grid / "runs").iterdir():
        shutil.copytree(run, (seed0 if "-s0-" in run.name else seed1) / run.name)
    out = tmp_path / "grid"
    build_report(seed0, out, visual_images=0)
    records = sorted(p.name for p in (out / "records").iterdir())
    assert records == sorted(p.name for p in seed0.iterdir())
    assert not list((out / "records").rglob("*.pt")) and (out / "records" / records[0] / "metrics.jsonl").is_file()

    with pytest.raises(KdError, match="earlier kdbench report"):
        build_report([seed1, out / "records"], out, visual_images=0)
    (out / "paper-table.md").write_text("a table the user put beside the report")
    (out / "notes").mkdir()
    (out / "notes" / "todo.txt").write_text("rerun seed 2")
    rebuilt = build_report([seed1, out / "records"], out, visual_images=0, force=True)
    assert rebuilt.kept == ["notes", "paper-table.md"]
    assert (out / "paper-table.md").read_text() == "a table the user put beside the report"
    assert (out / "notes" / "todo.txt").read_text() == "rerun seed 2"
    joined = pd.read_csv(out / "results.csv")
    reference = build_report(smoke_grid / "runs", tmp_path / "all", visual_images=0)
    assert sorted(p.name for p in (out / "records").iterdir()) == sorted(r.run_id for r in reference.runset.runs)
    pd.testing.assert_frame_equal(joined, pd.read_csv(tmp_path / "all" / "results.csv"))

    again = build_report([out / "records", seed0], out, visual_images=0, force=True)  # a run in both: read once
    assert len(again.runset.runs) == len(reference.runset.runs)
    both = [note for note in again.content.notes if "are both in" in note]
    assert len(both) == 1 and both[0].startswith(f"{len(records)} run(s) are both in {out / 'records'} and in {seed0}")


def test_empty_partial_and_missing_runs_dirs_say_what_is_missing(tmp_path, capsys):
    with pytest.raises(KdError, match="not found"):
        build_report(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KdError, match="no run folders with a summary.json"):
        build_report(tmp_path / "empty", tmp_path / "out")
    partial = tmp_path / "partial" / "asid-none-noteacher-x4-smoke-s0-deadbeef"
    partial.mkdir(parents=True)
    (partial / "config.yaml").write_text("profile: smoke\n")
    assert main(["report", "--runs", str(partial.parent), "--out", str(tmp_path / "out")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "only unfinished runs" in err and partial.name in err
    assert not (tmp_path / "out").exists()


def test_report_console_tables_at_80_columns_piped(smoke_grid, tmp_path, monkeypatch, capsys, readable):
    monkeypatch.setenv("KDBENCH_CACHE", str(smoke_grid / "cache"))
    assert main(["report", "--runs", str(smoke_grid / "runs"), "--out", str(tmp_path / "cli"),
                 "--visual-images", "0"]) == 0
    out = capsys.readouterr().out
    report = build_report(smoke_grid / "runs", tmp_path / "api", visual_images=0)
    cells = [cell.plain for table in report.console_tables() for cells, _, _ in table.rows for cell in cells]
    assert any("/" in cell for cell in cells)  # the PSNR/SSIM cells are among them
    tables = out.split("\nwrote ")[0].replace(report.content.finding, "")  # the finding is one message line
    readable(tables, cells)
    (tmp_path / "cli" / "mine.md").write_text("notes")
    assert main(["report", "--runs", str(smoke_grid / "runs"), "--out", str(tmp_path / "cli"),
                 "--visual-images", "0", "--force"]) == 0
    assert f"kept what kdbench did not write in {tmp_path / 'cli'}: mine.md" in capsys.readouterr().out
