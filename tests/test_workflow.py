"""A researcher's whole workflow from a fresh clone (issue 38): the README's code, a fresh clone reproducing the
committed grid, the demo's caveat, extending and initialising training, and the smaller points."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import kd
from conftest import REPO, shared_root
from kd.errors import KdError


def test_tests_find_the_shared_folder_through_the_environment(tmp_path):
    assert shared_root({"KDBENCH_SHARED": str(tmp_path)}) == tmp_path
    assert shared_root({}) == REPO.parent / "shared"
    assert shared_root({"KDBENCH_SHARED": ""}) == REPO.parent / "shared"


def test_load_official_names_the_preset_whose_shapes_fit(tmp_path):
    from kd.models.loading import matching_presets

    path = tmp_path / "teacher.pt"
    torch.save(kd.create_model("asid", scale=3, preset="tiny").state_dict(), path)  # a bare state dict, as the zoo
    with pytest.raises(KdError, match=r"preset 'tiny' at x3: build that one \(kd.load_official\('asid', path, "
                                      r"preset='tiny', scale=3\); --preset tiny --scale 3"):
        kd.load_official("asid", path)  # the paper preset at x4 by default
    state = torch.get_rng_state()
    assert matching_presets("asid", torch.load(path, weights_only=True), scale=4) == [("tiny", 3)]
    assert torch.equal(torch.get_rng_state(), state)  # trying the presets draws nothing from the caller's stream
    with pytest.raises(KdError) as other:
        kd.load_official("rcan", path, preset="tiny", scale=3)  # another network: no preset of RCAN can fit
    assert "Its keys and shapes" not in str(other.value)


@pytest.mark.parametrize("width", [80, 100])
@pytest.mark.parametrize(("description", "total"), [("asid/facd", 1000), ("teacher swinir_light", 1_000_000)])
def test_progress_bar_keeps_the_step_total_and_eta_whole(width, description, total):
    import io
    import re

    from rich.console import Console

    from kd.engine.progress import TrainingProgress

    terminal = Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)
    progress = TrainingProgress(terminal, description, every=10)
    progress.start(total, 0)
    try:
        progress.update(120, {"rec": 0.031234, "kd": 0.012345, "loss": 0.043210, "lr": 2e-4})
        screen = Console(file=io.StringIO(), width=width, record=True, color_system=None, force_terminal=True)
        screen.print(progress._bar.get_renderable())
    finally:
        progress.stop()
    (line,) = screen.export_text().splitlines()
    assert len(line) <= width and "…" not in line, line
    assert re.search(rf"{description} .* 120/{total} \d+:\d\d:\d\d ETA -:--:-- rec 0.03123( |$)", line), line


def _photos(folder: Path, count: int = 3, size: int = 64, seed: int = 0) -> Path:
    """A folder of small random RGB photographs (PNG) under `folder`/HR."""
    import numpy as np
    from PIL import Image

    (folder / "HR").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        pixels = rng.integers(0, 256, (size, size + 8 * index, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "HR" / f"img{index}.png")
    return folder


def test_own_data_run_says_once_where_it_validates_and_a_smoke_comparison_what_it_cannot_show(
        tmp_path, monkeypatch, capsys, one_torch_thread):
    from kd.cli import main
    from kd.engine.run import validation_note
    from kd.profiles import profile_layer, resolve_layers

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    photos = _photos(tmp_path / "MyPhotos")
    assert main(["run", "--profile", "smoke", "--teacher", "rcan", "--method", "logits", "--out-dir",
                 str(tmp_path / "runs"), "--no-progress", "--set", f"data.train={photos}", "--set",
                 f"eval.datasets=[{photos}]", "--set", "train.steps=3", "--set", "teacher.train.steps=2"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count(f"the run trains on your data ({photos}) but validates on eval.val_dataset "
                              "'default', the profile's") == 1
    assert ("note: the smoke profile shows the pipeline, not which method is better: one seed, 3 test images and 3 "
            "steps cannot rank methods") in captured.out
    assert "reports/cpu-x4-3seeds/report.html" in captured.out
    own_validation = resolve_layers([profile_layer("smoke"), ("test", {"data": {"train": str(photos)},
                                                                        "eval": {"val_dataset": str(photos)}})])
    assert validation_note(own_validation) is None  # validated on the user's own images: nothing to say
    assert validation_note(resolve_layers([profile_layer("smoke")])) is None  # the profile's own data


def test_the_demo_profile_names_its_limits_and_the_committed_report():
    from kd.cli.run_cmd import comparison_caveat
    from kd.profiles import resolve_layers, profile_layer

    config = resolve_layers([profile_layer("demo"), ("test", {"method": {"name": "facd"}})])
    caveat = comparison_caveat(config, {"steps": 150, "dataset_images": {"default": 3}})
    assert caveat.startswith("the demo profile shows the pipeline, not which method is better: one seed, 3 test "
                             "images and 150 steps cannot rank methods")
    assert (REPO / "reports" / "cpu-x4-3seeds" / "report.html").is_file() and "cpu-x4-3seeds/report.html" in caveat
    assert comparison_caveat(resolve_layers([profile_layer("cpu")]), {"steps": 1000}) is None


# ------------------------------------------------------------------------------ a fresh clone reproduces the grid

RCAN_EXPORT = REPO / "reports" / "teachers" / "rcan-mini-x4-291-train-seed0-1cc6ff"


def _readme_commands(prefix: str) -> list[str]:
    """Every `kdbench ...` code span of the README that starts with `prefix`, whitespace normalised (a span may
    run over a line break)."""
    import re

    spans = re.findall(r"`(kdbench [^`]+)`", (REPO / "README.md").read_text(encoding="utf-8"))
    return [" ".join(span.split()) for span in spans if " ".join(span.split()).startswith(prefix)]


def test_a_failed_run_leaves_no_zoo_entry_and_the_committed_teachers_import_after_any_failed_attempt(
        tmp_path, monkeypatch, capsys):
    from kd.cli import main

    cache = tmp_path / "cache"
    monkeypatch.setenv("KDBENCH_CACHE", str(cache))
    empty = tmp_path / "data"
    empty.mkdir()
    # a fresh clone without T91/BSD200: the run says how to get them before it trains any teacher
    assert main(["run", "--teacher", "rcan", "--method", "fitnet", "--data-root", str(empty), "--out-dir",
                 str(tmp_path / "runs")]) == 2
    assert "kdbench data download T91" in capsys.readouterr().err
    zoo = cache / "teachers"
    assert not zoo.exists() or not [p for p in zoo.iterdir() if p.is_dir()]
    # what failed or interrupted trainings leave (older kdbench versions left the empty folder) is replaced
    entry = zoo / RCAN_EXPORT.name
    for leftovers in ([], ["train.log", "metrics.jsonl", "checkpoints/last.pt", "checkpoints/.last.pt.1x2.tmp"]):
        entry.mkdir(parents=True, exist_ok=True)
        for name in leftovers:
            (entry / name).parent.mkdir(exist_ok=True)
            (entry / name).write_bytes(b"partial")
        assert main(["teacher", "import", str(RCAN_EXPORT.parent)]) == 0
        assert (entry / "teacher.pt").read_bytes() == (RCAN_EXPORT / "teacher.pt").read_bytes()
        assert not (entry / "checkpoints").exists()
        for name in ("teacher.pt", "teacher.json"):
            (entry / name).unlink()
    (entry / "notes.txt").write_text("mine")  # a file kdbench did not write is never removed
    assert main(["teacher", "import", str(RCAN_EXPORT)]) == 2
    assert "holds" in capsys.readouterr().err and (entry / "notes.txt").read_text() == "mine"


def test_sweep_dry_run_names_the_teachers_that_can_be_imported(tmp_path, monkeypatch, capsys):
    import shutil

    from kd.cli import main
    from kd.engine.teachers import exported_teachers

    assert exported_teachers()[RCAN_EXPORT.name] == RCAN_EXPORT  # a checkout's committed teachers, always
    copy = tmp_path / "elsewhere" / RCAN_EXPORT.name
    shutil.copytree(RCAN_EXPORT, copy)
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    assert main(["sweep", "--dry-run", "--profile", "cpu", "--teachers", "rcan,han", "--methods", "logits",
                 "--teacher-exports", str(copy.parent), "--data-root", str(tmp_path / "no-data"), "--out-dir",
                 str(tmp_path / "runs")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"`kdbench teacher import {copy}` adds it without training" in out  # the folder given first
    assert "teacher han-mini-x4-291-train-seed0-" in out and "is not in the zoo: trained first" in out
    assert "(teachers that can be imported not counted)" in out
    assert not (tmp_path / "runs").exists()


def test_a_fresh_clone_reproduces_the_committed_grid_with_zero_cells_to_train(shared_data, tmp_path, monkeypatch,
                                                                               capsys):
    """The issue's done-when: with the data in place and a fresh cache, importing the committed teachers and
    planning the README's cpu-grid sweep against the committed records leaves nothing to train (dry run only)."""
    from kd.cli import main

    (command,) = _readme_commands("kdbench sweep --profile cpu --teachers rcan,swinir")
    assert "--records reports/cpu-x4-3seeds/records" in command
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KDBENCH_DATA", str(shared_data))
    monkeypatch.chdir(REPO)  # the README's paths are relative to the checkout
    assert main(["teacher", "import", "reports/teachers"]) == 0
    capsys.readouterr()
    runs = tmp_path / "runs"
    assert main([*command.split()[1:], "--dry-run", "--out-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "estimated training time: 0s for 0 cell(s) to run" in out, out
    assert out.count("recorded in") == 39 and "not in the zoo" not in out
    assert not runs.exists()  # a dry run trains and writes nothing
    # the shipped config of one grid cell is that cell: its run id is a committed record's
    from kd.config import run_id
    from kd.engine.identity import run_inputs

    config = _file_config(REPO / "configs" / "cpu-x4-grid-cell.yaml")
    assert (REPO / "reports" / "cpu-x4-3seeds" / "records" / run_id(config, run_inputs(config))).is_dir()


# ------------------------------------------------------------------------------------------ the README's code


def _readme() -> str:
    return (REPO / "README.md").read_text(encoding="utf-8")


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    import re

    return re.findall(r"^```(\w*)\n(.*?)^```$", text, re.M | re.S)


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else len(text)]


def _variants(command: str) -> list[list[str]]:
    """The concrete command lines a README synopsis stands for: without and with its optional `[...]` parts, and
    each alternative of `a\\|b` (placeholders become sample values)."""
    import re
    import shlex

    minimal = command
    while re.search(r"\[[^\[\]]*\]", minimal):
        minimal = re.sub(r"\s*\[[^\[\]]*\]", "", minimal)
    maximal = command.replace("[", "").replace("]", "")
    lines = []
    for form in dict.fromkeys((minimal, maximal)):
        tokens = shlex.split(form.replace("\\|", "|"))
        choices = max(len(token.split("|")) for token in tokens)
        for pick in range(choices):
            line = [token.split("|")[min(pick, len(token.split("|")) - 1)] for token in tokens]
            lines.append(["2" if token == "N" else token for token in line])
    return lines


def test_every_command_of_the_quickstart_and_the_command_table_parses():
    """Parsed by kdbench's own argument parser (nothing runs): a renamed option or command fails here."""
    import re

    from kd.cli import build_parser

    text = _readme()
    quickstart = _section(text, "Quickstart")
    commands = [" ".join(span.split()) for span in re.findall(r"`(kdbench [^`]+)`", quickstart)]
    table = [line for line in _section(text, "Commands").splitlines() if line.startswith("| `kdbench")]
    commands += [span for line in table for span in re.findall(r"`(kdbench [^`]+)`", line.split(" | ")[0])]
    (make_block,) = [body for language, body in _fenced_blocks(quickstart) if not language]
    targets = make_block.split()[1::2]
    assert make_block.split()[::2] == ["make"] * len(targets) and targets == ["demo", "test"]
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    for target in targets:
        recipe = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
        commands += [line.strip().removeprefix("$(BIN)/") for line in recipe.splitlines() if "kdbench " in line]
    assert len(table) >= 10 and any("--profile demo" in c for c in commands)
    parser = build_parser()
    for command in commands:
        for argv in _variants(command):
            assert argv[0] == "kdbench", command
            try:
                args = parser.parse_args(argv[1:])
            except SystemExit:
                pytest.fail(f"the README's `{command}` does not parse as {argv}")
            assert getattr(args, "handler", None) is not None, argv


def test_the_readme_s_other_blocks_are_the_plugin_entry_point_and_the_api_example():
    import tomllib

    blocks = _fenced_blocks(_readme())
    assert [language for language, _ in blocks] == ["", "", "python"]  # make, the entry point, the API example
    declared = tomllib.loads(blocks[1][1])
    example = tomllib.loads((REPO / "examples" / "kdbench-plugin-example" / "pyproject.toml").read_text())
    assert declared["project"]["entry-points"] == example["project"]["entry-points"]


def test_the_readme_api_example_runs(tmp_path, monkeypatch, capsys, one_torch_thread):
    """The README's Python block, run with the smoke profile, a tiny RCAN as the teacher object, a few steps and
    a folder of photographs (every substitution must find its text, so the README cannot drift from this test)."""
    from kd.models.loading import package_model

    (code,) = [body for language, body in _fenced_blocks(_readme()) if language == "python"]
    for old, new in (('profile="cpu"', 'profile="smoke"'), ('"steps": 2000', '"steps": 2'),
                     ('preset="paper"', 'preset="tiny"')):
        assert old in code, f"the README's API example no longer holds {old}"
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path / "data"))
    for name in ("Set5", "Set14"):
        _photos(tmp_path / "data" / name, count=2, size=48, seed=len(name))
    _photos(tmp_path / "MyPhotos")
    torch.save(package_model(kd.create_model("rcan", scale=4, preset="tiny")), tmp_path / "RCAN_BIX4.pt")
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("asid-facd-rcan-x4-smoke-s0-") and str(run_dir.name) in printed
    assert "'Set5'" in printed and "'Set14'" in printed


