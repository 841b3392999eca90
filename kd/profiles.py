"""Run profiles: named layers of configuration values over the `kd.config` defaults.

* `smoke`: tiny networks, a handful of steps on the embedded photos; seconds. For tests and wiring checks.
* `demo`: the real ASID student and an RCAN `mini` teacher trained briefly on the embedded photos; a few minutes
  on a laptop CPU. The README's main command: it exercises everything, but is far too short to rank methods.
* `cpu`: the real ASID student, `mini` teachers, the 291 set for training, Set5/Set14/B100 for testing; one
  distillation run at x4 fits in about 15 minutes on 2 CPU cores (calibrated by benchmarks/calibrate_teachers.py).
* `paper`: official configurations and recipes (DIV2K, official schedules and teachers); for GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kd.errors import unknown_choice


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    values: dict[str, Any]


SMOKE = Profile(
    "smoke",
    "tiny presets, 6 steps on the embedded photos, no LPIPS: seconds, for tests",
    {
        "student": {"arch": "asid", "preset": "tiny"},
        "teacher": {
            "arch": "rcan",
            "preset": "tiny",
            "train": {"steps": 6, "batch_size": 2, "lr_patch": 16, "lr": 1e-3, "schedule": "constant",
                      "log_every": 1, "ckpt_every": 2, "val_every": 0},
        },
        "data": {"train": "default"},
        "train": {"steps": 6, "batch_size": 2, "lr_patch": 16, "optimizer": "adam", "lr": 1e-3,
                  "schedule": "multistep", "milestones": [0.5], "gamma": 0.5,
                  "log_every": 1, "ckpt_every": 2, "val_every": 3},
        "eval": {"datasets": ["default"], "lpips": False, "val_dataset": "default"},
    },
)

CPU = Profile(
    "cpu",
    "real ASID student, mini teachers, 291 training set, Set5/Set14/B100 test; ~15 min per x4 run on 2 cores",
    {
        "student": {"arch": "asid", "preset": None},
        "teacher": {
            "arch": "rcan",
            "preset": "mini",
            # Teacher recipe: must beat the no-KD student by >= 0.3 dB on Set5/Set14 x4 within 45 minutes.
            # RCAN mini, 5000 steps: Set5/Set14 +1.37/+0.95 dB over the no-KD student, 0.48 s/step (39.7 min) on
            # 2 quiet cores (1500 steps gave only +0.21/+0.13). HAN and SwinIR: not yet measured.
            # benchmarks/calibrate_teachers.py measures the fit and the gap.
            "train": {"steps": 5000, "batch_size": 8, "lr_patch": 32, "optimizer": "adam", "lr": 5e-4,
                      "schedule": "cosine", "min_lr": 1e-6, "log_every": 10, "ckpt_every": 100, "val_every": 500},
        },
        "data": {"train": "291"},
        # ASID's own optimiser (AdamW 5e-4, wd 1e-4), with a cosine decay suited to a short schedule.
        "train": {"steps": 1000, "batch_size": 4, "lr_patch": 48, "optimizer": "adamw", "lr": 5e-4,
                  "weight_decay": 1e-4, "schedule": "cosine", "min_lr": 1e-6,
                  "log_every": 10, "ckpt_every": 100, "val_every": 250},
        "eval": {"datasets": ["Set5", "Set14", "B100"], "lpips": True, "val_dataset": "Set5"},
    },
)

PAPER = Profile(
    "paper",
    "official configurations and recipes (DIV2K, official schedules, official teacher checkpoints); GPU",
    {
        "student": {"arch": "asid", "preset": "paper"},
        "teacher": {
            "arch": "rcan",
            "preset": "paper",
            # RCAN recipe: Adam 1e-4, batch 16, LR patch 48, halved every 2e5 iterations.
            "train": {"steps": 1_000_000, "batch_size": 16, "lr_patch": 48, "optimizer": "adam", "lr": 1e-4,
                      "schedule": "multistep", "milestones": [200_000, 400_000, 600_000, 800_000], "gamma": 0.5,
                      "log_every": 100, "ckpt_every": 5000, "val_every": 5000},
        },
        "data": {"train": "DIV2K"},
        # ASID recipe: AdamW 5e-4, wd 1e-4, batch 16, LR patch 64, x0.5 at epoch 250 of 500 (3,200 it/epoch).
        "train": {"steps": 1_600_000, "batch_size": 16, "lr_patch": 64, "optimizer": "adamw", "lr": 5e-4,
                  "weight_decay": 1e-4, "schedule": "multistep", "milestones": [800_000], "gamma": 0.5,
                  "log_every": 100, "ckpt_every": 5000, "val_every": 5000},
        "eval": {"datasets": ["Set5", "Set14", "B100"], "lpips": True, "val_dataset": "Set5"},
    },
)

DEMO = Profile(
    "demo",
    "the real ASID student and a mini teacher, briefly trained on the embedded photos: a few minutes on a laptop "
    "CPU; shows the whole pipeline, too short for conclusions about methods",
    {
        "student": {"arch": "asid", "preset": "paper"},
        "teacher": {
            "arch": "rcan",
            "preset": "mini",
            "train": {"steps": 150, "batch_size": 4, "lr_patch": 32, "optimizer": "adam", "lr": 5e-4,
                      "schedule": "cosine", "min_lr": 1e-5, "log_every": 10, "ckpt_every": 50, "val_every": 0},
        },
        "data": {"train": "default"},
        "train": {"steps": 150, "batch_size": 4, "lr_patch": 32, "optimizer": "adamw", "lr": 5e-4,
                  "weight_decay": 1e-4, "schedule": "cosine", "min_lr": 1e-5,
                  "log_every": 10, "ckpt_every": 50, "val_every": 0},
        "eval": {"datasets": ["default"], "lpips": True, "val_dataset": "default"},
    },
)

PROFILES: dict[str, Profile] = {p.name: p for p in (SMOKE, DEMO, CPU, PAPER)}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise unknown_choice("profile", name, PROFILES)
    return PROFILES[name]


def profile_layer(name: str) -> tuple[str, dict[str, Any]]:
    """The (source, values) layer for `kd.config.resolve`, with the profile name recorded in the config."""
    profile = get_profile(name)
    return f"profile '{name}'", {**profile.values, "profile": name}
