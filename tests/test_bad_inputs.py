"""The hostile-user matrix (issues 13 and 35): every command fed bad input or a faulty environment ends with one clear
line naming the culprit and the right exit code; no traceback, no deleted or replaced user file (their sha256 is
compared before and after), no stale result, no file written outside the folder the user named.

Runs use the smoke profile with 2 steps and no periodic validation; caches and data live in tmp_path. Costly
products (a finished run, a report, an exported teacher) are made once per module and copied.
"""

from __future__ import annotations

import gc
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from kd.cli import main

REPO = Path(__file__).resolve().parents[1]
# Smoke runs of 2 steps on small images in the module's data root (`shared_data`): T91 (6 x 80 px) for training,
# Set5 (5 x 48 px) for evaluation.
FAST = ["--profile", "smoke", "--no-progress", "--set", "eval.val_dataset=null", "--set", "train.steps=2",
        "--set", "eval.datasets=[Set5]", "--set", "data.train=T91"]
NO_GPU = not torch.cuda.is_available()


# ------------------------------------------------------------------------------------------------ helpers


def _repo_state() -> str:
    try:
        return subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True,
                              timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One kdbench cache for the module (generated LR images, fingerprints): runs after the first are fast."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    _dataset(root, "Set5", [48] * 5)
    _dataset(root, "T91", [80] * 6, seed=2)
    return root


@pytest.fixture(autouse=True, scope="module")
def no_cost_scatter():
    """Reports here are built for their file handling; the cost scatter's label placement (most of a small report's
    time) is tested in test_report.py, so this module's reports leave it out."""
    import kd.report.plots

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kd.report.plots, "cost_scatter", lambda *args, **kwargs: (None, []))
        yield


@pytest.fixture(autouse=True)
def sandbox(tmp_path, monkeypatch, shared_cache, shared_data):
    """Every path kdbench could default to points into a temporary folder; the repository is unchanged after."""
    for name in ("data", "home"):
        (tmp_path / name).mkdir(exist_ok=True)
    monkeypatch.setenv("KDBENCH_CACHE", str(shared_cache))
    monkeypatch.setenv("KDBENCH_DATA", str(shared_data))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home" / ".cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("KDBENCH_DEBUG", raising=False)
    monkeypatch.delenv("KDBENCH_MAX_PIXELS", raising=False)
    monkeypatch.chdir(tmp_path)
    before = _repo_state()
    yield tmp_path
    assert _repo_state() == before, "a file in the repository was written"


def cli(capsys, *argv: str) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def flat(text: str) -> str:
    return " ".join(text.split())