def test_api_objects_that_are_what_the_command_line_builds_get_its_run_id(tmp_path, monkeypatch, capsys,
                                                                          one_torch_thread):
    from kd.cli import main
    from kd.engine.identity import network_label

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    runs = tmp_path / "runs"
    assert main(["run", "--profile", "smoke", "--teacher", "rcan", "--method", "logits", "--out-dir", str(runs),
                 "--no-progress"]) == 0
    (cli_run,) = runs.iterdir()
    capsys.readouterr()
    (zoo_entry,) = (p for p in (tmp_path / "cache" / "teachers").iterdir() if p.is_dir())
    teacher = kd.load_official("rcan", zoo_entry / "teacher.pt", preset="tiny")  # the zoo's weights
    torch.manual_seed(0)  # as `kdbench run` seeds right before it builds the student
    student = kd.create_model("asid", scale=4, preset="tiny")
    same = kd.distill(student=student, teacher=teacher, method="logits", profile="smoke", runs_dir=runs)
    assert same.already_finished and same.run_dir == cli_run
    # other weights: the same names in the configuration, the weights' fingerprint in the run id
    teacher.tail[1].bias.data += 0.01  # the last conv of RCAN
    other = kd.distill(student=student, teacher=teacher, method="logits", profile="smoke", runs_dir=runs,
                       train={"steps": 2})
    assert not other.already_finished and other.run_dir.name.startswith("asid-logits-rcan-x4-smoke-s0-")
    assert other.summary["teacher"]["arch"] == "rcan" and other.summary["teacher"]["preset"] == "tiny"
    assert other.summary["inputs"]["teacher"] == {"source": "object", "label": network_label(teacher)}
    assert "student" not in other.summary["inputs"]  # the seeded student is the command line's


