"""The `paper` profile end to end on the CPU, so its path (DIV2K layout, a paper-size teacher checkpoint, the paper
student, evaluation) is never first exercised on a cluster.

What is real: the profile's networks (ASID `paper`, RCAN `paper`: 10 groups x 20 blocks, 15.6M parameters, its
weights randomly initialised and saved as a checkpoint, since the official file is not shipped), its optimiser and
schedule, a `DIV2K_train/HR` folder read through the data root, patch sampling, MATLAB-bicubic LR generation,
validation, evaluation, the run record. What is shrunk with --set so it runs in seconds on 2 cores: the steps (2),
the batch (2) and the LR patch (12 instead of 64), the method (`logits`: no feature probes, so the
teacher runs only in the two steps), and the images (crops of the embedded photos: six for DIV2K_train, the ten
of the profile's validation set `DIV2K-val10`, and a two-image Set5 for the evaluation instead of Set5/Set14/B100).
"""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from kd.cli import main
from kd.data.embedded import embedded_paths
from kd.models import create


def _div2k_layout(root) -> None:
    """DIV2K_train/HR: 96x96 centre crops of the six embedded training photos. DIV2K_valid/HR: 0801-0810 (the
    profile's validation set `DIV2K-val10`), 48x48 crops of the embedded test photos. Set5/HR: two 64x64 crops
    (the evaluation)."""
    def crops(paths, side, count):
        images = [np.asarray(Image.open(path).convert("RGB")) for path in paths]
        for index in range(count):
            image = images[index % len(images)]
            offset = side * (index // len(images))  # later crops of one photo move down the diagonal
            top, left = min(offset, image.shape[0] - side), min(offset, image.shape[1] - side)
            yield Image.fromarray(image[top:top + side, left:left + side])

    layout = {"DIV2K_train": (embedded_paths("train"), 96, [f"{i:04d}" for i in range(1, 7)]),
              "DIV2K_valid": (embedded_paths("test"), 48, [f"{i:04d}" for i in range(801, 811)]),
              "Set5": (embedded_paths("test")[:2], 64, ["baby", "bird"])}
    for folder, (paths, side, names) in layout.items():
        target = root / folder / "HR"
        target.mkdir(parents=True)
        for name, image in zip(names, crops(paths, side, len(names))):
            image.save(target / f"{name}.png")


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
            "--set", "train.log_every=1", "--set", "eval.datasets=[Set5]", "--set", "eval.lpips=false"]
    assert main(argv) == 0, capsys.readouterr().err
    summaries = list((tmp_path / "runs").glob("*/summary.json"))
    assert len(summaries) == 1
    summary = json.loads(summaries[0].read_text())
    run_dir = summaries[0].parent
    assert summary["profile"] == "paper" and summary["steps"] == 2
    assert summary["best_val"]["dataset"] == "DIV2K-val10" and summary["best_val"]["psnr_y"] > 5
    assert summary["student_preset"] == "paper"
    assert {k: summary["teacher"][k] for k in ("source", "path", "arch", "preset", "dtype")} == {
        "source": "checkpoint", "path": str(checkpoint), "arch": "rcan", "preset": "paper", "dtype": "float32"}
    assert summary["datasets"]["Set5"]["psnr_y"] > 5  # a real number from two evaluated images
    per_image = (run_dir / "eval" / "per_image.csv").read_text().strip().splitlines()
    assert len(per_image) == 1 + 2
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [record for record in logged if "terms" in record]
    assert [record["step"] for record in steps] == [1, 2]
    assert all(np.isfinite(record["loss"]) and record["terms"]["kd"] > 0 for record in steps)
    config = (run_dir / "config.yaml").read_text()
    assert "train: DIV2K" in config and "optimizer: adamw" in config  # the paper recipe, not a fallback
