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
from kd.api import build_report
from kd.report.plots import place_labels, plt
from kd.stats import gap_recovered, mean_std, paired_delta
from kd.report.tables import comparison_table, finding, missing_baselines, reconstructed_methods

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


def _runset(cells: dict[tuple[str, str | None, str], list[float]], *, lpips: dict | None = None,
            steps: dict | None = None):
    """Runs from {(method, teacher, dataset): PSNR per seed}; `lpips` the same for LPIPS; `steps` {method: steps}
    gives a method's runs another budget (another configuration)."""
    from pathlib import Path

    from kd.report.runs import Run, RunSet

    summaries: dict[tuple, dict] = {}
    for (method, teacher, dataset), values in cells.items():
        for seed, value in enumerate(values):
            summary = summaries.setdefault((method, teacher, seed), {
                "run_id": f"asid-{method}-{teacher or 'noteacher'}-s{seed}", "student": "asid",
                "student_preset": "paper", "method": method, "scale": 4, "seed": seed, "profile": "cpu",
                "steps": (steps or {}).get(method, 1000), "datasets": {},
                "teacher": {"arch": teacher, "preset": "mini"} if teacher else {}})
            scores = {"psnr_y": value}
            if lpips and (method, teacher, dataset) in lpips:
                scores["lpips"] = lpips[(method, teacher, dataset)][seed]
            summary["datasets"][dataset] = scores
    runs = [Run(Path(s["run_id"]), s) for s in summaries.values()]
    tidy = pd.DataFrame([{"run_id": r.run_id, "dataset": d, "metric": m, "value": v} for r in runs
                         for d, scores in r.summary["datasets"].items() for m, v in scores.items()])
    return RunSet(runs, tidy)


BASE = [30.00, 30.10, 29.95]


def _gain(*gains: float) -> list[float]:
    return [b + g for b, g in zip(BASE, gains)]


def test_reports_name_each_reconstructed_method_from_its_class():
    table = pd.DataFrame({"method": ["none", "(teacher)", "logits", "fakd", "mipkd", "dckd", "uninstalled_plugin"]})
    assert reconstructed_methods(table) == ["DCKD (a seeded random encoder in place of its pretrained VQGAN)",
                                            "MiPKD (from the paper's description; no public code)"]


def test_holm_adjusts_p_values_step_down_and_its_intervals_agree_with_its_claims():
    from kd.stats import PairedDelta, holm

    def delta(p: float) -> PairedDelta:
        return PairedDelta(3, 0.1, 0.01, math.nan, math.nan, p=p).at(0.95)

    judged = holm([delta(0.001), delta(0.02), delta(0.012), delta(0.3), PairedDelta(2, 0.1, 0.01, 0.0, 0.2, p=0.0)])
    # m = 4 (two seeds are not in the family); sorted p 0.001, 0.012, 0.02, 0.3 -> 4p, 3p, 2p, p, running maximum
    assert [j.p_holm for j in judged[:4]] == pytest.approx([0.004, 0.04, 0.036, 0.3])
    assert [j.claimed for j in judged] == [True, True, True, False, False]
    assert [j.family for j in judged] == [4, 4, 4, 4, 0]
    assert [j.delta.confidence for j in judged[:4]] == pytest.approx([1 - 0.05 / 4, 1 - 0.05 / 2, 1 - 0.05 / 3,
                                                                        1 - 0.05 / 1])
    # with real differences: claimed exactly when the interval at Holm's level excludes 0, and never a claim that
    # the plain 95 % interval would not make
    rng = __import__("random").Random(0)
    for _ in range(200):
        deltas = [paired_delta({s: rng.gauss(mu, 0.05) for s in range(3)}, {s: 0.0 for s in range(3)})
                  for mu in (rng.uniform(-0.1, 0.2) for _ in range(8))]
        for plain, judged_one in zip(deltas, holm(deltas)):
            excludes = judged_one.delta.low > 0 or judged_one.delta.high < 0
            assert judged_one.claimed == excludes
            assert not judged_one.claimed or plain.low > 0 or plain.high < 0