def check(result: tuple[int, str], code: int, *culprits: str) -> str:
    """Exit `code`, no traceback, every culprit named; a failure is exactly one `error:` line, the last one."""
    status, text = result
    assert "Traceback" not in text, text
    assert status == code, text
    for culprit in culprits:
        assert culprit in flat(text), f"{culprit!r} not named in: {text}"
    if code != 0:
        lines = [line for line in text.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        assert len(errors) == 1 and lines[-1] == errors[0], f"not one error line: {text}"
    return text


def tree(root: Path) -> dict[str, str]:
    """Every entry under `root` (links not followed): sha256 of each file, the target of each link, 'dir' for folders.
    The sandbox's home folder is left out (libraries may keep caches there)."""
    entries = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if key == "home" or key.startswith("home/"):
            continue
        if path.is_symlink():
            entries[key] = f"-> {os.readlink(path)}"
        elif path.is_dir():
            entries[key] = "dir"
        else:
            entries[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return entries


def refused(capsys, root: Path, *argv, says: tuple[str, ...] = (), code: int = 2) -> str:
    """The command fails with one line naming `says`, and nothing under `root` is added, changed or removed."""
    before = tree(root)
    text = check(cli(capsys, *argv), code, *says)
    assert tree(root) == before, "the refused command changed files"
    return text


def kept(before: dict[str, str], root: Path) -> None:
    """Every file of `before` (a `tree`) is still there with the same content."""
    after = tree(root)
    changed = {k: v for k, v in before.items() if after.get(k) != v}
    assert not changed, f"user files lost or changed: {sorted(changed)}"


def _png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (the pixel data is absent)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _dataset(root: Path, name: str, sizes: list[int], seed: int = 0) -> Path:
    from kd.data.io import write_png

    folder = root / name / "HR"
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    for i, size in enumerate(sizes):
        write_png(folder / f"img{i}.png", torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8))
    return folder


def _unmount(path: Path) -> None:
    gc.collect()  # a caught exception's frames may still hold a file open on the mount
    subprocess.run(["umount", "-l", str(path)], check=False)


def _mount_tmpfs(path: Path, options: str) -> bool:
    if os.geteuid() != 0:
        return False
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder nobody may write: a read-only tmpfs as root, chmod 0555 otherwise."""
    folder = tmp_path / "readonly"
    if os.geteuid() == 0:
        if not _mount_tmpfs(folder, "ro,size=64k"):
            pytest.skip("running as root without permission to mount a tmpfs")
        yield folder
        _unmount(folder)
    else:
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)


@pytest.fixture
def full_disk(tmp_path):
    """A 256 KiB tmpfs (root only), filled up to its last few KiB."""
    folder = tmp_path / "full"
    if not _mount_tmpfs(folder, "size=256k"):
        pytest.skip("the disk-full cases mount a small tmpfs: they need root")
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    yield folder
    _unmount(folder)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, shared_cache, shared_data):
    """(runs folder, run folder) of one finished smoke run, made once; tests copy it before changing it."""
    root = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KDBENCH_CACHE", str(shared_cache))
        patch.setenv("KDBENCH_DATA", str(shared_data))
        patch.setenv("OMP_NUM_THREADS", "1")
        assert main(["run", "--method", "none", "--out-dir", str(root / "runs"), *FAST]) == 0
    (run_dir,) = (root / "runs").iterdir()
    return root / "runs", run_dir


@pytest.fixture
def runs_copy(finished, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(finished[0], runs)
    return runs, runs / finished[1].name


# ------------------------------------------------------------------------------------------------ report --out


def test_report_out_equal_to_runs_is_refused(capsys, runs_copy):
    runs, run_dir = runs_copy
    check(cli(capsys, "report", "--runs", runs, "--out", runs), 2, "inside --runs")
    assert (run_dir / "summary.json").is_file() and (run_dir / "checkpoints" / "last.pt").is_file()


def test_report_out_inside_runs_is_refused(capsys, runs_copy):
    runs, run_dir = runs_copy
    check(cli(capsys, "report", "--runs", runs, "--out", runs / "report"), 2, "inside --runs")
    assert not (runs / "report").exists()


def test_report_out_holding_the_runs_is_refused(capsys, runs_copy, tmp_path):
    runs, run_dir = runs_copy
    check(cli(capsys, "report", "--runs", runs, "--out", tmp_path), 2, "contains --runs")
    assert (run_dir / "summary.json").is_file()


def test_report_never_replaces_a_users_folder(capsys, runs_copy, tmp_path):
    notes = tmp_path / "mine" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("my notes")
    check(cli(capsys, "report", "--runs", runs_copy[0], "--out", notes.parent, "--force"), 2, "did not write",
          str(notes.parent))
    assert notes.read_text() == "my notes"


def test_report_replaces_an_earlier_report_only_with_force(capsys, runs_copy, tmp_path):
    out = tmp_path / "rep"
    summary = runs_copy[1] / "summary.json"
    record = json.loads(summary.read_text())
    record["dataset_images"]["Set5"] = 2  # evaluated on a partial Set5: the report flags it
    summary.write_text(json.dumps(record))
    check(cli(capsys, "report", "--runs", runs_copy[0], "--out", out, "--visual-images", "0"), 0, "report.html",
          "Set5 holds 2 of its 5 images")
    first = (out / "report.md").stat().st_mtime_ns
    check(cli(capsys, "report", "--runs", runs_copy[0], "--out", out, "--visual-images", "0"), 2, "--force",
          str(out))
    assert (out / "report.md").stat().st_mtime_ns == first
    check(cli(capsys, "report", "--runs", runs_copy[0], "--out", out, "--visual-images", "0", "--force"), 0)
    assert (out / ".kdbench-report").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".rep")) == []  # no temp/old folders


def test_report_out_is_a_file(capsys, runs_copy, tmp_path):
    (tmp_path / "file.txt").write_text("x")
    check(cli(capsys, "report", "--runs", runs_copy[0], "--out", tmp_path / "file.txt"), 2, "file.txt", "is a file")
    assert (tmp_path / "file.txt").read_text() == "x"


def test_report_into_a_read_only_folder(capsys, runs_copy, readonly_dir):
    check(cli(capsys, "report", "--runs", runs_copy[0], "--out", readonly_dir / "rep", "--visual-images", "0"), 2,
          str(readonly_dir))


def test_report_on_a_full_disk(capsys, runs_copy, full_disk):
    text = check(cli(capsys, "report", "--runs", runs_copy[0], "--out", full_disk / "rep", "--visual-images", "0"),
                 2, str(full_disk))
    assert "full" in text or "space" in text
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]  # no half-written report or temp folder


def test_report_missing_runs_and_bad_option(capsys, tmp_path):
    check(cli(capsys, "report", "--runs", tmp_path / "nowhere", "--out", tmp_path / "r"), 2, "nowhere")
    check(cli(capsys, "report", "--visual-images", "-1"), 2, "--visual-images")


def test_report_never_writes_a_record_outside_out_for_a_hostile_run_id(capsys, runs_copy, tmp_path):
    """A record folder is named by its summary's run_id: one such as `../../escaped` is refused where the summary is
    read (the run is left out, named with the reason), so no record lands beside the report."""
    runs, run_dir = runs_copy
    hostile = runs / "hostile"
    shutil.copytree(run_dir, hostile)
    summary = json.loads((hostile / "summary.json").read_text())
    (hostile / "summary.json").write_text(json.dumps({**summary, "run_id": "../../escaped"}))
    out = tmp_path / "reports" / "rep"
    before = tree(tmp_path)
    check(cli(capsys, "report", "--runs", runs, "--out", out, "--visual-images", "0"), 0, "run hostile is left out",
          "summary.json", "'../../escaped' is not one file name")
    assert {k: v for k, v in tree(tmp_path).items() if not k.startswith("reports")} == before
    assert sorted(p.name for p in tmp_path.joinpath("reports").iterdir()) == ["rep"]
    assert [p.name for p in (out / "records").iterdir()] == [run_dir.name]

    shutil.rmtree(run_dir)  # the hostile run alone: refused, named, nothing written
    refused(capsys, tmp_path, "report", "--runs", runs, "--out", tmp_path / "other",
            says=("no finished run that can be read", "run hostile is left out", "not one file name"))


def _replace_many(target: str, count: int) -> None:
    import tempfile

    from kd.report import REPORT_MARKER, _out_lock, _replace_dir

    target_path = Path(target)
    for _ in range(count):
        work = Path(tempfile.mkdtemp(dir=target_path.parent, prefix=f".{target_path.name}.tmp-"))
        (work / REPORT_MARKER).write_text("x")
        with _out_lock(target_path):
            _replace_dir(work, target_path)


def test_concurrent_report_replacement_is_safe(tmp_path):
    target = tmp_path / "reports" / "grid"
    target.parent.mkdir()
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_replace_many, args=(str(target), 40)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    assert [p.name for p in target.parent.iterdir()] == ["grid"]  # no leftover .tmp / .old folders
    assert (target / ".kdbench-report").is_file()


# ------------------------------------------------------------------------------------------------ run: config


@pytest.mark.parametrize("setting, culprit", [
    ("train.lr=.nan", "train.lr"),
    ("train.lr=-1e-3", "train.lr"),
    ("train.lr=0", "train.lr"),
    ("teacher.train.lr=.inf", "teacher.train.lr"),
    ("train.betas=[1.5, 0.9]", "train.betas"),
    ("train.steps=0", "train.steps"),
    ("train.grad_clip=-1", "train.grad_clip"),
    ("train.milestones=[-0.5]", "train.milestones"),
    ("train.nosuch=1", "train.nosuch"),
    ("device=tpu", "tpu"),
    # issue 35: every integer field and every named choice is checked with its key, before anything is written
    ("data.workers=-1", "data.workers"),
    ("accel.compile=bogus", "accel.compile='bogus'"),
    ("teacher.seed=-1", "teacher.seed"),
    ("seed=4294967296", "seed"),
    ("seed=1.5", "seed"),
    ("threads=-2", "threads"),
    ("scale=0", "scale"),
    ("cluster.mem_gb=0", "cluster.mem_gb"),
    ("cluster.timeout_min=0", "cluster.timeout_min"),
    ("train.val_every=-1", "train.val_every"),
    ("train.lr_patch=0", "train.lr_patch"),
    ("train.optimizer=sgd", "train.optimizer"),
    ("train.schedule=linear", "train.schedule"),
    ("train.ema_decay=1", "train.ema_decay"),
    ("eval.weights=worst", "eval.weights"),
    ("accel.precision=fp16", "accel.precision"),
    ("accel.teacher_dtype=int8", "accel.teacher_dtype"),
    ("method.weights.nosuch=1", "nosuch"),
])
def test_bad_config_values_fail_before_a_run_folder_exists(capsys, tmp_path, setting, culprit):
    check(cli(capsys, "run", "--method", "none", "--out-dir", tmp_path / "runs", *FAST, "--set", setting), 2,
          culprit)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("flag, value", [("--seed", "-1"), ("--threads", "-3"), ("--scale", "0")])
def test_bad_numeric_flags_are_named(capsys, tmp_path, flag, value):
    refused(capsys, tmp_path, "run", "--method", "none", "--out-dir", tmp_path / "runs", *FAST, flag, value,
            says=(flag, value))


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
def test_run_on_cuda_without_a_gpu(capsys, tmp_path):
    check(cli(capsys, "run", "--method", "none", "--out-dir", tmp_path / "runs", *FAST, "--set", "device=cuda"), 2,
          "cuda", "CUDA is not available")
    assert not (tmp_path / "runs").exists()  # the device is checked before anything is written


def test_config_file_problems(capsys, tmp_path):
    check(cli(capsys, "run", "--config", tmp_path / "none.yaml", "--out-dir", tmp_path / "runs"), 2, "none.yaml")
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    check(cli(capsys, "run", "--config", tmp_path / "bad.yaml", "--out-dir", tmp_path / "runs"), 2, "bad.yaml")
    (tmp_path / "evil.yaml").write_text("train: !!python/object/apply:os.system ['touch pwned']\n")
    check(cli(capsys, "run", "--config", tmp_path / "evil.yaml", "--out-dir", tmp_path / "runs"), 2, "evil.yaml")
    assert not (tmp_path / "pwned").exists()


def test_teacher_checkpoint_missing_or_garbage(capsys, tmp_path):
    runs = tmp_path / "runs"
    check(cli(capsys, "run", "--method", "logits", "--teacher-ckpt", tmp_path / "no.pt", "--teacher-preset", "tiny",
              "--out-dir", runs, *FAST), 2, "no.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    check(cli(capsys, "run", "--method", "logits", "--teacher-ckpt", tmp_path / "junk.pt", "--teacher-preset", "tiny",
              "--out-dir", runs, *FAST), 2, "junk.pt")
    assert not any(runs.iterdir())  # a failed start leaves no empty run folder that sweeps would list


def test_runs_folder_is_a_file_or_read_only(capsys, tmp_path, readonly_dir):
    (tmp_path / "afile").write_text("x")
    check(cli(capsys, "run", "--method", "none", "--out-dir", tmp_path / "afile", *FAST), 2, "afile")
    check(cli(capsys, "run", "--method", "none", "--out-dir", readonly_dir / "runs", *FAST), 2, "readonly")


def test_missing_dataset_is_named_and_leaves_no_run_folder(capsys, tmp_path):
    runs = tmp_path / "runs"
    _dataset(tmp_path / "data", "T91", [80] * 6)
    check(cli(capsys, "run", "--method", "none", "--out-dir", runs, *FAST, "--data-root", tmp_path / "data"), 2,
          "Set5", "kdbench data download Set5")
    assert not any(runs.iterdir())


def test_run_on_a_full_disk(capsys, tmp_path, full_disk):
    text = check(cli(capsys, "run", "--method", "none", "--out-dir", full_disk / "runs", *FAST), 2, str(full_disk))
    assert "full" in text


# ------------------------------------------------------------------------------------------------ run: records


def test_damaged_summary_is_rebuilt_by_the_same_command(capsys, runs_copy):
    runs, run_dir = runs_copy
    (run_dir / "summary.json").write_text('{"run_id": "x", "datas')
    check(cli(capsys, "results", "--runs", runs), 2, "summary.json", "re-run the same command")
    text = check(cli(capsys, "run", "--method", "none", "--out-dir", runs, *FAST), 0, "summary.json", "damaged")
    assert "run finished" in text
    assert json.loads((run_dir / "summary.json").read_text())["datasets"]


def test_damaged_last_checkpoint_names_the_remedy_and_restart_works(capsys, runs_copy):
    runs, run_dir = runs_copy
    (run_dir / "summary.json").unlink()
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"\0garbage")
    check(cli(capsys, "run", "--method", "none", "--out-dir", runs, *FAST), 2, "last.pt", "--restart")
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == b"\0garbage"  # nothing deleted unasked
    check(cli(capsys, "run", "--method", "none", "--out-dir", runs, *FAST, "--restart"), 0, "run finished")
    assert (run_dir / "summary.json").is_file()


def test_run_files_follow_the_umask(capsys, finished):
    run_dir = finished[1]
    mask = os.umask(0o022)
    os.umask(mask)
    for name in ("summary.json", "config.yaml", "checkpoints/last.pt", "student.pt", "eval/per_dataset.csv"):
        assert (run_dir / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_results_problems(capsys, tmp_path, runs_copy):
    check(cli(capsys, "results", "--runs", tmp_path / "nowhere"), 2, "nowhere")
    check(cli(capsys, "results", "--runs", runs_copy[0], "--format", "parquet"), 2, "--out")


# ------------------------------------------------------------------------------------------------ stale results


def test_changed_evaluation_images_are_a_new_run(capsys, tmp_path):
    data, runs = tmp_path / "data", tmp_path / "runs"
    hr = _dataset(data, "Set5", [48] * 5)
    _dataset(data, "T91", [80] * 6)
    argv = ["run", "--method", "none", "--out-dir", runs, *FAST, "--set", "eval.datasets=[Set5]", "--data-root", data]
    check(cli(capsys, *argv), 0, "run finished")
    check(cli(capsys, *argv), 0, "already finished")
    _dataset(data, "Set5", [48] * 5, seed=1)  # same names and sizes, other pixels
    check(cli(capsys, *argv), 0, "run finished")
    assert len(list(runs.iterdir())) == 2
    (hr / "img4.png").unlink()  # an image removed: a partial set, flagged beside the reference comparison
    check(cli(capsys, *argv), 0, "run finished", "Set5 holds 4 of its 5 images", "published numbers")
    assert len(list(runs.iterdir())) == 3


def test_teacher_checkpoint_retrained_in_place_is_a_new_run(capsys, tmp_path):
    from kd.models import create

    ckpt, runs = tmp_path / "teacher.pt", tmp_path / "runs"
    torch.manual_seed(0)
    torch.save(create("rcan", 4, "tiny").state_dict(), ckpt)
    argv = ["run", "--method", "logits", "--teacher-ckpt", ckpt, "--teacher-preset", "tiny", "--out-dir", runs, *FAST]
    check(cli(capsys, *argv), 0, "run finished")
    check(cli(capsys, *argv), 0, "already finished")
    torch.manual_seed(1)
    torch.save(create("rcan", 4, "tiny").state_dict(), ckpt)  # same path, other weights
    check(cli(capsys, *argv), 0, "run finished")
    shas = {json.loads(p.read_text())["teacher"]["sha256"] for p in runs.glob("*/summary.json")}
    assert len(shas) == 2


# ------------------------------------------------------------------------------------------------ teacher zoo


def test_damaged_zoo_record_is_reported_and_rebuilt(capsys, shared_cache):
    teacher = ["teacher", "train", "--teacher", "rcan", "--profile", "smoke", "--no-progress",
               "--set", "teacher.train.steps=2"]
    check(cli(capsys, *teacher), 0)
    (meta,) = (shared_cache / "teachers").glob("*/teacher.json")
    meta.write_text("{not json")
    check(cli(capsys, "teacher", "list"), 0, "teacher.json", "damaged", "rebuilds it")
    check(cli(capsys, *teacher), 0)
    assert json.loads(meta.read_text())["steps"] == 2
    assert "teacher.json is damaged" not in flat(cli(capsys, "teacher", "list")[1])


# ------------------------------------------------------------------------------------------------ eval and images


def _eval(capsys, data: Path, *extra: str) -> tuple[int, str]:
    return cli(capsys, "eval", "--model", "bicubic", "--data", "Set5", "--data-root", data, "--no-lpips",
               "--no-progress", *extra)


@pytest.mark.parametrize("width, height", [(12_000, 12_000), (100_000, 100_000)])
def test_huge_image_header_is_refused_before_decoding(capsys, tmp_path, width, height):
    hr = _dataset(tmp_path / "data", "Set5", [48])
    (hr / "bomb.png").write_bytes(_png_header(width, height))
    check(_eval(capsys, tmp_path / "data"), 2, "bomb.png", "KDBENCH_MAX_PIXELS")


def test_pixel_limit_is_configurable(capsys, tmp_path, monkeypatch):
    _dataset(tmp_path / "data", "Set5", [48, 60])
    monkeypatch.setenv("KDBENCH_MAX_PIXELS", "3000")
    check(_eval(capsys, tmp_path / "data"), 2, "img1.png", "3,600 pixels")
    monkeypatch.setenv("KDBENCH_MAX_PIXELS", "lots")
    check(_eval(capsys, tmp_path / "data"), 2, "KDBENCH_MAX_PIXELS", "lots")


def test_corrupt_and_too_small_images(capsys, tmp_path):
    hr = _dataset(tmp_path / "data", "Set5", [48])
    (hr / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    check(_eval(capsys, tmp_path / "data"), 2, "broken.png")
    (hr / "broken.png").unlink()
    _dataset(tmp_path / "data", "Set5", [48, 2])
    check(_eval(capsys, tmp_path / "data"), 2, "img1.png", "smaller than the scale")


def test_image_too_small_for_the_network_names_the_file(capsys, tmp_path):
    hr = _dataset(tmp_path / "data", "Set5", [48])
    from kd.data.io import write_png

    write_png(hr / "sliver.png", torch.zeros(3, 4, 64, dtype=torch.uint8))  # LR 1 x 16 at x4
    check(cli(capsys, "eval", "--model", "swinir", "--preset", "tiny", "--data", "Set5", "--data-root",
              tmp_path / "data", "--no-lpips", "--no-progress"), 2, "sliver.png")


def test_partial_dataset_is_flagged(capsys, tmp_path):
    _dataset(tmp_path / "data", "Set5", [48, 48])
    check(_eval(capsys, tmp_path / "data"), 0, "Set5 holds 2 of its 5 images", "not comparable")


def test_eval_output_problems(capsys, tmp_path, readonly_dir):
    _dataset(tmp_path / "data", "Set5", [48])
    check(_eval(capsys, tmp_path / "data", "--out", readonly_dir / "r.csv"), 2, str(readonly_dir))
    check(_eval(capsys, tmp_path / "data", "--out", tmp_path / "data"), 2, "is a folder")


def test_eval_on_a_full_disk(capsys, tmp_path, full_disk):
    _dataset(tmp_path / "data", "Set5", [48])
    text = check(_eval(capsys, tmp_path / "data", "--out", full_disk / "r.csv", "--per-image"), 2, str(full_disk))
    assert "full" in text
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_eval_on_cuda_without_a_gpu(capsys, tmp_path, device):
    _dataset(tmp_path / "data", "Set5", [48])
    check(_eval(capsys, tmp_path / "data", "--device", device), 2, device, "CUDA is not available")


def test_eval_option_problems(capsys, tmp_path):
    _dataset(tmp_path / "data", "Set5", [48])
    check(_eval(capsys, tmp_path / "data", "--device", "gpu0"), 2, "gpu0")
    check(_eval(capsys, tmp_path / "data", "--scale", "four"), 2, "--scale")
    check(_eval(capsys, tmp_path / "data", "--tile", "0"), 2, "--tile")
    check(_eval(capsys, tmp_path / "data", "--ckpt", tmp_path / "none.pt"), 2, "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    check(cli(capsys, "eval", "--model", "asid", "--preset", "tiny", "--data", "Set5", "--data-root",
              tmp_path / "data", "--ckpt", tmp_path / "junk.pt", "--no-progress", "--no-lpips"), 2, "junk.pt")
    check(cli(capsys, "eval", "--model", "nosuch"), 2, "nosuch")
    check(_eval(capsys, tmp_path / "data", "--data", "Set6"), 2, "Set6")


# ------------------------------------------------------------------------------------------------ data


def test_data_download_refusals(capsys, tmp_path):
    check(cli(capsys, "data", "download", "Manga109", "--data-root", tmp_path / "data"), 2, "Manga109")
    check(cli(capsys, "data", "download", "default"), 2, "embedded")
    check(cli(capsys, "data", "download", "Set55"), 2, "Set55")


def test_bracketed_paths_print_verbatim(capsys, tmp_path, monkeypatch):
    root = tmp_path / "d[x]"
    _dataset(root, "Set5", [48])
    text = check(cli(capsys, "data", "list", "--data-root", root), 0)
    assert str(root) in text.replace("\n", "").replace(" ", "").replace("│", "") or str(root) in flat(text)
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "c[x]"))
    check(cli(capsys, "teacher", "list"), 0, str(tmp_path / "c[x]"))
    (tmp_path / "r[x]").mkdir()
    text = check(cli(capsys, "results", "--runs", tmp_path / "r[x]"), 2, "r[x]")


# ------------------------------------------------------------------------------------------------ error boundary


def test_unexpected_error_is_one_line_and_debug_shows_the_traceback(capsys, monkeypatch, tmp_path):
    import kd.cli.results_cmd as results_cmd

    def broken(args):
        raise RuntimeError("something internal broke")

    monkeypatch.setattr(results_cmd, "results_command", broken)
    check(cli(capsys, "results"), 2, "something internal broke", "--debug")
    code, text = cli(capsys, "results", "--debug")
    assert code == 2 and "Traceback" in text
    monkeypatch.setenv("KDBENCH_DEBUG", "1")
    code, text = cli(capsys, "results")
    assert code == 2 and "Traceback" in text


def test_os_errors_name_the_file(capsys, monkeypatch):
    import errno

    import kd.cli.results_cmd as results_cmd

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/somewhere/out.csv")

    monkeypatch.setattr(results_cmd, "results_command", full)
    check(cli(capsys, "results"), 2, "/somewhere/out.csv", "disk is full")


# ------------------------------------------------------------------------------------------------ divergence


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)

    def forward(self, x):
        return F.pixel_shuffle(self.conv(x), 2)


class _Batches:
    batch_size = 2

    def batch(self, step):
        g = torch.Generator().manual_seed(step)
        hr = torch.rand(2, 3, 16, 16, generator=g)
        return F.avg_pool2d(hr, 2), hr

    def iterate(self, start, end):
        return (self.batch(step) for step in range(start, end))


def _trainer(run_dir: Path, blow_up_at: int | None):
    from kd.config import TrainConfig
    from kd.engine import Trainer
    from kd.methods.base import Distiller

    class Unchecked(Distiller):
        """Plain L1, plus an update that makes the weights huge (finite) after step `blow_up_at`."""

        name = "unchecked"
        needs_teacher = False
        default_weights = {"rec": 1.0}

        def losses(self, inputs):
            return {"rec": F.l1_loss(inputs.student_out, inputs.hr)}

        def after_optimizer_step(self, context):
            if blow_up_at is not None and context.step + 1 == blow_up_at:
                with torch.no_grad():
                    for p in context.student.parameters():
                        p.mul_(1e37)

    torch.manual_seed(0)
    student = _Toy()
    method = Unchecked(student, None)
    recipe = TrainConfig(steps=8, batch_size=2, lr=1e-3, ckpt_every=2, log_every=1, val_every=0)
    return Trainer(recipe, student=student, teacher=None, method=method, weights={"rec": 1.0}, batches=_Batches(),
                   run_dir=run_dir, seed=0)


def test_poisoned_checkpoint_is_not_kept_and_the_resume_works(tmp_path):
    from kd.engine import TrainingDiverged
    from kd.engine.checkpoint import load_checkpoint

    with pytest.raises(TrainingDiverged) as info:
        _trainer(tmp_path, blow_up_at=4).fit()  # step 4's weights are saved (finite), step 5's loss is inf
    message = str(info.value)
    assert "step 5" in message and "step 2" in message and "train.lr" in message
    assert info.value.exit_code == 1
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() and v.abs().max() < 1e3 for v in state["student"].values())
    resumed = _trainer(tmp_path, blow_up_at=None)
    outcome = resumed.fit()
    assert outcome.resumed_from == 2 and resumed.step == 8


def test_non_finite_weights_are_never_saved(tmp_path):
    from kd.engine import TrainingDiverged

    trainer = _trainer(tmp_path, blow_up_at=None)
    trainer.fit()
    with torch.no_grad():
        trainer.student.conv.weight.fill_(float("nan"))
    before = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(TrainingDiverged, match="no longer finite"):
        trainer.save_last()
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == before


# ------------------------------------------------------------------------------------------------ issue 35: fixtures


@pytest.fixture(scope="module")
def built_report(finished, tmp_path_factory, shared_cache):
    """A report over the finished run, made once; tests copy it."""
    from kd.report import build_report

    out = tmp_path_factory.mktemp("report") / "rep"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KDBENCH_CACHE", str(shared_cache))
        build_report(finished[0], out, visual_images=0)
    return out


@pytest.fixture
def report_copy(built_report, tmp_path):
    out = tmp_path / "rep"
    shutil.copytree(built_report, out, symlinks=True)
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory, shared_cache, shared_data) -> Path:
    """A smoke teacher trained into the module's zoo and exported once (`teacher export`)."""
    out = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KDBENCH_CACHE", str(shared_cache))
        patch.setenv("KDBENCH_DATA", str(shared_data))
        patch.setenv("OMP_NUM_THREADS", "1")
        assert main(["teacher", "train", "--teacher", "rcan", "--profile", "smoke", "--no-progress",
                     "--set", "teacher.train.steps=2"]) == 0
        (key,) = [p.parent.name for p in (shared_cache / "teachers").glob("*/teacher.json")
                  if json.loads(p.read_text()).get("steps") == 2 and json.loads(p.read_text())["data"] == "default"]
        assert main(["teacher", "export", key, "--out", str(out)]) == 0
    return out / key


def _export_copy(exported: Path, folder: Path, **record) -> Path:
    """A copy of the export whose teacher.json carries `record`'s fields (the sha256 covers teacher.pt only)."""
    shutil.copytree(exported, folder)
    info = json.loads((folder / "teacher.json").read_text())
    (folder / "teacher.json").write_text(json.dumps({**info, **record}))
    return folder


def _nan_weights(path: Path) -> Path:
    from kd.models import create

    state = create("rcan", 4, "tiny").state_dict()
    next(v for v in state.values() if v.is_floating_point()).view(-1)[0] = float("nan")
    torch.save(state, path)
    return path


# ------------------------------------------------------------------------------------------------ issue 35: user files


@pytest.mark.parametrize("where, named", [
    ("figures/mine.png", "figures/mine.png"),
    ("records/{run}/notes.txt", "records/{run}/notes.txt"),
    ("records/{run}/sub/deep/x.txt", "records/{run}/sub"),
    ("notes/todo.txt", "notes"),
])
def test_report_force_keeps_user_files_at_any_depth(capsys, runs_copy, report_copy, where, named):
    run = runs_copy[1].name
    mine = report_copy / where.format(run=run)
    mine.parent.mkdir(parents=True, exist_ok=True)
    mine.write_bytes(b"the user's own file")
    user = {where.format(run=run): hashlib.sha256(b"the user's own file").hexdigest()}
    text = check(cli(capsys, "report", "--runs", runs_copy[0], "--out", report_copy, "--visual-images", "0",
                     "--force"), 0)
    assert f"kept what kdbench did not write in {report_copy}: {named.format(run=run)}" in text
    kept(user, report_copy)
    assert "Files kdbench wrote here" in (report_copy / ".kdbench-report").read_text()


def test_report_force_over_an_older_report_keeps_user_files_and_drops_its_own(capsys, runs_copy, report_copy):
    """A report written before the marker listed its files: kdbench's own are known by their names."""
    (report_copy / ".kdbench-report").write_text("kdbench report over /somewhere/runs\n")
    (report_copy / "figures" / "mine.png").write_bytes(b"mine")
    stale = report_copy / "records" / "asid-none-noteacher-x4-smoke-s0-00000000"
    shutil.copytree(report_copy / "records" / runs_copy[1].name, stale)  # a record of a run no longer reported
    user = {k: v for k, v in tree(report_copy).items() if k == "figures/mine.png"}
    check(cli(capsys, "report", "--runs", runs_copy[0], "--out", report_copy, "--visual-images", "0", "--force"), 0,
          "figures/mine.png")
    kept(user, report_copy)
    assert not stale.exists()


def _report_killed_at(point: str, runs: str, out: str) -> None:
    """Child process: replace the report at `out` (--force), killed by SIGKILL at `point`."""
    import kd.report as report

    def die(*_args, **_kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    exchange, rename, rmtree = report._exchange, Path.rename, shutil.rmtree
    if point == "copying the user's files":
        shutil.copy2 = die
    elif point == "right after the swap":
        report._exchange = lambda a, b: exchange(a, b) and die()
    elif point == "old report renamed aside":  # where the file system cannot swap folders atomically
        report._exchange = lambda a, b: False
        Path.rename = lambda self, target: die() if ".tmp-" in self.name else rename(self, target)
    elif point == "new report in place, old one not yet removed":
        report._exchange = lambda a, b: False
        shutil.rmtree = lambda path, *a, **k: die() if ".old-" in str(path) else rmtree(path, *a, **k)
    report.build_report(runs, out, visual_images=0, force=True)


@pytest.mark.parametrize("point", ["copying the user's files", "right after the swap", "old report renamed aside",
                                   "new report in place, old one not yet removed"])
def test_report_replacement_survives_a_kill_at_any_point(capsys, runs_copy, report_copy, point):
    (report_copy / "figures" / "mine.png").write_bytes(b"mine")
    user = {"figures/mine.png": hashlib.sha256(b"mine").hexdigest()}
    child = multiprocessing.get_context("fork").Process(target=_report_killed_at,
                                                        args=(point, str(runs_copy[0]), str(report_copy)))
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    if point == "old report renamed aside":
        assert not report_copy.exists()  # the next report puts it back before replacing it
        check(cli(capsys, "report", "--runs", runs_copy[0], "--out", report_copy, "--visual-images", "0",
                  "--force"), 0, "figures/mine.png")
    kept(user, report_copy)
    assert (report_copy / ".kdbench-report").is_file() and (report_copy / "report.html").is_file()


@pytest.mark.parametrize("existing", ["r.csv", "r_per_image.csv", "r.csv.meta.json"])
def test_eval_out_never_replaces_a_file_without_force(capsys, tmp_path, existing):
    _dataset(tmp_path / "data", "Set5", [48])
    (tmp_path / existing).write_text("mine")
    refused(capsys, tmp_path, "eval", "--model", "bicubic", "--data", "Set5", "--data-root", tmp_path / "data",
            "--no-lpips", "--no-progress", "--out", tmp_path / "r.csv", "--per-image", says=(existing, "--force"))


def test_eval_out_replaces_with_force(capsys, tmp_path):
    _dataset(tmp_path / "data", "Set5", [48])
    (tmp_path / "r.csv").write_text("mine")
    check(_eval(capsys, tmp_path / "data", "--out", tmp_path / "r.csv", "--force"), 0, "wrote")
    assert (tmp_path / "r.csv").read_text().startswith("model,dataset")


@pytest.mark.parametrize("force", [False, True])
def test_results_out_replaces_only_with_force(capsys, tmp_path, runs_copy, force):
    (tmp_path / "r.csv").write_text("mine")
    argv = ["results", "--runs", runs_copy[0], "--format", "csv", "--out", tmp_path / "r.csv"]
    if force:
        check(cli(capsys, *argv, "--force"), 0, "wrote csv")
        assert (tmp_path / "r.csv").read_text().startswith("run_id,")
    else:
        refused(capsys, tmp_path, *argv, says=("r.csv", "--force"))


@pytest.mark.parametrize("given", ["absolute", "relative, through .."])
def test_eval_save_images_of_a_dataset_given_by_path_stay_in_the_save_folder(capsys, tmp_path, given):
    photos = _dataset(tmp_path, "photos", [48, 48]).parent
    name = str(photos) if given == "absolute" else f"../{tmp_path.name}/photos"
    before = tree(tmp_path)
    check(cli(capsys, "eval", "--model", "bicubic", "--data", name, "--no-lpips", "--no-progress",
              "--save-images", tmp_path / "sr"), 0)
    added = sorted(set(tree(tmp_path)) - set(before))
    assert added and all(entry == "sr" or entry.startswith("sr/") for entry in added), added
    assert len(list((tmp_path / "sr").rglob("*.png"))) == 2
    kept(before, tmp_path)


def test_run_save_images_of_a_dataset_given_by_path_stay_in_the_run(capsys, tmp_path):
    photos = _dataset(tmp_path, "photos", [48, 48]).parent
    before = tree(photos)
    check(cli(capsys, "run", "--method", "none", "--out-dir", tmp_path / "runs", *FAST,
              "--set", f"eval.datasets=[{photos}]", "--save-images"), 0, "run finished")
    assert tree(photos) == before
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert len(list((run_dir / "images").rglob("*.png"))) == 2


@pytest.mark.parametrize("force", [False, True])
def test_eval_save_images_replaces_earlier_images_only_with_force(capsys, tmp_path, force):
    _dataset(tmp_path / "data", "Set5", [48])
    save = ["--save-images", tmp_path / "sr"]
    check(_eval(capsys, tmp_path / "data", *save), 0)
    (image,) = (tmp_path / "sr").rglob("*.png")
    image.write_bytes(b"an image the user edited")
    if force:
        check(_eval(capsys, tmp_path / "data", *save, "--force"), 0)
        assert image.read_bytes().startswith(b"\x89PNG")
    else:
        refused(capsys, tmp_path, "eval", "--model", "bicubic", "--data", "Set5", "--data-root", tmp_path / "data",
                "--no-lpips", "--no-progress", *save, says=(str(image), "--force"))


# ------------------------------------------------------------------------------------------------ issue 35: escapes


@pytest.mark.parametrize("key", ["../../escaped", "ABSOLUTE", "a/b", ".hidden", "", "..", "-rf"])
def test_import_takes_no_key_that_leaves_the_zoo(capsys, tmp_path, exported, shared_cache, key):
    key = str(tmp_path / "outside") if key == "ABSOLUTE" else key
    folder = _export_copy(exported, tmp_path / "import", key=key)
    zoo = tree(shared_cache / "teachers")
    refused(capsys, tmp_path, "teacher", "import", folder, says=(str(folder), "teacher.json", "plain name"))
    assert tree(shared_cache / "teachers") == zoo
    assert not list(shared_cache.parent.glob("escaped*")) and not list(shared_cache.glob("escaped*"))


@pytest.mark.parametrize("name", ["train.log", "metrics.jsonl", "teacher.json"])
def test_import_follows_no_symbolic_link(capsys, tmp_path, exported, shared_cache, name):
    folder = _export_copy(exported, tmp_path / "import", key="rcan-imported-by-a-test")
    secret = tmp_path / "secret"
    shutil.copyfile(folder / name, secret) if name == "teacher.json" else secret.write_text("a private file")
    (folder / name).unlink()
    (folder / name).symlink_to(secret)
    zoo = tree(shared_cache / "teachers")
    refused(capsys, tmp_path, "teacher", "import", folder, says=(str(folder / name), "symbolic link"))
    assert tree(shared_cache / "teachers") == zoo


def test_import_collection_follows_no_linked_folder(capsys, tmp_path, exported, shared_cache):
    elsewhere = _export_copy(exported, tmp_path / "elsewhere", key="rcan-imported-by-a-test")
    (tmp_path / "collection").mkdir()
    (tmp_path / "collection" / "linked").symlink_to(elsewhere)
    zoo = tree(shared_cache / "teachers")
    refused(capsys, tmp_path, "teacher", "import", tmp_path / "collection", says=("collection", "exported teacher"))
    assert tree(shared_cache / "teachers") == zoo


@pytest.mark.parametrize("key", ["../teachers/{key}", "{zoo}/{key}", ".."])
def test_export_key_never_leads_outside_out(capsys, tmp_path, exported, shared_cache, key):
    key = key.format(key=exported.name, zoo=shared_cache / "teachers")
    zoo = tree(shared_cache / "teachers")
    refused(capsys, tmp_path, "teacher", "export", key, "--out", tmp_path / "out", says=("zoo key", "plain name"))
    assert tree(shared_cache / "teachers") == zoo and not (tmp_path / "teachers").exists()


def test_teacher_preset_never_names_a_folder_outside_the_zoo(capsys, tmp_path, shared_cache):
    refused(capsys, tmp_path, "teacher", "train", "--teacher", "rcan", "--preset", "../../../escaped",
            "--profile", "smoke", "--no-progress", says=("preset", "../../../escaped"))
    assert not list(shared_cache.rglob("*escaped*")) and not list(shared_cache.parent.glob("*escaped*"))


# ------------------------------------------------------------------------------------------------ issue 35: stale


def _bmp_dataset(root: Path, name: str, count: int, seed: int = 0) -> Path:
    """Images of one size as BMP, whose file size depends on the size alone (a same-size edit stays same-size)."""
    from PIL import Image

    folder = root / name / "HR"
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    for i in range(count):
        pixels = torch.randint(0, 256, (48, 48, 3), generator=g, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"img{i}.bmp")
    return folder


@pytest.mark.parametrize("edit", ["rewritten in place, mtime kept (cp -p)", "replaced by a new file, mtime kept (tar x)"])
def test_same_size_edit_with_the_old_mtime_is_a_new_run(capsys, tmp_path, monkeypatch, edit):
    import kd.engine.identity as identity

    monkeypatch.setattr(identity, "RACY_SECONDS", 0.0)  # trust cached hashes at once: only ctime and inode can tell
    data = tmp_path / "data"
    hr = _bmp_dataset(data, "Set5", 5)
    _dataset(data, "T91", [80] * 6)
    argv = ["run", "--method", "none", "--out-dir", tmp_path / "runs", *FAST, "--data-root", data]
    check(cli(capsys, *argv), 0, "run finished")
    check(cli(capsys, *argv), 0, "already finished")
    target = hr / "img0.bmp"
    old = target.stat()
    new = _bmp_dataset(tmp_path / "other", "Set5", 1, seed=9) / "img0.bmp"
    assert new.stat().st_size == old.st_size and new.read_bytes() != target.read_bytes()
    if edit.startswith("rewritten"):
        shutil.copyfile(new, target)
    else:
        os.replace(new, target)
    os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns))
    check(cli(capsys, *argv), 0, "run finished")
    assert len(list((tmp_path / "runs").iterdir())) == 2


