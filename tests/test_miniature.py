"""The DCKD table in miniature: paired gains over scratch from miniature-profile runs, published orderings checked."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from kd.report.miniature import PAIRS, PROFILE, build_miniature, to_markdown
from kd.report.paper import Measured, paper_table, to_text
from kd.report.runs import Run, RunSet

SCRATCH = {0: 29.00, 1: 29.10, 2: 28.95}
TEACHER_SET5 = 29.30  # +0.28 dB over scratch on Set5: within 2x of the published RCAN pair's +0.25


def _run(pair, method: str, seed: int, set5: float, *, profile: str = PROFILE, preset: str | None = None) -> Run:
    student_arch, student_preset = pair.student
    teacher = {} if method == "none" else {"arch": pair.teacher[0], "preset": pair.teacher[1],
                                           "eval": {"Set5": {"psnr_y": TEACHER_SET5}}}
    summary = {"run_id": f"{student_arch}-{method}-s{seed}", "student": student_arch,
               "student_preset": preset or student_preset, "method": method, "scale": 4, "seed": seed,
               "profile": profile, "teacher": teacher, "datasets": {"Set5": {"psnr_y": set5}}}
    return Run(Path("runs") / summary["run_id"], summary)


def _runset(gains: dict[str, list[float]], **kwargs) -> RunSet:
    rcan = PAIRS[0]
    runs = [_run(rcan, "none", seed, psnr, **kwargs) for seed, psnr in SCRATCH.items()]
    for method, per_seed in gains.items():
        runs += [_run(rcan, method, seed, SCRATCH[seed] + gain, **kwargs) for seed, gain in enumerate(per_seed)]
    return RunSet(runs, pd.DataFrame())


def test_gains_are_paired_by_seed_and_orderings_judged_by_their_interval():
    # Published RCAN-pair gains on Set5: logits +0.07, FAKD +0.08, MiPKD +0.08, DCKD +0.18.
    mini = build_miniature(_runset({"logits": [0.05, 0.06, 0.04], "dckd": [0.20, 0.21, 0.19],
                                    "mipkd": [0.30, 0.31, 0.29], "fakd": [0.30, -0.2, 0.1], "dukd": [0.0] * 3}))
    gain = mini.ours[("RCAN", "dckd", "Set5")]
    assert gain.n == 3 and abs(gain.mean - 0.20) < 1e-9 and gain.low > 0  # scratch noise cancels in the pairing
    assert abs(mini.published[("RCAN", "dckd", "Set5")] - 0.18) < 1e-9
    assert abs(mini.teacher_gap[("RCAN", "Set5")] - (TEACHER_SET5 - sum(SCRATCH.values()) / 3)) < 1e-9
    verdicts = {(o.better, o.worse): o.verdict for o in mini.orderings if o.pair == "RCAN" and o.dataset == "Set5"}
    assert verdicts == {("dckd", "logits"): "holds", ("dckd", "mipkd"): "reversed", ("dckd", "fakd"): "unresolved"}
    assert mini.finding() == ("Of 3 published orderings of methods (pairs x datasets), after Holm–Bonferroni over 3 "
                              "(familywise 5 %) the miniature reproduces 1 (1 at 25% or more of the published "
                              "margin), reverses 1 and leaves 1 unresolved, at up to 3 paired seeds.")
    holds = next(o for o in mini.orderings if o.verdict == "holds")
    assert holds.ratio == pytest.approx(0.15 / 0.11) and holds.judged.family == 3
    assert holds.ours.confidence == pytest.approx(1 - 0.05 / 3)  # the smallest p-value is tested at alpha / m
    assert any("--students rcan" in command for command in mini.missing)  # seeds 3 and 4 of the CNN pair are missing
    assert any("--students swinir --set student.preset=miniature_student" in command for command in mini.missing)
    assert any("--seeds 0,1,2,3,4" in command for command in mini.missing)
    text = to_markdown(mini)
    assert "| RCAN | DCKD | +0.18 | +0.200 ±" in text and "DCKD > MiPKD" in text


def test_a_teacher_lead_out_of_proportion_with_the_published_one_is_said():
    import kd.report.miniature as miniature

    runset = _runset({"logits": [0.05, 0.06, 0.04], "dckd": [0.20, 0.21, 0.19]})
    for run in runset.runs:
        if run.teacher_info:
            run.teacher_info["eval"]["Set5"]["psnr_y"] = 30.30  # +1.28 dB over scratch, published +0.25
    mini = miniature.build_miniature(runset)
    assert mini.published_teacher_gap[("RCAN", "Set5")] == pytest.approx(0.25)
    assert mini.finding().endswith("(the RCAN teacher leads its scratch by +1.28 dB on Set5 against the published "
                                   "+0.25 dB: that pair's gains are not to the published scale).")
    assert "teacher minus scratch student, RCAN Set5: +1.28 dB (published +0.25 dB)" in miniature.to_markdown(mini)


def test_runs_of_other_profiles_or_students_are_not_the_miniature():
    gains = {"logits": [0.1, 0.1, 0.1]}
    for other in (_runset(gains, profile="cpu"), _runset(gains, preset="10x6"), None):
        mini = build_miniature(other)
        assert not mini.has_runs and not mini.orderings and "has not been run yet" in mini.finding()


def test_one_paired_seed_gives_no_interval_and_says_so():
    runset = _runset({"logits": [0.05], "dckd": [0.20]})  # seed 0 only
    mini = build_miniature(runset)
    assert [o.verdict for o in mini.orderings if o.dataset == "Set5"] == ["too few seeds"]
    assert mini.finding() == ("No published ordering of methods is ranked yet (1 to check, pairs x datasets): at "
                              "most 1 paired seed so far, 3 needed.")
    two_seeds = build_miniature(_runset({"logits": [0.05, 0.05], "dckd": [0.20, 0.21]}))
    assert [o.verdict for o in two_seeds.orderings if o.dataset == "Set5"] == ["too few seeds"]
    assert "at most 2 paired seeds so far" in two_seeds.finding()
    mixed = build_miniature(_runset({"logits": [0.05, 0.06, 0.04], "dckd": [0.20, 0.21, 0.19], "mipkd": [0.1, 0.1]}))
    assert mixed.finding() == ("Of 2 published orderings of methods (pairs x datasets), after Holm–Bonferroni over 1 "
                               "(familywise 5 %) the miniature reproduces 1 (1 at 25% or more of the published "
                               "margin), reverses 0 and leaves 0 unresolved, at up to 3 paired seeds; it cannot rank "
                               "1 more yet (fewer than 3 paired seeds).")
    assert "nan" not in to_markdown(mini)


def test_an_ordering_that_holds_at_a_small_share_of_the_published_margin_is_counted_apart():
    # published Set5 margin DCKD - logits: 0.11 dB; ours 0.02 dB on every seed: it holds, at 18 % of the margin
    mini = build_miniature(_runset({"logits": [0.05, 0.06, 0.04], "dckd": [0.070, 0.081, 0.059]}))
    (ordering,) = mini.orderings
    assert ordering.verdict == "holds" and ordering.ratio == pytest.approx(0.02 / 0.11, abs=0.01)
    assert mini.holds_at_share() == 0 and "reproduces 1 (0 at 25% or more of the published margin)" in mini.finding()
    assert "| RCAN | Set5 | DCKD > Logits | +0.11 | +0.020 ±" in to_markdown(mini)


def test_gains_without_orderings_name_a_method_with_no_published_row():
    finding = build_miniature(_runset({"logits": [0.05]})).finding()  # no second method yet: no ordering
    assert finding.startswith("Gains over scratch in the miniature: Logits from RCAN on Set5 +0.050 (n=1) dB")
    assert "FAKD from RCAN on Set5 – dB (published +0.08)" in finding and "nan" not in finding


def test_the_fakd_miniature_compares_with_fakds_own_table():
    from kd.report.miniature import FAKD

    mini = build_miniature(_runset({"fakd": [0.10, 0.12, 0.08]}), FAKD)
    # FAKD Table 3, x4 Set5: 32.462 with FAKD vs 32.321 without (published_results.csv)
    assert mini.published[("RCAN", "fakd", "Set5")] > 0 and not mini.orderings
    assert mini.finding().startswith("Gains over scratch in the miniature: FAKD from RCAN on Set5 +0.100 ±")
    assert "FAKD (He et al., ICIP 2020)" in to_markdown(mini) and "SwinIR |" not in to_markdown(mini)


def test_the_dckd_table_carries_its_miniature_while_no_paper_run_exists():
    runset = _runset({"logits": [0.05, 0.06, 0.04], "dckd": [0.20, 0.21, 0.19]})
    empty = pd.DataFrame(columns=["arch", "preset", "method", "teacher", "scale", "dataset_key", "psnr", "ssim",
                                  "profile"])
    table = paper_table("dckd", measured=Measured(empty.drop(columns=["method", "teacher", "profile"]), empty,
                                                  miniature=runset))
    assert table.miniature is not None and table.miniature.ours[("RCAN", "dckd", "Set5")].n == 3
    assert "in miniature" in to_text(table, "markdown")


def test_paper_command_reads_the_miniature_runs_folder(tmp_path, capsys, readable):
    import json

    from kd.cli import main

    for run in _runset({"logits": [0.05, 0.06, 0.04], "dckd": [0.20, 0.21, 0.19]}).runs:
        folder = tmp_path / "mini" / run.run_id
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps(run.summary))
    argv = ["paper", "dckd", "--runs", str(tmp_path / "none"), "--format", "markdown"]
    assert main([*argv, "--miniature-runs", str(tmp_path / "mini")]) == 0
    text = capsys.readouterr().out
    assert "| RCAN | DCKD | +0.18 | +0.200 ±" in text and "| RCAN | Set5 | DCKD > Logits | +0.11 | +0.150 ±" in text
    assert f"Runs: 9 finished in {tmp_path / 'mini'}." in text
    assert main([*argv[:-2], "--miniature-runs", str(tmp_path / "mini")]) == 0  # the terminal table, 80 columns
    orderings = capsys.readouterr().out.split("Published orderings")[1].split("\nnote:")[0]
    readable(orderings, ["DCKD > Logits", "+0.150 ±0.000", "1.36", "holds"])
    (tmp_path / "empty").mkdir()
    assert main([*argv, "--miniature-runs", str(tmp_path / "empty")]) == 0  # named, nothing run there yet
    assert "has not been run yet" in capsys.readouterr().out
    assert main([*argv, "--miniature-runs", str(tmp_path / "absent")]) == 2  # a folder the user named must exist
    assert f"--miniature-runs {tmp_path / 'absent'}: no such folder" in " ".join(capsys.readouterr().err.split())

    # seeds spread over a local runs folder and a committed report's records join into one miniature
    (tmp_path / "records").mkdir()
    for run in [*(tmp_path / "mini").glob("*-s1"), *(tmp_path / "mini").glob("*-s2")]:
        run.rename(tmp_path / "records" / run.name)
    assert main([*argv, "--miniature-runs", str(tmp_path / "mini")]) == 0
    assert "| RCAN | DCKD | +0.18 | +0.200 (n=1) |" in capsys.readouterr().out  # seed 0 alone
    assert main([*argv, "--miniature-runs", str(tmp_path / "mini"), "--miniature-runs", str(tmp_path / "empty"),
                 "--miniature-runs", str(tmp_path / "records")]) == 0
    assert "| RCAN | DCKD | +0.18 | +0.200 ±" in capsys.readouterr().out


def test_paper_dckd_reads_the_committed_miniature_first_and_fits_80_columns(tmp_path, monkeypatch, capsys):
    """From a checkout, with no runs of one's own, the committed records are the miniature; it comes before the
    published table, whose cells keep ours beside the published value."""
    from kd.cli import main
    from kd.report.miniature import COMMITTED, checkout_root

    if checkout_root() is None or not (checkout_root() / COMMITTED).is_dir():
        pytest.skip("not running from a kdbench checkout with its committed miniature records")
    monkeypatch.chdir(tmp_path)  # no runs/miniature here
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["paper", "dckd"]) == 0
    out = capsys.readouterr().out
    assert "has not been run yet" not in out and f"the repository's {COMMITTED}" in out
    assert out.index("in miniature") < out.index("Published orderings") < out.index("Table 2: methods x datasets")
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "38.36 → –[" in out  # published SwinIR x2 Set5 beside our (empty) cell, in one column


def test_the_printed_sweep_commands_plan_the_cells_of_the_miniature(tmp_path):
    """What `kdbench paper dckd|fakd` tells the user to run makes the runs its miniature reads, on any CPU."""
    import shlex

    from kd.cli import build_parser
    from kd.cli.sweep_cmd import grid_layers
    from kd.report.miniature import DCKD, FAKD
    from kd.results.sweep import cell_config, expand_grid, parse_ints

    assert FAKD.pairs[1].student == ("san_fakd", "miniature_student")  # FAKD's SAN pair, in FAKD's own copy of SAN
    for spec, pair in [*((DCKD, pair) for pair in DCKD.pairs), (FAKD, FAKD.pairs[1])]:
        command, _ = spec.sweep_commands(pair)
        argv = shlex.split(command)
        assert argv[0] == "kdbench"
        args = build_parser().parse_args([*argv[1:], "--data-root", str(tmp_path)])
        _, layers, _ = grid_layers(args)
        cells = expand_grid([args.students], [args.teachers], args.methods.split(","), [4],
                            parse_ints(args.seeds, "--seeds"))
        configs = [cell_config(cell, layers, args.overrides) for cell in cells]
        assert sorted({(c.method.name, c.seed) for c in configs}) == sorted(
            (method, seed) for method in ("none", *spec.methods) for seed in spec.seeds)
        assert spec.seeds == (0, 1, 2, 3, 4)
        for config in configs:
            assert config.profile == "miniature" and (config.student.arch, config.student.preset) == pair.student
            assert config.accel.teacher_dtype == "fp32"
            if config.method.name != "none":
                assert (config.teacher.arch, config.teacher.preset) == pair.teacher