# ------------------------------------------------------------------------ extending and initialising training


def test_raising_train_steps_extends_a_finished_run_as_a_new_linked_run(tmp_path, monkeypatch, capsys,
                                                                         one_torch_thread):
    import json

    from kd.cli import main
    from kd.report.runs import scan_runs

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    runs = tmp_path / "runs"
    common = ["run", "--profile", "smoke", "--method", "none", "--out-dir", str(runs), "--no-progress", "--set",
              "eval.val_dataset=null"]
    assert main(common) == 0
    (base,) = runs.iterdir()
    assert main([*common, "--set", "train.steps=9"]) == 0
    printed = capsys.readouterr()
    assert f"extending run {base.name} (finished at step 6) to 9 steps" in printed.err
    (extended,) = set(runs.iterdir()) - {base}
    summary = json.loads((extended / "summary.json").read_text())
    assert summary["steps"] == 9 and summary["extends"] == {"run_id": base.name, "steps": 6}
    assert summary["inputs"]["extends"] == summary["extends"]  # in the run id: never a 9-step run from scratch
    assert f"note: run {extended.name} continues run {base.name} from its step 6 to 9 steps" in printed.out
    steps = [r["step"] for r in map(json.loads, (extended / "metrics.jsonl").read_text().splitlines())]
    assert steps == list(range(1, 10))  # the base's log carried over, then the steps trained here
    base_log = (base / "metrics.jsonl").read_text().splitlines()
    assert (extended / "metrics.jsonl").read_text().splitlines()[:6] == base_log
    assert any(note.startswith(f"run {extended.name} continues run {base.name}") for note in scan_runs(runs).notes)
    # the same command finds it again; --restart trains a 9-step run from scratch, with its own id
    assert main([*common, "--set", "train.steps=9"]) == 0
    assert "is already finished" in capsys.readouterr().err
    assert main([*common, "--set", "train.steps=9", "--restart"]) == 0
    scratch = set(runs.iterdir()) - {base, extended}
    (scratch_run,) = scratch
    assert "extends" not in json.loads((scratch_run / "summary.json").read_text())