@pytest.mark.parametrize("edit, outcome", [("a statement added", "run finished"),
                                           ("a comment and the docstring reworded", "already finished")])
def test_a_method_edited_without_a_new_version_is_a_new_run(capsys, runs_copy, tmp_path, monkeypatch, edit, outcome):
    from kd import sources

    source = sources.source_file("kd.methods.none").read_text()
    if edit.startswith("a statement"):
        source += "\nEDITED = True\n"
    else:
        source = "# a new comment\n" + source.replace('"""', '"""Reworded: ', 1)
    (tmp_path / "none.py").write_text(source)
    real = sources.source_file
    monkeypatch.setattr(sources, "source_file",
                        lambda module: tmp_path / "none.py" if module == "kd.methods.none" else real(module))
    check(cli(capsys, "run", "--method", "none", "--out-dir", runs_copy[0], *FAST), 0, outcome)


class _Items(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def _pair(value: float, lr: int = 12, scale: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.full((3, lr, lr), value), torch.full((3, lr * scale, lr * scale), value)


def _tiny_student() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 48, 3, padding=1), nn.PixelShuffle(4))


API_RUN = {"profile": "smoke", "train": {"steps": 1, "lr_patch": 12, "batch_size": 2},
           "eval": {"datasets": ["Set5"], "val_dataset": None}}


