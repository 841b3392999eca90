"""Results store on a small real grid of smoke runs (tiny ASID student, tiny RCAN teacher, embedded photos)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from kd.cli import main
from kd.config import resolve
from kd.engine import execute_run
from kd.errors import KdError
from kd.profiles import profile_layer
from kd.results import COLUMNS, CorruptRunWarning, filter_runs, load_runs
from kd.results.formats import latex_table, paper_rows

GRID = [("none", 0), ("none", 1), ("logits", 0)]  # (method, seed); teacher rcan
# No periodic validation: the runs stay a few seconds each on a loaded machine.
FAST = {"eval": {"val_dataset": None}}


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KDBENCH_CACHE", str(root / "cache"))
        for method, seed in GRID:
            config = resolve([profile_layer("smoke"),
                              ("test", {"method": {"name": method}, "seed": seed, "scale": 4}),
                              ("fast", FAST)])
            execute_run(config, out_dir=root / "runs", progress=False)
    return root / "runs"


@pytest.fixture
def runs_copy(runs_dir, tmp_path):
    target = tmp_path / "runs"
    shutil.copytree(runs_dir, target)
    return target


def _summaries(runs_dir):
    return {p.parent.name: json.loads(p.read_text()) for p in runs_dir.glob("*/summary.json")}


def test_tidy_frame_has_one_row_per_run_dataset_metric(runs_dir):
    df = load_runs(runs_dir)
    assert list(df.columns) == COLUMNS
    summaries = _summaries(runs_dir)
    assert len(summaries) == len(GRID)
    expected_rows = sum(
        1 for s in summaries.values() for scores in s["datasets"].values() for v in scores.values() if v is not None
    )
    assert len(df) == expected_rows
    assert set(df["metric"]) == {"psnr_y", "ssim_y"}  # smoke switches LPIPS off: no lpips rows, no NaN values
    assert df["value"].notna().all() and df["finished"].all()
    assert set(df["run_id"]) == set(summaries)
    for _, row in df.iterrows():
        summary = summaries[row["run_id"]]
        assert row["value"] == pytest.approx(summary["datasets"][row["dataset"]][row["metric"]])
        assert (row["student"], row["method"], row["seed"], row["scale"]) == (
            summary["student"], summary["method"], summary["seed"], summary["scale"])
        assert row["teacher"] == ("none" if summary["method"] == "none" else "rcan")
        assert row["params"] == summary["params"] and row["steps"] == summary["steps"] == 6
        assert row["train_seconds"] == pytest.approx(summary["train_seconds"])
        assert row["profile"] == "smoke"
    # the per-dataset CSV of the evaluation agrees with the frame
    one = df.iloc[0]
    per_dataset = pd.read_csv(f"{one['run_dir']}/eval/per_dataset.csv").set_index("dataset")
    assert one["value"] == pytest.approx(per_dataset.loc[one["dataset"], one["metric"]])


def test_filters_select_and_report_values_present(runs_dir):
    df = load_runs(runs_dir)
    assert set(filter_runs(df, ["method=fitnet,logits"])["method"]) == {"logits"}
    assert set(filter_runs(df, ["teacher=none"])["seed"]) == {0, 1}
    both = filter_runs(df, ["teacher=rcan", "metric=psnr_y"])  # with the no-KD run of the same seed, its baseline
    assert sorted(both["method"]) == ["logits", "none"] and set(both["metric"]) == {"psnr_y"}
    assert set(both["seed"]) == {0}
    assert len(filter_runs(df, ["seed=1"])["run_id"].unique()) == 1
    with pytest.raises(KdError, match=r"teacher=han matches no results; teacher values present: none, rcan"):
        filter_runs(df, ["teacher=han"])
    with pytest.raises(KdError, match="Did you mean 'teacher'"):
        filter_runs(df, ["teachr=rcan"])
    with pytest.raises(KdError, match="KEY=VALUE"):
        filter_runs(df, ["teacher"])


def test_paper_table_means_over_seeds(runs_dir):
    df = load_runs(runs_dir)
    headers, rows = paper_rows(df)
    dataset = df["dataset"].iloc[0]
    baseline = next(r for r in rows if r[2] == "none")
    assert baseline[headers.index("seeds")] == "2"
    values = df[(df.method == "none") & (df.dataset == dataset)]
    psnr = values[values.metric == "psnr_y"]["value"].mean()
    ssim = values[values.metric == "ssim_y"]["value"].mean()
    assert baseline[headers.index(f"{dataset} PSNR/SSIM")] == f"{psnr:.2f}/{ssim:.4f}"
    assert rows[0][2] == "none" and len(rows) == 2  # baseline first, then logits
    latex = latex_table(df)
    assert latex.startswith(r"\begin{tabular}") and f"{psnr:.2f}/{ssim:.4f}" in latex


def test_cli_formats(runs_dir, tmp_path, capsys):
    csv_path = tmp_path / "out" / "results.csv"
    assert main(["results", "--runs", str(runs_dir), "--format", "csv", "--out", str(csv_path)]) == 0
    written = pd.read_csv(csv_path)
    assert list(written.columns) == COLUMNS and len(written) == len(load_runs(runs_dir))
    assert not [p for p in csv_path.parent.iterdir() if p.name.endswith(".tmp")]

    tex = tmp_path / "results.tex"
    assert main(["results", "--runs", str(runs_dir), "--format", "latex", "--out", str(tex),
                 "--filter", "method=none"]) == 0
    assert tex.read_text().count(r"\\") == 2  # header and the one baseline row

    capsys.readouterr()
    assert main(["results", "--runs", str(runs_dir), "--filter", "method=logits"]) == 0
    out = capsys.readouterr().out
    assert "logits" in out and "none" not in out and "PSNR/SSIM" in out

    parquet = tmp_path / "results.parquet"
    code = main(["results", "--runs", str(runs_dir), "--format", "parquet", "--out", str(parquet)])
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        assert code == 2 and not parquet.exists()
        assert "pyarrow" in " ".join(capsys.readouterr().err.split())
    else:
        assert code == 0 and len(pd.read_parquet(parquet)) == len(load_runs(runs_dir))


def test_corrupt_run_is_skipped_with_a_warning(runs_copy, capsys):
    broken = sorted(runs_copy.glob("*logits*/summary.json"))[0]
    broken.write_text(broken.read_text()[:40])  # a half-written JSON
    with pytest.warns(CorruptRunWarning, match=broken.parent.name):
        df = load_runs(runs_copy)
    assert broken.parent.name not in set(df["run_id"]) and df["run_id"].nunique() == len(GRID) - 1
    assert main(["results", "--runs", str(runs_copy)]) == 0
    err = "".join(capsys.readouterr().err.split())  # rich may wrap inside the long run name
    assert "warning:skippingrun" in err and broken.parent.name in err


def test_unfinished_runs_are_left_out_unless_asked(runs_copy):
    summary = sorted(runs_copy.glob("*logits*/summary.json"))[0]
    summary.unlink()  # as if killed after the evaluation, before summary.json
    df = load_runs(runs_copy)
    assert summary.parent.name not in set(df["run_id"])
    with_unfinished = load_runs(runs_copy, include_unfinished=True)
    rows = with_unfinished[with_unfinished["run_id"] == summary.parent.name]
    assert not rows.empty and not rows["finished"].any()
    assert set(rows["teacher"]) == {"rcan"} and set(rows["metric"]) == {"psnr_y", "ssim_y"}  # from eval CSV
    assert set(rows["steps"]) == {6}


def test_empty_or_missing_runs_dir_says_what_is_missing(tmp_path, capsys):
    with pytest.raises(KdError, match="does not exist"):
        load_runs(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KdError, match="holds no runs"):
        load_runs(tmp_path / "empty")
    assert main(["results", "--runs", str(tmp_path / "empty")]) == 2
    assert "holds no runs" in " ".join(capsys.readouterr().err.split())


def test_results_table_at_80_columns_piped(runs_dir, capsys, readable):
    assert main(["results", "--runs", str(runs_dir)]) == 0
    out = capsys.readouterr().out
    _, rows = paper_rows(load_runs(runs_dir))
    readable(out, [cell for row in rows for cell in row[7:]] + ["student", "params"])


def test_names_and_tags_label_runs_without_making_them_other_runs(runs_copy, capsys):
    from kd.config import run_id

    plain = resolve([profile_layer("smoke"), ("test", {"method": {"name": "none"}, "seed": 1, "scale": 4}),
                     ("fast", FAST)])
    named = resolve([profile_layer("smoke"), ("test", {"method": {"name": "none"}, "seed": 1, "scale": 4}),
                     ("fast", FAST), ("label", {"label": {"name": "grid-a", "tags": ["baseline", "smoke"]}})])
    assert run_id(named) == run_id(plain)  # a name is a label, not a configuration
    record = execute_run(named, out_dir=runs_copy, progress=False)  # the finished run takes the label
    label = {"name": "grid-a", "tags": ["baseline", "smoke"]}
    assert record.already_finished and record.summary["label"] == label
    assert json.loads((record.run_dir / "summary.json").read_text())["label"] == label
    assert "name: grid-a" in (record.run_dir / "config.yaml").read_text()
    # on the command line, --name/--tag reach the run the same way
    assert main(["run", "--profile", "smoke", "--method", "none", "--seed", "0", "--scale", "4", "--set",
                 "eval.val_dataset=null", "--out-dir", str(runs_copy), "--name", "seed-zero", "--tag", "smoke"]) == 0
    df = load_runs(runs_copy)
    assert set(filter_runs(df, ["name=grid-a"])["run_id"]) == {record.run_dir.name}
    tagged = filter_runs(df, ["tag=smoke"])
    assert set(tagged["seed"]) == {0, 1} and set(tagged["method"]) == {"none"}
    with pytest.raises(KdError, match="tag values present: baseline, smoke"):
        filter_runs(df, ["tag=other"])
    capsys.readouterr()
    assert main(["results", "--runs", str(runs_copy), "--filter", "tag=baseline"]) == 0
    out = capsys.readouterr().out
    assert "grid-a" in out and "seed-zero" not in out
    assert set(load_runs(runs_copy)["name"].dropna()) == {"grid-a", "seed-zero"}
