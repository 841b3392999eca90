"""The `paper` profile end to end on the CPU, so its path (DIV2K layout, a paper-size teacher checkpoint, the paper
student, evaluation) is never first exercised on a cluster.

What is real: the profile's networks (ASID `paper`, RCAN `paper`: 10 groups x 20 blocks, 15.6M parameters, its
weights randomly initialised and saved as a checkpoint, since the official file is not shipped), its optimiser and
schedule, a `DIV2K_train/HR` folder read through the data root, patch sampling, MATLAB-bicubic LR generation,
validation, evaluation, the run record. What is shrunk with --set so it runs in seconds on 2 cores: the steps (2),
the batch (2) and the LR patch (12 instead of 64), the method (`logits`: no feature probes, so the
teacher runs only in the two steps), and the evaluation set (two 64x64 crops of embedded photos in a
`DIV2K_valid` folder instead of Set5/Set14/B100).
"""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from kd.cli import main
from kd.data.embedded import embedded_paths
from kd.models import create


def _div2k_layout(root, crop: int = 96) -> None:
    """DIV2K_train/HR from the six embedded training photos, DIV2K_valid/HR from two test photos (centre crops)."""
    for folder, paths, side in (("DIV2K_train", embedded_paths("train"), crop),
                                ("DIV2K_valid", embedded_paths("test")[:2], 64)):
        target = root / folder / "HR"
        target.mkdir(parents=True)
        for index, path in enumerate(paths, start=1 if folder == "DIV2K_train" else 801):
            image = np.asarray(Image.open(path).convert("RGB"))
            top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
            Image.fromarray(image[top:top + side, left:left + side]).save(target / f"{index:04d}.png")


def test_paper_profile_runs_end_to_end_on_the_cpu(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    _div2k_layout(data)
    torch.manual_seed(0)
    teacher = create("rcan", 4, "paper")
    assert sum(p.numel() for p in teacher.parameters()) > 15_000_000  # the paper-size network
    checkpoint = tmp_path / "rcan_paper_x4_random.pt"
    torch.save(teacher.state_dict(), checkpoint)

    argv = ["run", "--profile", "paper", "--student", "asid", "--teacher", "rcan", "--method", "logits",
            "--teacher-ckpt", str(checkpoint), "--data-root", str(data), "--out-dir", str(tmp_path / "runs"),
            "--scale", "4", "--no-progress", "--threads", "2",
            "--set", "train.steps=2", "--set", "train.batch_size=2", "--set", "train.lr_patch=12",
            "--set", "train.log_every=1", "--set", "eval.datasets=[DIV2K_valid]",
            "--set", "eval.val_dataset=DIV2K_valid", "--set", "eval.lpips=false"]
    assert main(argv) == 0, capsys.readouterr().err
    summaries = list((tmp_path / "runs").glob("*/summary.json"))
    assert len(summaries) == 1
    summary = json.loads(summaries[0].read_text())
    run_dir = summaries[0].parent
    assert summary["profile"] == "paper" and summary["steps"] == 2
    assert summary["student_preset"] == "paper"
    assert summary["teacher"] == {"source": "checkpoint", "path": str(checkpoint), "arch": "rcan", "preset": "paper",
                                  "dtype": "float32"}
    assert summary["datasets"]["DIV2K_valid"]["psnr_y"] > 5  # a real number from two evaluated images
    per_image = (run_dir / "eval" / "per_image.csv").read_text().strip().splitlines()
    assert len(per_image) == 1 + 2
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [record for record in logged if "terms" in record]
    assert [record["step"] for record in steps] == [1, 2]
    assert all(np.isfinite(record["loss"]) and record["terms"]["kd"] > 0 for record in steps)
    config = (run_dir / "config.yaml").read_text()
    assert "train: DIV2K" in config and "optimizer: adamw" in config  # the paper recipe, not a fallback