def test_api_fingerprints_every_item_of_a_dataset(tmp_path):
    import kd

    first = [_pair(0.1), _pair(0.2), _pair(0.3)]
    middle = [_pair(0.1), _pair(0.9), _pair(0.3)]  # same length, same first and last items
    a = kd.distill(student=_tiny_student(), method="none", data=_Items(first), runs_dir=tmp_path / "runs", **API_RUN)
    b = kd.distill(student=_tiny_student(), method="none", data=_Items(middle), runs_dir=tmp_path / "runs", **API_RUN)
    assert not b.already_finished and b.run_dir != a.run_dir


# ------------------------------------------------------------------------------------------------ issue 35: damaged runs


@pytest.mark.parametrize("damage", [
    pytest.param(lambda s: json.dumps({"run_id": s["run_id"]}).encode(), id="fields missing"),
    pytest.param(lambda s: json.dumps({**s, "datasets": {}}).encode(), id="no datasets"),
    pytest.param(lambda s: json.dumps({**s, "datasets": {"Set5": 5}}).encode(), id="scores not an object"),
    pytest.param(lambda s: json.dumps({**s, "seed": "zero"}).encode(), id="seed not a number"),
    pytest.param(lambda s: json.dumps({k: v for k, v in s.items() if k != "steps"}).encode(), id="steps missing"),
    pytest.param(lambda s: b"[1, 2]", id="not an object"),
    pytest.param(lambda s: b"\xff\xfe\x00binary", id="not UTF-8"),
])
def test_damaged_summary_is_named_and_recomputed_from_the_checkpoint(capsys, runs_copy, damage):
    runs, run_dir = runs_copy
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_bytes(damage(summary))
    text = check(cli(capsys, "run", "--method", "none", "--out-dir", runs, *FAST), 0, "summary.json", "damaged",
                 "resuming run", "run finished")
    assert "unexpected" not in text
    rebuilt = json.loads((run_dir / "summary.json").read_text())
    assert rebuilt["datasets"] == summary["datasets"] and rebuilt["steps"] == summary["steps"]


