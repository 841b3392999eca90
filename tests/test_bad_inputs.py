"""The hostile-user matrix (issue 13): every command fed bad input or a faulty environment ends with one clear line
naming the culprit and the right exit code; no traceback, no deleted user file, no stale result, no file written
outside the test's temporary folder.

Runs use the smoke profile with 2 steps and no periodic validation; caches and data live in tmp_path.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import shutil
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
    status, text = result
    assert "Traceback" not in text, text
    assert status == code, text
    for culprit in culprits:
        assert culprit in flat(text), f"{culprit!r} not named in: {text}"
    return text


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
])
def test_bad_config_values_fail_before_a_run_folder_exists(capsys, tmp_path, setting, culprit):
    check(cli(capsys, "run", "--method", "none", "--out-dir", tmp_path / "runs", *FAST, "--set", setting), 2,
          culprit)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


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
    check(cli(capsys, "data", "download", "T91", "--data-root", tmp_path / "data"), 2, "T91")
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
