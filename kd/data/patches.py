"""Training patches: aligned random LR/HR crops whose every item is a pure function of (seed, index).

That purity is what makes training resumable and worker-independent: the trainer resumes at sample index
`step * batch` and gets exactly the patches it would have seen, with any `DataLoader(num_workers=...)`.

Item `index`: epoch = index // n_images; the image is the per-epoch permutation (seeded by (seed, epoch)) at
index % n_images; the crop position and the flips/rotation come from a generator seeded by (seed, index).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from kd.data.degradations import BICUBIC, degrade, draw_training, gaussian_noise, protocol
from kd.data.files import check_scale, dataset_files, generated_lr
from kd.data.imresize import modcrop
from kd.data.io import read_image
from kd.errors import KdError

_PERMUTATION_STREAM = 0
_ITEM_STREAM = 1
_DEGRADATION_STREAM = 2  # blind-SR track: one draw per batch
_NOISE_STREAM = 3  # blind-SR track: noise per item


class PatchDataset(Dataset):
    """(lr, hr) float32 patches in [0, 1]: lr (3, p, p), hr (3, p*s, p*s), from one or more training datasets.

    HR images are modcropped to the scale and their LR made once (the shipped `LR_bicubic` file when present, else
    the MATLAB-style resize, cached on disk), then held in memory as uint8. For the embedded `default` dataset the
    train split is used. `length` is the number of distinct indices (the trainer's total samples).

    `degradation` other than `bicubic` (the blind-SR track, `kd.data.degradations`): the LR patch is degraded from
    the augmented HR patch, with one random kernel (and noise level) per `batch_size` consecutive items, as the
    official blind-SR training draws one per batch.
    """

    def __init__(
        self,
        dataset: str | Sequence[str],
        scale: int,
        lr_patch: int,
        *,
        data_root: Path | str | None = None,
        seed: int = 0,
        augment: bool = True,
        length: int = 1_000_000,
        degradation: str = BICUBIC,
        batch_size: int = 1,
    ) -> None:
        scale = check_scale(scale)
        if lr_patch < 1:
            raise KdError(f"LR patch size must be at least 1, got {lr_patch}")
        if length < 1:
            raise KdError(f"PatchDataset length must be at least 1, got {length}")
        self.scale = scale
        self.lr_patch = lr_patch
        self.seed = int(seed)
        self.augment = augment
        self.length = int(length)
        self.protocol = None if degradation == BICUBIC else protocol(degradation)
        self.batch_size = int(batch_size)
        names = [dataset] if isinstance(dataset, str) else list(dataset)
        self.names: list[str] = []
        self.lr_images: list[torch.Tensor] = []
        self.hr_images: list[torch.Tensor] = []
        skipped: list[str] = []
        for name in names:
            for files in dataset_files(name, data_root, purpose="train"):
                for hr_path in files.hr:
                    hr = modcrop(read_image(hr_path), scale)
                    if min(hr.shape[-2:]) < lr_patch * scale:
                        skipped.append(f"{files.name}/{hr_path.name}")
                        continue
                    self.names.append(f"{files.name}/{hr_path.stem}")
                    self.hr_images.append(hr)
                    if self.protocol is None:
                        self.lr_images.append(self._lr_for(files, hr_path, hr))
        if skipped:
            warnings.warn(
                f"{len(skipped)} image(s) smaller than the HR patch {lr_patch * scale}px skipped: "
                f"{', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}",
                stacklevel=2,
            )
        if not self.hr_images:
            raise KdError(
                f"no training image of {', '.join(names)} is at least {lr_patch * scale}px on each side "
                f"(LR patch {lr_patch} x{scale}); use a smaller patch size"
            )
        self._permutation_cache: tuple[int, np.ndarray] | None = None

    def _lr_for(self, files, hr_path: Path, hr: torch.Tensor) -> torch.Tensor:
        shipped = files.shipped_lr(hr_path, self.scale)
        size = (hr.shape[-2] // self.scale, hr.shape[-1] // self.scale)
        if shipped is not None:
            lr = read_image(shipped)
            if tuple(lr.shape[-2:]) == size:
                return lr
            warnings.warn(f"{shipped} does not match modcrop({hr_path.name}) / {self.scale}; regenerating it")
        return generated_lr(files, hr_path, hr, self.scale)

    def __len__(self) -> int:
        return self.length

    @property
    def n_images(self) -> int:
        return len(self.hr_images)

    def image_order(self, epoch: int) -> np.ndarray:
        """The permutation of image indices used in `epoch`."""
        cached = self._permutation_cache
        if cached is not None and cached[0] == epoch:
            return cached[1]
        rng = np.random.default_rng([self.seed, _PERMUTATION_STREAM, epoch])
        order = rng.permutation(self.n_images)
        self._permutation_cache = (epoch, order)
        return order

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = int(index)
        if not 0 <= index < self.length:
            raise IndexError(f"PatchDataset index {index} out of range [0, {self.length})")
        epoch, position = divmod(index, self.n_images)
        image = int(self.image_order(epoch)[position])
        hr_full = self.hr_images[image]
        rng = np.random.default_rng([self.seed, _ITEM_STREAM, index])
        p, s = self.lr_patch, self.scale
        top = int(rng.integers(0, hr_full.shape[-2] // s - p + 1))
        left = int(rng.integers(0, hr_full.shape[-1] // s - p + 1))
        hr = hr_full[:, top * s : (top + p) * s, left * s : (left + p) * s]
        flips = [bool(b) for b in rng.integers(0, 2, size=3)] if self.augment else None
        if self.protocol is not None:  # blind SR: the LR is made from the augmented HR patch
            hr = _augment(hr, *flips) if flips else hr
            lr = self._degrade(hr, index)
        else:
            lr = self.lr_images[image][:, top : top + p, left : left + p]
            if flips:
                lr, hr = (_augment(t, *flips) for t in (lr, hr))
        return lr.float().div_(255.0), hr.float().div_(255.0)

    def _degrade(self, hr: torch.Tensor, index: int) -> torch.Tensor:
        """The blind-SR LR patch of item `index`: its batch's kernel and noise level, its own noise pattern."""
        draw = draw_training(self.protocol, np.random.default_rng([self.seed, _DEGRADATION_STREAM,
                                                                   index // self.batch_size]))
        size = (3, hr.shape[-2] // self.scale, hr.shape[-1] // self.scale)
        noise = gaussian_noise(size, draw.noise, np.random.default_rng([self.seed, _NOISE_STREAM, index]))
        return degrade(hr, draw.kernel, self.scale, noise)


def _augment(img: torch.Tensor, hflip: bool, vflip: bool, rot90: bool) -> torch.Tensor:
    if hflip:
        img = img.flip(-1)
    if vflip:
        img = img.flip(-2)
    if rot90:
        img = img.transpose(-1, -2)  # with the flips above this reaches all 8 dihedral transforms
    return img.contiguous()