def test_results_name_a_damaged_summary(capsys, runs_copy):
    runs, run_dir = runs_copy
    (run_dir / "summary.json").write_text(json.dumps({"run_id": run_dir.name, "datasets": {}}))
    check(cli(capsys, "results", "--runs", runs), 2, "summary.json", run_dir.name)


BAD_METRICS_LINES = [b"\xff\xfe\x00binary", b"[1, 2]", b"5", b'{"step": "x"}', b'"text"']


@pytest.mark.parametrize("line", BAD_METRICS_LINES)
def test_damaged_metrics_line_does_not_stop_a_resume(capsys, runs_copy, line):
    runs, run_dir = runs_copy
    (run_dir / "summary.json").unlink()
    with open(run_dir / "metrics.jsonl", "ab") as handle:
        handle.write(line + b"\n")
    check(cli(capsys, "run", "--method", "none", "--out-dir", runs, *FAST), 0, "resuming run", "run finished")
    assert all(isinstance(json.loads(text), dict) for text in (run_dir / "metrics.jsonl").read_text().splitlines())


def test_damaged_metrics_lines_do_not_stop_the_report_or_results(capsys, runs_copy, tmp_path):
    runs, run_dir = runs_copy
    with open(run_dir / "metrics.jsonl", "ab") as handle:
        handle.write(b"\n".join(BAD_METRICS_LINES) + b"\n")
    check(cli(capsys, "results", "--runs", runs, "--include-unfinished"), 0)
    check(cli(capsys, "report", "--runs", runs, "--out", tmp_path / "rep", "--visual-images", "0"), 0, "report.html")