def test_finding_names_each_method_with_its_teacher_and_the_datasets_where_it_holds():
    """The cpu-x4 report said "logits and facd beat no-KD on B100, Set14, Set5" although facd from SwinIR did not."""
    cells = {("none", None, d): BASE for d in ("Set5", "Set14", "B100")}
    for dataset in ("Set5", "Set14", "B100"):
        cells[("logits", "rcan", dataset)] = _gain(0.100, 0.101, 0.099)
        cells[("facd", "swinir", dataset)] = _gain(0.05, -0.05, 0.0)  # no gain
    cells[("facd", "rcan", "Set5")] = _gain(0.080, 0.081, 0.079)
    cells[("facd", "rcan", "Set14")] = _gain(0.04, -0.03, 0.01)
    cells[("facd", "rcan", "B100")] = _gain(0.04, -0.03, 0.01)
    table = comparison_table(_runset(cells))
    text = finding(table)
    assert text.startswith("After Holm–Bonferroni over the report's 9 comparisons of Δ PSNR with 3+ paired seeds "
                           "(familywise 5 %), better than the no-KD student: logits from rcan (mini) on Set5, Set14 "
                           "and B100; facd from rcan (mini) on Set5. Clearest: ")
    assert "facd from swinir" not in text and "99." in text and "Holm's level" in text
    facd = table[(table["method"] == "facd") & (table["teacher"] == "rcan (mini)") & (table["dataset"] == "Set5")]
    assert bool(facd["claimed"].iloc[0]) and int(facd["family"].iloc[0]) == 9


def test_a_gain_inside_holms_interval_is_not_claimed_even_when_its_95_interval_excludes_zero():
    cells = {("none", None, "Set5"): BASE, ("logits", "rcan", "Set5"): _gain(0.05, 0.08, 0.06)}
    for index in range(10):  # nine more comparisons that find nothing make the family 11
        cells[(f"m{index}", "rcan", "Set5")] = _gain(0.01, -0.01, 0.0)
    table = comparison_table(_runset(cells))
    logits = table[table["method"] == "logits"].iloc[0]
    plain = paired_delta(dict(enumerate(_gain(0.05, 0.08, 0.06))), dict(enumerate(BASE)))
    assert plain.low > 0 and not logits["claimed"] and logits["delta_low"] < 0 < logits["delta_high"]
    assert finding(table) == ("No method separates from the no-KD student after Holm–Bonferroni over the report's "
                              "11 comparisons of Δ PSNR with 3+ paired seeds (familywise 5 %).")
    assert not table["best"].any()


def test_a_psnr_gain_with_a_worse_lpips_is_said_and_losses_are_named():
    cells = {("none", None, "Set5"): BASE, ("logits", "rcan", "Set5"): _gain(0.100, 0.101, 0.099),
             ("lsfd", "swinir", "Set5"): _gain(-0.200, -0.201, -0.199)}
    lpips = {("none", None, "Set5"): [0.300, 0.301, 0.299], ("logits", "rcan", "Set5"): [0.310, 0.312, 0.309],
             ("lsfd", "swinir", "Set5"): [0.300, 0.301, 0.299]}
    text = finding(comparison_table(_runset(cells, lpips=lpips)))
    assert "PSNR gains with a worse LPIPS (higher; paired 95 % interval above 0): logits from rcan (mini) on Set5" in text
    assert text.endswith("Worse than no-KD: lsfd from swinir (mini) on Set5.")


def test_two_seeds_mark_nothing_best_even_when_their_interval_excludes_zero():
    from kd.report.tables import separates

    two = comparison_table(_runset({("none", None, "Set5"): BASE[:2], ("logits", "rcan", "Set5"): _gain(0.1, 0.1)}))
    assert not separates(two).any()
    assert finding(two) == ("No method is ranked yet: 2 paired seeds (the protocol needs 3 or more before calling a "
                            "method better or worse than no-KD).")
    three = comparison_table(_runset({("none", None, "Set5"): BASE,
                                      ("logits", "rcan", "Set5"): _gain(0.100, 0.101, 0.099)}))
    assert separates(three).tolist() == [False, True]
    two_seeds = paired_delta({0: 30.1, 1: 30.2}, {0: 30.0, 1: 30.1})
    assert two_seeds.has_interval and not two_seeds.can_rank and not two_seeds.above_zero


def test_runs_of_different_configurations_never_pair():
    """A KD run at another budget is not compared with the no-KD runs of the grid: its Δ is n/a and a note says why."""
    runset = _runset({("none", None, "Set5"): BASE, ("logits", "rcan", "Set5"): _gain(0.1, 0.1, 0.1)},
                     steps={"logits": 250})
    table = comparison_table(runset)
    logits = table[table["method"] == "logits"].iloc[0]
    assert math.isnan(logits["delta"]) and table["configuration"].nunique() == 2
    assert "250 steps" in logits["configuration"]
    (note,) = missing_baselines(runset)
    assert note.startswith("no no-KD run of asid (paper) x4, cpu profile, 250 steps: its Δ is n/a")
    assert "differ in train.steps" in note