def test_a_student_starts_from_a_checkpoint_identified_by_its_content(tmp_path, monkeypatch, capsys,
                                                                      one_torch_thread):
    import hashlib
    import json
    import shutil

    from kd.cli import main

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    start = tmp_path / "start.pt"
    torch.save(kd.create_model("asid", scale=4, preset="tiny").state_dict(), start)  # an official-style file
    runs = tmp_path / "runs"
    common = ["run", "--profile", "smoke", "--method", "none", "--out-dir", str(runs), "--no-progress", "--set",
              "train.lr=1e-9", "--set", "train.steps=2", "--set", "eval.val_dataset=null"]
    assert main([*common, "--set", f"student.init={start}"]) == 0
    (run,) = runs.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["inputs"]["student"] == {"init_sha256": hashlib.sha256(start.read_bytes()).hexdigest()}
    trained = torch.load(run / "student.pt", weights_only=True)["state_dict"]
    initial = torch.load(start, weights_only=True)
    assert all(torch.allclose(trained[k], initial[k], atol=1e-6) for k in initial)  # it started from the file
    moved = tmp_path / "elsewhere" / "renamed.pt"
    moved.parent.mkdir()
    shutil.copy(start, moved)
    assert main([*common, "--set", f"student.init={moved}"]) == 0  # the same weights: the same run
    assert "is already finished" in capsys.readouterr().err and len(list(runs.iterdir())) == 1
    assert main([*common]) == 0  # without it: the seeded student, another run
    assert len(list(runs.iterdir())) == 2
    assert main([*common, "--set", f"student.init={tmp_path / 'missing.pt'}"]) == 2
    assert "student.init" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ configs/

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def _file_config(path: Path, *extra: str):
    """The configuration `kdbench run --config path *extra` resolves to (nothing runs)."""
    from kd.cli import build_parser
    from kd.cli.run_cmd import build_config

    return build_config(build_parser().parse_args(["run", "--config", str(path), *extra]), {})