def test_non_utf8_files_are_named(capsys, tmp_path, runs_copy, exported):
    runs, run_dir = runs_copy
    (tmp_path / "latin1.yaml").write_bytes("train: {lr: 1e-3}  # réglé\n".encode("latin-1"))
    refused(capsys, tmp_path, "run", "--config", tmp_path / "latin1.yaml", "--out-dir", tmp_path / "r",
            says=("latin1.yaml", "UTF-8"))
    (run_dir / "config.yaml").write_bytes(b"\xff\xfe\x00")
    refused(capsys, tmp_path, "eval", "--run", run_dir, "--no-lpips", "--no-progress", says=("config.yaml",))
    (run_dir / "environment.json").write_bytes(b"\xff\xfe\x00")
    check(cli(capsys, "results", "--runs", runs), 0)  # provenance only: the scores are still shown
    folder = _export_copy(exported, tmp_path / "import")
    (folder / "teacher.json").write_bytes(b"\xff\xfe\x00")
    refused(capsys, tmp_path, "teacher", "import", folder, says=("teacher.json", "damaged"))


@pytest.mark.parametrize("field, value", [("scale", "four"), ("arch", "nosuch"), ("preset", ["x"]),
                                          ("steps", "many")])
def test_import_of_a_record_naming_no_network_is_one_line(capsys, tmp_path, exported, field, value):
    folder = _export_copy(exported, tmp_path / "import", **{field: value})
    refused(capsys, tmp_path, "teacher", "import", folder, says=("teacher.json", "export the teacher again"))