def test_own_data_and_demo_runs_are_separate_configurations_with_their_own_headings(tmp_path):
    """Runs read their configuration from config.yaml: other training data is another configuration, however alike
    the rest; the heading names the data, and a KD run never takes the no-KD run of other data as its partner."""
    import yaml

    from kd.config import resolve, to_dict
    from kd.report.runs import scan_runs

    for method, data in (("none", "default"), ("logits", "default"), ("none", "MyPhotos"), ("logits", "MyPhotos")):
        config = resolve([profile_layer("demo"), ("test", {"method": {"name": method}, "data": {"train": data}})])
        run = tmp_path / f"asid-{method}-{data}"
        run.mkdir()
        (run / "config.yaml").write_text(yaml.safe_dump(to_dict(config)))
        teacher = {"arch": "rcan", "preset": "mini"} if method != "none" else {}
        (run / "summary.json").write_text(json.dumps({
            "run_id": run.name, "student": "asid", "student_preset": "paper", "method": method, "scale": 4,
            "seed": 0, "profile": "demo", "teacher": teacher,
            "datasets": {"Set5": {"psnr_y": 30.0 + (method == "logits") * 0.1 + (data == "MyPhotos")}}}))
    table = comparison_table(scan_runs(tmp_path))
    headings = sorted(set(table["configuration"]))
    assert len(headings) == 2 and headings[0].endswith("on MyPhotos") and headings[1].endswith("on default")
    assert table[table["method"] == "logits"]["delta"].tolist() == pytest.approx([0.1, 0.1])


def test_report_filters_keep_the_no_kd_runs_the_kept_runs_pair_with():
    from kd.report.runs import select_runs

    runset = _runset({("none", None, "Set5"): BASE, ("logits", "rcan", "Set5"): _gain(0.1, 0.1, 0.1),
                      ("logits", "swinir", "Set5"): _gain(0.2, 0.2, 0.2)})
    for run in runset.runs:
        if run.teacher == "swinir (mini)" or (run.method == "none" and run.seed == 0):
            run.summary["label"] = {"name": "grid-b", "tags": ["swin"] if run.teacher else []}
    by_teacher = select_runs(runset, ["teacher=rcan"])
    assert {(r.method, r.teacher) for r in by_teacher.runs} == {("none", None), ("logits", "rcan (mini)")}
    assert len(by_teacher.runs) == 6 and "3 left out" in by_teacher.notes[-1]
    seed = select_runs(runset, ["teacher=swinir", "seed=1"])
    assert sorted((r.method, r.seed) for r in seed.runs) == [("logits", 1), ("none", 1)]
    tagged = select_runs(runset, ["tag=swin"])  # the untagged no-KD runs stay: they are the Δ's baselines
    assert sorted(r.method for r in tagged.runs) == ["logits"] * 3 + ["none"] * 3
    named = comparison_table(select_runs(runset, ["name=grid-b"]))
    assert set(named["teacher"]) == {"swinir (mini)"} and named["delta"].notna().sum() == 1
    with pytest.raises(KdError, match="name values present: grid-b, none"):
        select_runs(runset, ["name=grid-c"])


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
        # a variant of fitnet in the same configuration (other loss weights), evaluated on fewer datasets
        runs = [run("a-none", "none", {"Set5": {"psnr_y": 30.0}}),
                run(full, "fitnet", {"Set5": {"psnr_y": 30.2}, "Set14": {"psnr_y": 27.0}}),
                run(short, "fitnet", {"Set5": {"psnr_y": 25.7}})]
        tidy = pd.DataFrame([{"run_id": r.run_id, "dataset": d, "metric": "psnr_y", "value": v["psnr_y"]}
                             for r in runs for d, v in r.summary["datasets"].items()])
        runset = RunSet(runs, tidy)
        table = comparison_table(runset)
        fitnet = table[(table["method"] == "fitnet") & (table["dataset"] == "Set5")].iloc[0]
        assert fitnet["seeds"] == 1 and fitnet["psnr_mean"] == pytest.approx(30.2)
        assert fitnet["delta"] == pytest.approx(0.2)
        assert table[table["method"] == "fitnet"]["psnr_mean"].tolist() == [30.2, 27.0]  # the other adds nothing
        assert any(f"uses {full} and leaves out {short}" in n and "separate --runs folders" in n for n in runset.notes)


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


