"""Distillation from a notebook: a registered student by name, then your own student network and training pairs.

Each block is one notebook cell. The `smoke` profile keeps it to seconds (tiny networks, a few steps on the
photographs shipped with scikit-image); use profile="cpu" or "paper" and real data for numbers worth reading.

    python examples/distill_in_a_notebook.py [RUNS_DIR]
"""

import sys

import torch
import torch.nn.functional as F
from skimage import data as photos
from torch import nn

import kd

runs = sys.argv[1] if len(sys.argv) > 1 else "runs"

# %% 1. Everything by name, as `kdbench run` would: the RCAN teacher comes from the zoo (trained when missing).
by_name = kd.distill(student="asid", teacher="rcan", method="logits", profile="smoke", runs_dir=runs)
print(by_name.run_dir.name, by_name.summary["datasets"]["default"])


# %% 2. Your own student (any module mapping RGB in [0, 1] to RGB in [0, 1], x4) and your own (lr, hr) pairs.
class TinySR(nn.Module):
    def __init__(self, scale: int = 4, width: int = 16) -> None:
        super().__init__()
        self.scale = scale
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False) + self.body(lr)


class AstronautPatches(torch.utils.data.Dataset):
    """64 x 64 HR patches of one photograph and their 16 x 16 bicubic LR, in a fixed shuffled order."""

    def __init__(self, count: int = 32) -> None:
        hr = torch.from_numpy(photos.astronaut()).permute(2, 0, 1).float().div(255)
        generator = torch.Generator().manual_seed(0)
        corners = torch.randint(0, hr.shape[-1] - 64, (count, 2), generator=generator)
        self.hr = torch.stack([hr[:, y : y + 64, x : x + 64] for y, x in corners.tolist()])
        self.lr = F.interpolate(self.hr, scale_factor=0.25, mode="bicubic", antialias=True).clamp(0, 1)

    def __len__(self) -> int:
        return len(self.hr)

    def __getitem__(self, index: int):
        return self.lr[index], self.hr[index]


torch.manual_seed(0)
own = kd.distill(student=TinySR(), teacher="rcan", method="logits", data=AstronautPatches(), profile="smoke",
                 runs_dir=runs, train={"steps": 8})
print(own.run_dir.name, own.summary["datasets"]["default"])

# %% 3. Reload a recorded student (student.pt names its network) and evaluate it on a folder or a named set.
student = kd.load_official("asid", by_name.run_dir / "student.pt")
result = kd.evaluate_model(student, ["default"], 4, with_lpips=False, progress=False)
print(result.per_dataset[["dataset", "psnr_y", "ssim_y"]].to_string(index=False))