def test_each_shipped_config_is_the_published_setting_it_names():
    import yaml

    from kd.engine.run import check_names
    from kd.report.miniature import PAIRS, PROFILE
    from kd.report.paper import DCKD_PROFILE, FAKD_PROFILE, MODEL_MAP, TEACHER_OF

    assert len(CONFIGS) >= 7
    for path in CONFIGS:
        config = _file_config(path)
        check_names(config, pairing=False)
        assert config.profile == yaml.safe_load(path.read_text())["profile"], path
        assert path.read_text().startswith("# ") and f"--config configs/{path.name}" in path.read_text(), path
    by_name = {path.stem: _file_config(path) for path in CONFIGS}

    def pair(config):
        return ((config.student.arch, config.student.preset), (config.teacher.arch, config.teacher.preset),
                config.method.name, config.profile)

    rcan_pair = (MODEL_MAP["rcan_10x6"], (TEACHER_OF["rcan_10x6"], "paper"))
    assert pair(by_name["fakd-table3-rcan-x4"]) == (*rcan_pair, "fakd", FAKD_PROFILE)
    assert pair(by_name["dckd-table2-rcan-x4"]) == (*rcan_pair, "dckd", DCKD_PROFILE)
    assert pair(by_name["dckd-table2-swinir-x4"]) == (MODEL_MAP["swinir_e60"], ("swinir", "paper"), "dckd",
                                                      DCKD_PROFILE)
    assert by_name["fakd-table3-rcan-x4"].train.steps == 200_000  # the profile's recipe, not the file's
    for mini in PAIRS:
        config = by_name[f"miniature-dckd-{mini.name.lower()}-x4"]
        assert pair(config)[:2] == (mini.student, mini.teacher) and config.profile == PROFILE
        assert config.accel.teacher_dtype == "fp32"  # as every miniature cell's


def test_each_shipped_config_runs_at_the_smoke_profile(tmp_path, monkeypatch, capsys, one_torch_thread):
    """Every file, with its sizes overridden (smoke profile, tiny presets), trains and evaluates end to end."""
    from kd.cli import main

    assert CONFIGS
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))  # one zoo: each tiny teacher is trained once
    photos = _photos(tmp_path / "photos", count=1, size=64)
    small = ["--profile", "smoke", "--set", "student.preset=tiny", "--set", "teacher.preset=tiny", "--set",
             "train.steps=4", "--set", "teacher.train.steps=2", "--set", f"eval.datasets=[{photos}]", "--set",
             "eval.val_dataset=null", "--out-dir", str(tmp_path / "runs"), "--no-progress"]
    for path in CONFIGS:
        assert main(["run", "--config", str(path), *small]) == 0, (path, capsys.readouterr().err)
        assert "finished" in capsys.readouterr().err  # "run finished", or "already finished" (the same tiny pair)