def test_peer_labels_sit_beside_their_points_without_overlapping():
    fig, ax = plt.subplots(figsize=(4, 3))
    points = [(300e3 + 1e3 * i, 32.0 + 0.001 * i) for i in range(6)]  # six peers almost on one spot
    points += [(2e6, 32.6), (1e5, 31.0)]  # and two at the edges of the data, where a label could leave the axes
    ax.scatter(*zip(*points))
    ax.set_xscale("log")
    numbered = place_labels(ax, points, [f"PeerNet-{i}" for i in range(len(points))])
    fig.canvas.draw()
    frame = ax.get_window_extent()
    boxes = [t.get_window_extent() for t in ax.texts]
    assert len(boxes) == len(points) and not numbered
    assert all(not a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    for text, box in zip(ax.texts, boxes):
        x, y = ax.transData.transform(text.xy)
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
        assert abs(box.y0 + box.height / 2 - y) < 45 and min(abs(box.x0 - x), abs(box.x1 - x)) < 45
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
    monkeypatch.setenv("KDBENCH_CACHE", str(smoke_grid / "cache"))
    runs = tmp_path / "runs"
    shutil.copytree(smoke_grid / "runs", runs)
    for weights in runs.glob("*-s0-*/student.pt"):
        weights.unlink()
    report = build_report(runs, tmp_path / "first", visual_images=1)
    spec = json.loads((tmp_path / "first" / "figures" / "visual_spec.json").read_text())
    panels = {p["label"]: p["crops"] for p in spec["figures"][0]["panels"]}
    assert spec["seed"] == 1 and not [n for n in report.content.notes if "not shown" in n]
    assert "-s1-" in panels["no-KD"] and "-s1-" in panels["logits"] and "teacher rcan (tiny)" in panels

    shutil.rmtree(next(runs.glob("asid-logits-*-s1-*")))  # logits has only its seed 0, without weights
    report = build_report(runs, tmp_path / "second", visual_images=1)
    assert any(n.startswith("visual comparison: logits (seed 0) is not shown: no crops were recorded")
               for n in report.content.notes)


def test_a_retrained_zoo_teacher_gives_no_crops_in_the_name_of_the_runs(smoke_grid, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    shutil.copytree(smoke_grid / "cache", cache)
    monkeypatch.setenv("KDBENCH_CACHE", str(cache))
    for weights in cache.glob("teachers/*/teacher.pt"):
        weights.write_bytes(weights.read_bytes() + b"retrained")
    report = build_report(smoke_grid / "runs", tmp_path / "out", visual_images=1)
    assert any("is not the file its runs were distilled from" in w for w in report.warnings)
    assert any("the teacher rcan (tiny) is not shown" in n for n in report.content.notes)


def test_visual_comparison_is_rebuilt_from_recorded_crops(smoke_grid, tmp_path, monkeypatch):
    """A grid reported across machines: the records of the first report carry each run's crops and the teacher's,
    so a report built from those records alone (no weights anywhere, an empty teacher zoo) shows the same panels
    with the same figures."""
    monkeypatch.setenv("KDBENCH_CACHE", str(smoke_grid / "cache"))
    first, second = tmp_path / "first", tmp_path / "second"
    build_report(smoke_grid / "runs", first, visual_images=1)
    assert len(list((first / "records").glob("*/visual_crops/default_*.png"))) == 4  # none, logits; seeds 0, 1
    assert len(list((first / "records").glob("*-logits-*-s0-*/visual_crops/teacher_*.png"))) == 1
    assert not list((first / "records").glob("*/student.pt"))
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "empty-cache"))
    report = build_report(first / "records", second, visual_images=1)
    spec_first, spec_second = (json.loads((out / "figures" / "visual_spec.json").read_text()) for out in (first, second))
    panels_first = {p["label"]: p["psnr_y"] for p in spec_first["figures"][0]["panels"]}
    panels_second = {p["label"]: p for p in spec_second["figures"][0]["panels"]}
    assert set(panels_second) == set(panels_first) and spec_second["seed"] == spec_first["seed"] == 0
    for label in ("no-KD", "logits", "teacher rcan (tiny)"):
        assert panels_second[label]["psnr_y"] == panels_first[label]
        assert "visual_crops" in panels_second[label]["crops"]
    assert not [n for n in report.content.notes if "not shown" in n]
    assert len(list((second / "records").glob("*/visual_crops/*.png"))) == 5  # carried on


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
    both = [note for note in again.warnings if "are both in" in note]
    assert not [note for note in again.content.notes if "both in" in note]  # the reader is not told of folders
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