# ------------------------------------------------------------------------------------------------ issue 35: weights


def test_nan_teacher_checkpoint_is_refused_naming_it(capsys, tmp_path):
    ckpt = _nan_weights(tmp_path / "nan.pt")
    (tmp_path / "runs").mkdir()  # stays empty: a failed start leaves no run folder
    refused(capsys, tmp_path, "run", "--method", "logits", "--teacher-ckpt", ckpt, "--teacher-preset", "tiny",
            "--out-dir", tmp_path / "runs", *FAST, says=("nan.pt", "NaN"))


def test_nan_checkpoint_is_refused_by_eval(capsys, tmp_path):
    _dataset(tmp_path / "data", "Set5", [48])
    ckpt = _nan_weights(tmp_path / "nan.pt")
    refused(capsys, tmp_path, "eval", "--model", "rcan", "--preset", "tiny", "--ckpt", ckpt, "--data", "Set5",
            "--data-root", tmp_path / "data", "--no-lpips", "--no-progress", says=("nan.pt", "NaN"))


def test_nan_zoo_teacher_is_refused_naming_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    teacher = ["--set", "teacher.train.steps=2"]
    check(cli(capsys, "teacher", "train", "--teacher", "rcan", "--profile", "smoke", "--no-progress",
              "--set", "data.train=T91", *teacher), 0)
    (weights,) = (tmp_path / "cache" / "teachers").glob("*/teacher.pt")
    _nan_weights(weights)
    entry = tree(weights.parent)
    check(cli(capsys, "run", "--method", "logits", "--out-dir", tmp_path / "runs", *FAST, *teacher), 2,
          str(weights), "NaN", "--retrain")
    assert tree(weights.parent) == entry and not any((tmp_path / "runs").iterdir())


