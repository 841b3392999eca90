"""Every GPU path, checked in one go the first time a GPU is lent; writes a JSON of figures.

    .venv/bin/python benchmarks/gpu_check.py --data ../shared/data --out gpu_check.json
    .venv/bin/python benchmarks/gpu_check.py --data ../shared/data --out dry.json --dry-run   # CPU, seconds

Sections (each in its own process with its own time limit, so one failure or hang cannot lose the others; the
limits add up to under 8 minutes):
1. tests: the CUDA-marked tests (`pytest -m cuda`: device placement, bf16/fp16 teacher, channels_last, compile with
   `none`/`logits`, pinned memory, NCCL with one rank); per-test outcomes.
2. throughput: `bench_throughput.py` images/s of ASID distilled (`logits`) from each paper-size teacher (RCAN, HAN,
   SwinIR, EDSR), batch 16, LR patch 64, x4, in fp32 and in bf16 (autocast + bf16 teacher + channels_last).
3. paper_run: 200 steps of the `paper` profile (ASID from a randomly initialised RCAN paper checkpoint, FACD) on a
   DIV2K-layout folder built from the 291 images (T91 + BSD200 under --data, linked, not copied: the 10 images of
   `291-val` stand in for DIV2K 0801-0810, the profile's validation set), then evaluation on Set5; wall time, step times and PSNR (of a 200-step student: a plumbing figure, not a result).

--dry-run runs the same plumbing on the CPU in seconds: the tests are collected and skip, throughput uses tiny
teachers and one step, the paper run 2 steps on 12-pixel patches. The tests run it on generated images.

A lent GPU machine sees only the repository (not ../shared) and reaches no network, so `--pack DIR` first copies
the images the check needs into DIR (about 27 MB: the T91 images as large as the paper profile's 256-pixel HR
patch, the ten 291-val images and 60 more of BSD200, Set5), which travels with the call:

    .venv/bin/python benchmarks/gpu_check.py --data ../shared/data --pack .device/data       # here
    python3 benchmarks/gpu_check.py --data .device/data --out $OUT/gpu_check.json            # there
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TEACHERS = ("rcan", "han", "swinir", "edsr")
IMAGE_SUFFIXES = {".png", ".bmp", ".jpg", ".jpeg"}
# Seconds per section on a GPU (465 in all: the script stays under 8 minutes; two inductor compilations make
# the tests the longest); dry runs get the same limits.
LIMITS = {"tests": 180, "throughput_fp32": 75, "throughput_bf16": 75, "paper_run": 135}


def _run(command: list[str], limit: float, cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    began = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=limit)
        outcome = {"returncode": done.returncode, "output_tail": (done.stdout + done.stderr)[-3000:]}
    except subprocess.TimeoutExpired as exc:
        tail = ((exc.stdout or b"") + (exc.stderr or b"")).decode(errors="replace")[-3000:]
        outcome = {"returncode": None, "timed_out": True, "output_tail": tail}
    outcome.update(command=command, seconds=round(time.perf_counter() - began, 2))
    return outcome


def div2k_layout(data: Path, root: Path) -> int:
    """The 291 images in DIV2K's layout, linked: `root/DIV2K_train/HR` the 281 of `291-train`, `root/DIV2K_valid/HR`
    the 10 of `291-val` named 0801-0810 (what the paper profile validates on, `DIV2K-val10`), `root/Set5` linking
    `data/Set5`; returns the number of training images."""
    from kd.data.registry import VALIDATION_291, VALIDATION_DIV2K

    train, valid = root / "DIV2K_train" / "HR", root / "DIV2K_valid" / "HR"
    train.mkdir(parents=True)
    valid.mkdir(parents=True)
    count, held_out = 0, iter(VALIDATION_DIV2K)
    for part in ("T91", "BSD200"):
        folder = data / part / "HR"
        if not folder.is_dir():
            raise SystemExit(f"gpu_check: {folder} not found; --data must hold T91/HR and BSD200/HR (the 291 set)")
        for image in sorted(folder.iterdir()):
            if image.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if part == "BSD200" and image.stem in VALIDATION_291:
                (valid / f"{next(held_out)}{image.suffix}").symlink_to(image.resolve())
            else:
                (train / f"{part}_{image.name}").symlink_to(image.resolve())
                count += 1
    if not (data / "Set5" / "HR").is_dir():
        raise SystemExit(f"gpu_check: {data / 'Set5' / 'HR'} not found; --data must hold Set5 for the evaluation")
    (root / "Set5").symlink_to((data / "Set5").resolve(), target_is_directory=True)
    return count


PACKED_BSD200 = 60  # BSD200 training images besides the ten 291-val ones: enough patches for 200 steps


def pack(data: Path, into: Path, hr_patch: int = 256) -> int:
    """Copy into `into` the subset of `data` the check reads (layout and manifests as under --data); returns bytes."""
    import shutil

    from PIL import Image

    from kd.data.registry import VALIDATION_291

    if into.exists():
        raise SystemExit(f"gpu_check: {into} exists; remove it or give another --pack folder")
    chosen: dict[str, list[Path]] = {}
    for part in ("T91", "BSD200", "Set5"):
        if not (data / part / "HR").is_dir():
            raise SystemExit(f"gpu_check: {data / part / 'HR'} not found; --data must hold T91, BSD200 and Set5")
    large = [p for p in sorted((data / "T91" / "HR").iterdir()) if min(Image.open(p).size) >= hr_patch]
    bsd = sorted((data / "BSD200" / "HR").iterdir())
    chosen["T91"] = large
    chosen["BSD200"] = ([p for p in bsd if p.stem in VALIDATION_291]
                        + [p for p in bsd if p.stem not in VALIDATION_291][:PACKED_BSD200])
    size = 0
    for part, images in chosen.items():
        (into / part / "HR").mkdir(parents=True)
        for image in images:
            size += shutil.copyfile(image, into / part / "HR" / image.name).stat().st_size
    shutil.copytree(data / "Set5", into / "Set5")
    return size + sum(p.stat().st_size for p in (into / "Set5").rglob("*") if p.is_file())


def test_section(args: argparse.Namespace, env: dict[str, str], work: Path) -> dict[str, Any]:
    report = work / "cuda_tests.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "-rA",
               f"--junitxml={report}", "tests/test_cuda.py"]
    outcome = _run(command, LIMITS["tests"], REPO, env)
    outcome["tests"] = _junit_outcomes(report) if report.is_file() else {}
    return outcome


def _junit_outcomes(path: Path) -> dict[str, str]:
    import xml.etree.ElementTree as ET

    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        kind = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        outcomes[case.get("name")] = kind
    return outcomes


def throughput_section(args: argparse.Namespace, env: dict[str, str], work: Path, precision: str) -> dict[str, Any]:
    out = work / f"throughput_{precision}.json"
    command = [sys.executable, str(REPO / "benchmarks" / "bench_throughput.py"), "--device", args.device,
               "--teachers", ",".join(TEACHERS), "--method", "logits", "--json", str(out)]
    if precision == "bf16":
        command += ["--precision", "bf16", "--teacher-dtype", "bf16", "--channels-last"]
    if args.dry_run:
        command += ["--teacher-preset", "tiny", "--batch", "1", "--patch", "12", "--scale", "2", "--steps", "1",
                    "--warmup", "0"]
    outcome = _run(command, LIMITS[f"throughput_{precision}"], REPO, env)
    if out.is_file():
        figures = json.loads(out.read_text(encoding="utf-8"))
        outcome["images_per_s"] = {r["teacher"]: round(r["images_per_s"], 2) for r in figures["results"]}
        outcome["peak_gib"] = {r["teacher"]: r["peak_gib"] for r in figures["results"]}
    return outcome


def paper_run_section(args: argparse.Namespace, env: dict[str, str], work: Path) -> dict[str, Any]:
    import torch

    from kd.models import create

    root = work / "data"
    images = div2k_layout(Path(args.data), root)
    checkpoint = work / "rcan_paper_x4_random.pt"
    torch.manual_seed(0)
    torch.save(create("rcan", 4, "paper").state_dict(), checkpoint)
    steps = 2 if args.dry_run else args.steps
    command = [sys.executable, "-m", "kd", "run", "--profile", "paper", "--teacher", "rcan", "--method", "facd",
               "--teacher-ckpt", str(checkpoint), "--data-root", str(root), "--out-dir", str(work / "runs"),
               "--no-progress", "--set", f"device={args.device}", "--set", f"train.steps={steps}",
               "--set", f"train.val_every={max(steps // 2, 1)}", "--set", "train.log_every=1",
               "--set", "eval.datasets=[Set5]", "--set", "eval.lpips=false"]
    if args.dry_run:
        command += ["--set", "train.batch_size=2", "--set", "train.lr_patch=12"]
    outcome = _run(command, LIMITS["paper_run"], REPO, {**env, "KDBENCH_CACHE": str(work / "cache")})
    outcome["train_images"] = images
    summaries = list((work / "runs").glob("*/summary.json"))
    if summaries:
        summary = json.loads(summaries[0].read_text(encoding="utf-8"))
        records = [json.loads(line) for line in (summaries[0].parent / "metrics.jsonl").read_text().splitlines()]
        step_times = [r["step_time"] for r in records if "step_time" in r][1:]  # the first step warms up
        outcome.update(
            steps=summary["steps"], train_seconds=summary["train_seconds"], best_val=summary["best_val"],
            set5_psnr_y=summary["datasets"]["Set5"]["psnr_y"],
            median_step_s=statistics.median(step_times) if step_times else None,
        )
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder holding T91/HR, BSD200/HR and Set5/HR")
    parser.add_argument("--out", help="JSON file of figures to write")
    parser.add_argument("--pack", type=Path, metavar="DIR", help="copy the images the check needs from --data into "
                        "DIR (for a machine that sees only the repository) and stop")
    parser.add_argument("--dry-run", action="store_true", help="the same plumbing on the CPU in seconds")
    parser.add_argument("--steps", type=int, default=200, help="paper-profile steps (default 200)")
    parser.add_argument("--only", default="tests,throughput,paper_run", help="sections to run (comma-separated)")
    args = parser.parse_args(argv)
    if args.pack:
        size = pack(Path(args.data), args.pack)
        print(f"gpu_check: packed {size / 2**20:.1f} MiB of images into {args.pack}")
        return 0
    if not args.out:
        parser.error("--out is required (or --pack DIR)")
    args.device = "cpu" if args.dry_run else "cuda"
    sections = set(args.only.split(","))

    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible; use --dry-run to check the plumbing on the CPU", file=sys.stderr)
        return 2
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if args.dry_run:  # plumbing only: one thread each, so a busy CPU (a sweep beside it) cannot stall it
        env["OMP_NUM_THREADS"] = "1"
    figures: dict[str, Any] = {
        "dry_run": args.dry_run,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "limits_s": LIMITS,
    }
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kdbench-gpu-check-") as scratch:
        work = Path(scratch)
        plan = [("tests", lambda: test_section(args, env, work)),
                ("throughput_fp32", lambda: throughput_section(args, env, work, "fp32")),
                ("throughput_bf16", lambda: throughput_section(args, env, work, "bf16")),
                ("paper_run", lambda: paper_run_section(args, env, work))]
        for name, section in plan:
            if name.split("_")[0] not in sections and name not in sections:
                continue
            print(f"gpu_check: {name} ...", flush=True)
            figures[name] = section()
            status = "ok" if figures[name].get("returncode") == 0 else "FAILED"
            print(f"gpu_check: {name} {status} in {figures[name]['seconds']} s", flush=True)
            if status == "FAILED":
                print(figures[name]["output_tail"][-1500:], flush=True)
            Path(args.out).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")  # kept if killed
    figures["total_seconds"] = round(time.perf_counter() - began, 2)
    figures["ok"] = all(figures[name].get("returncode") == 0 for name in LIMITS if name in figures)
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(f"gpu_check: {'all sections ok' if figures['ok'] else 'some sections FAILED'} in "
          f"{figures['total_seconds']} s; figures in {args.out}")
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
