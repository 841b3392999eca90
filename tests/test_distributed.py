"""Data-parallel training: 2 gloo processes under torchrun against one process with the same global batch.

Real networks (smoke profile: ASID and RCAN tiny), the real patch pipeline, `kdbench run --nproc 2`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from kd.cli.run_cmd import without_nproc
from kd.data.patches import PatchDataset
from kd.engine.batches import PatchBatches
from kd.engine.distributed import DistContext, check_nproc
from kd.errors import KdError
from kd.models import read_checkpoint

REPO = Path(__file__).resolve().parents[1]
STEPS = ["--set", "train.steps=30", "--set", "train.ckpt_every=2", "--set", "train.val_every=0"]
# Two processes sum gradients and feature statistics in another order than one: the runs agree to float32
# rounding, which Adam's normalisation and FitNet's per-side standardisation (a division by the student's own
# feature RMS) amplify over 30 steps at lr 1e-3: the first steps agree to ~1e-6 relative (EARLY_RTOL), the last
# losses to ~1e-4 and the final PSNR to ~0.004 dB (measured).
EARLY_STEPS, EARLY_RTOL = 5, 1e-5
PSNR_TOLERANCE_DB = 0.01
LOSS_RTOL = 1e-3


def test_rank_shards_make_up_the_global_batch():
    dataset = PatchDataset("default", 4, 8, seed=3, length=40)
    whole = PatchBatches(dataset, batch_size=4)
    shards = [PatchBatches(dataset, batch_size=4, rank=r, world_size=2) for r in range(2)]
    for step, (lr, hr) in enumerate(whole.iterate(2, 5), start=2):
        parts = [next(iter(s.iterate(step, step + 1))) for s in shards]
        assert torch.equal(lr, torch.cat([p[0] for p in parts]))
        assert torch.equal(hr, torch.cat([p[1] for p in parts]))
        assert torch.equal(shards[1].batch(step)[0], parts[1][0])


def test_global_batch_must_divide_among_processes():
    with pytest.raises(KdError, match="batch_size 6 .* not divisible by the 4 processes"):
        DistContext(rank=0, world_size=4).shard(6)
    assert DistContext(rank=1, world_size=2).shard(6) == 3


def test_nproc_beyond_the_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(KdError, match="--nproc 3 .* 2 CUDA device"):
        check_nproc(3, "cuda")
    check_nproc(2, "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_nproc((os.cpu_count() or 1) + 1, "cpu")
    assert any("share cores" in str(w.message) for w in caught)
    with pytest.raises(KdError, match="at least 1"):
        check_nproc(0, "cpu")


def test_workers_run_the_command_without_nproc():
    assert without_nproc(["run", "--nproc", "2", "--method", "none", "--nproc=4", "--seed", "1"]) == [
        "run", "--method", "none", "--seed", "1"]


def _kdbench(out_dir: Path, cache: Path, *extra: str, wait: bool = True):
    command = [sys.executable, "-m", "kd", "run", "--profile", "smoke", "--method", "fitnet", *STEPS,
               "--out-dir", str(out_dir), "--no-progress", *extra]
    env = {**os.environ, "KDBENCH_CACHE": str(cache)}
    if not wait:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _losses(run_dir: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if "loss" in r]


def _psnr(run_dir: Path) -> float:
    return json.loads((run_dir / "summary.json").read_text())["datasets"]["default"]["psnr_y"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    cache = root / "cache"
    _kdbench(root / "single", cache, "--threads", "1")  # trains the smoke teacher into the shared zoo first
    done = _kdbench(root / "ddp", cache, "--nproc", "2")
    (single,) = (root / "single").iterdir()
    (ddp,) = (root / "ddp").iterdir()
    return {"root": root, "cache": cache, "single": single, "ddp": ddp, "ddp_stderr": done.stderr}


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(runs):
    single, ddp = runs["single"], runs["ddp"]
    assert single.name == ddp.name  # the process count is not part of what a run computes
    summary = json.loads((ddp / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert abs(_psnr(ddp) - _psnr(single)) <= PSNR_TOLERANCE_DB
    one, two = _losses(single), _losses(ddp)
    assert [s for s, _ in two] == list(range(1, 31))  # rank 0 alone logs: each step once
    assert [s for s, _ in one] == [s for s, _ in two]
    for (step, a), (_, b) in zip(one, two):
        assert b == pytest.approx(a, rel=EARLY_RTOL if step <= EARLY_STEPS else LOSS_RTOL)
    assert "on 2 processes" in " ".join(runs["ddp_stderr"].split())


def test_ddp_run_killed_and_rerun_finishes_like_the_uninterrupted_one(runs):
    killed_root = runs["root"] / "killed"
    process = _kdbench(killed_root, runs["cache"], "--nproc", "2", wait=False)
    run_dir = killed_root / runs["ddp"].name
    deadline = time.monotonic() + 300
    try:
        while not (run_dir / "checkpoints" / "last.pt").exists() and process.poll() is None:
            assert time.monotonic() < deadline, "the 2-process run wrote no checkpoint"
            time.sleep(0.02)
        assert process.poll() is None, "the run finished before it could be killed"
        for pid in [process.pid, *_descendants(process.pid)]:  # torchrun and its workers, no cleanup
            os.kill(pid, signal.SIGKILL)
    finally:
        process.wait()
    assert not (run_dir / "summary.json").exists()

    resumed = _kdbench(killed_root, runs["cache"], "--nproc", "2")
    assert "resuming run" in " ".join(resumed.stderr.split())
    assert _losses(run_dir) == _losses(runs["ddp"])
    assert _psnr(run_dir) == _psnr(runs["ddp"])
    a = read_checkpoint(runs["ddp"] / "student.pt")
    b = read_checkpoint(run_dir / "student.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