def test_nan_export_is_not_imported(capsys, tmp_path, exported, shared_cache):
    from kd.fileio import sha256_file

    folder = _export_copy(exported, tmp_path / "import", key="rcan-imported-by-a-test")
    _nan_weights(folder / "teacher.pt")
    (folder / "teacher.pt.sha256").write_text(f"{sha256_file(folder / 'teacher.pt')}  teacher.pt\n")
    refused(capsys, tmp_path, "teacher", "import", folder, says=("teacher.pt", "NaN"))
    assert not (shared_cache / "teachers" / "rcan-imported-by-a-test").exists()


# ------------------------------------------------------------------------------------------------ issue 35: report --out .


@pytest.mark.parametrize("case, says", [("an empty current folder", "current folder"),
                                        ("the current folder is a report", "current folder"),
                                        ("a parent folder", "contains --runs")])
def test_report_out_naming_the_current_folder_is_one_line(capsys, runs_copy, report_copy, tmp_path, monkeypatch,
                                                          case, says):
    if case == "an empty current folder":
        (tmp_path / "empty").mkdir()
        monkeypatch.chdir(tmp_path / "empty")
        out = "."
    else:
        monkeypatch.chdir(report_copy)
        out = "." if case == "the current folder is a report" else "../rep/.."
    refused(capsys, tmp_path, "report", "--runs", runs_copy[0], "--out", out, "--force", "--visual-images", "0",
            says=(f"--out {out}", says))


# ------------------------------------------------------------------------------------------------ issue 35: the API


class _NoLength(torch.utils.data.Dataset):
    def __getitem__(self, index):
        return _pair(0.5)


@pytest.mark.parametrize("data, culprit", [
    pytest.param(_Items([torch.rand(3, 12, 12)] * 2), "not an (lr, hr) pair", id="not pairs"),
    pytest.param(_Items([(*_pair(0.5), 1)] * 2), "not an (lr, hr) pair", id="triples"),
    pytest.param(_Items([_pair(0.5, scale=2)] * 2), "is not x4", id="another scale"),
    pytest.param(_Items([tuple(t * 255 for t in _pair(0.5))] * 2), "divide 8-bit images by 255", id="0-255"),
    pytest.param(_Items([_pair(float("nan"))] * 2), "NaN", id="NaN"),
    pytest.param(_Items([_pair(0.5), _pair(0.5, lr=16)]), "one size", id="mixed sizes"),
    pytest.param(_Items([(torch.rand(1, 12, 12), torch.rand(1, 48, 48))] * 2), "RGB", id="grey"),
    pytest.param(_NoLength(), "map-style Dataset", id="no length"),
])
def test_api_dataset_items_are_checked_before_anything_is_written(tmp_path, data, culprit):
    import kd
    from kd.errors import KdError

    with pytest.raises(KdError) as info:
        kd.distill(student="asid", method="none", data=data, runs_dir=tmp_path / "runs", **API_RUN)
    assert culprit in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "runs").exists()


def test_api_teacher_given_as_a_module(tmp_path):
    import kd

    teacher = _tiny_student()
    record = kd.distill(student=_tiny_student(), teacher=teacher, method="logits", data=_Items([_pair(0.4)] * 2),
                        runs_dir=tmp_path / "runs", **API_RUN)
    assert record.summary["teacher"]["arch"].startswith("Sequential@")
