"""The blind-SR track: Gaussian-blur degradations of the KDSR (DASR) protocol, for training and for testing.

`data.degradation` selects a protocol for every method and network; `bicubic` (the default) is the classical track.

* `iso_gaussian`: isotropic Gaussian blur, then the bicubic downsampler. Training draws sigma uniformly in
  [0.2, 4.0]; the test is **Gaussian8**: each test image degraded with 8 fixed kernels (x4: sigma 1.8, 2.0, ..., 3.2;
  x2: 0.9, 1.0, ..., 1.6), scores averaged over the kernels (and images).
* `aniso_gaussian`: anisotropic Gaussian blur (eigen-widths lambda_1, lambda_2 uniform in [0.2, 4.0], angle
  uniform in [0, pi)), the bicubic downsampler, then Gaussian noise of a level uniform in [0, 25] (8-bit units); the
  test uses the official test script's kernel (lambda 3.5 and 1.5, 30 degrees) with noise level 10.

Facts from the official code, `Zj-BinXia/KDSR` @ c7c9e81, KDSR-classic (`option.py`, `utils/util2.py`,
`trainer_iso_stage{3,4}.py`, `trainer_anisonoise_stage{3,4}.py`, `main_*.sh`, `test_*.sh`), re-implemented here:

* kernel 21 x 21 (`--blur_kernel`) on the integer grid -10..10; isotropic exp(-(x^2 + y^2) / (2 sigma^2));
  anisotropic exp(-v' C^-1 v / 2) with C = R(theta) diag(lambda_1^2, lambda_2^2) R(theta)', v = (x, y), x the
  column offset; normalised to sum 1; applied as a cross-correlation, every channel alike, on the HR padded by
  reflection;
* downsampler: MATLAB-style antialiased bicubic whose border pixels repeat (the official torch bicubic clamps its
  indices: `kd.data.imresize`, `border="replicate"`); then noise (aniso only), then the LR is quantised to 8 bits;
* training: one kernel and one noise level per batch (`SRMDPreprocessing` draws one and expands it over the batch),
  applied to the augmented HR patch; the noise pattern differs per image;
* test: the Gaussian8 score of a test set is sum over images and kernels / (images x kernels), the mean over the
  kernels of each kernel's mean.

Deliberately different: degradations run in float64 (the official code: float32 on the GPU; the blur here by FFT,
the same to float64 rounding) and the test noise is
drawn from a seeded generator, so the cached test LR images are the same on every machine; the official code has no
Gaussian8 kernels for x3 or x8, so `iso_gaussian` is refused there.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kd.data.benchmark import EvalImage
from kd.data.files import DatasetFiles, cached_image, check_scale, dataset_files
from kd.data.imresize import imresize, modcrop
from kd.data.io import read_image
from kd.data.roots import cache_dir
from kd.errors import KdError, unknown_choice
from kd.fileio import path_component

KERNEL_SIZE = 21  # official `--blur_kernel`
# Bump when the degraded images a protocol produces change (a test pins them): it is part of the run id.
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class Kernel:
    """One fixed test degradation: isotropic `sigma`, or anisotropic (`lambdas`, `theta` in degrees); `noise` in
    8-bit levels."""

    sigma: float | None = None
    lambdas: tuple[float, float] | None = None
    theta: float = 0.0
    noise: float = 0.0

    @property
    def label(self) -> str:
        """Short and path-safe: `sigma1.8`, `aniso3.5x1.5r30n10`."""
        if self.sigma is not None:
            return f"sigma{self.sigma:g}"
        return f"aniso{self.lambdas[0]:g}x{self.lambdas[1]:g}r{self.theta:g}" + (f"n{self.noise:g}" if self.noise else "")

    def weights(self) -> torch.Tensor:
        if self.sigma is not None:
            return isotropic_kernel(self.sigma)
        return anisotropic_kernel(*self.lambdas, math.radians(self.theta))


@dataclass(frozen=True)
class Protocol:
    """A blind-SR track: how training patches are degraded and which fixed kernels degrade the test images."""

    name: str
    test_name: str
    test_kernels: dict[int, tuple[Kernel, ...]]  # by scale; 0: every scale
    sigma_range: tuple[float, float] | None = None  # isotropic training blur
    lambda_range: tuple[float, float] | None = None  # anisotropic training blur (angle uniform in [0, pi))
    noise_max: float = 0.0  # training noise level uniform in [0, noise_max] (8-bit levels)

    def kernels(self, scale: int) -> tuple[Kernel, ...]:
        kernels = self.test_kernels.get(scale) or self.test_kernels.get(0)
        if not kernels:
            shown = ", ".join(f"x{s}" for s in sorted(self.test_kernels))
            raise KdError(f"data.degradation={self.name}: its {self.test_name} test is defined for {shown} only (the "
                          f"official test code has no kernels for x{scale}); use --scale "
                          f"{' or '.join(str(s) for s in sorted(self.test_kernels))}, or data.degradation=bicubic")
        return kernels

    def fingerprint(self) -> str:
        """sha256 of everything that makes the degraded images (part of a blind-SR run's inputs)."""
        spec = {**asdict(self), "kernel_size": KERNEL_SIZE, "generator_version": GENERATOR_VERSION}
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def _gaussian8(first: float, step: float) -> tuple[Kernel, ...]:
    return tuple(Kernel(sigma=round(first + i * step, 1)) for i in range(8))


PROTOCOLS: dict[str, Protocol] = {
    "iso_gaussian": Protocol("iso_gaussian", "Gaussian8", {2: _gaussian8(0.9, 0.1), 4: _gaussian8(1.8, 0.2)},
                             sigma_range=(0.2, 4.0)),
    "aniso_gaussian": Protocol("aniso_gaussian", "aniso 3.5/1.5/30 + noise 10",
                               {0: (Kernel(lambdas=(3.5, 1.5), theta=30.0, noise=10.0),)}, lambda_range=(0.2, 4.0),
                               noise_max=25.0),
}
BICUBIC = "bicubic"


def protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise unknown_choice("data.degradation", name, {BICUBIC: None, **PROTOCOLS})
    return PROTOCOLS[name]


def check_degradation(name: str, scale: int) -> None:
    """A `data.degradation` that exists and tests at `scale` (before any work)."""
    if name != BICUBIC:
        protocol(name).kernels(scale)


# ------------------------------------------------------------------------------------------------ kernels


def _grid(size: int) -> torch.Tensor:
    return torch.arange(size, dtype=torch.float64) - size // 2


def isotropic_kernel(sigma: float, size: int = KERNEL_SIZE) -> torch.Tensor:
    """(size, size) float64: exp(-(x^2 + y^2) / (2 sigma^2)) normalised to sum 1, made as the outer product of its
    normalised 1-d profile (the same kernel: the normaliser factorises too)."""
    profile = torch.exp(-_grid(size) ** 2 / (2.0 * sigma**2))
    profile = profile / profile.sum()
    return torch.outer(profile, profile)


def anisotropic_kernel(lambda_1: float, lambda_2: float, theta: float, size: int = KERNEL_SIZE) -> torch.Tensor:
    """(size, size) float64: exp(-v' C^-1 v / 2), C = R(theta) diag(lambda_1^2, lambda_2^2) R(theta)', v = (column
    offset, row offset), normalised to sum 1; `theta` in radians."""
    rotation = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]],
                            dtype=torch.float64)
    covariance = rotation @ torch.diag(torch.tensor([lambda_1**2, lambda_2**2], dtype=torch.float64)) @ rotation.T
    rows, cols = torch.meshgrid(_grid(size), _grid(size), indexing="ij")
    offsets = torch.stack([cols, rows], dim=-1)  # v = (x, y)
    kernel = torch.exp(-0.5 * torch.einsum("...i,ij,...j->...", offsets, torch.linalg.inv(covariance), offsets))
    return kernel / kernel.sum()


def blur(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Cross-correlation of a (C, H, W) image with a (k, k) kernel, every channel alike, on the reflection-padded
    image; (C, H, W) float64. Computed by FFT (exact to float64 rounding; a 21 x 21 direct convolution in float64
    is about 40x slower on a CPU)."""
    pad = kernel.shape[-1] // 2
    x = F.pad(image[None].double(), (pad, pad, pad, pad), mode="reflect")[0]
    size = x.shape[-2:]
    spectrum = torch.fft.rfft2(x) * torch.fft.rfft2(kernel.double().flip(-2, -1), s=size)
    # The circular convolution with the flipped kernel, read where it never wraps: the correlation's valid part.
    return torch.fft.irfft2(spectrum, s=size)[..., 2 * pad :, 2 * pad :]


def degrade(hr: torch.Tensor, kernel: torch.Tensor, scale: int, noise: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 LR (3, H/s, W/s) of a uint8 or [0, 1] float HR (3, H, W) whose sides divide by `scale`: blur with the
    (k, k) `kernel`, bicubic downsampling with repeated borders, plus `noise` (a float (3, H/s, W/s) in [0, 1] units)
    when given, quantised."""
    if min(hr.shape[-2:]) <= kernel.shape[-1] // 2:
        raise KdError(f"an image of {hr.shape[-1]}x{hr.shape[-2]} pixels is too small for the {kernel.shape[-1]}x"
                      f"{kernel.shape[-1]} blur of the blind-SR track; remove it or use data.degradation=bicubic")
    x = hr.double() / 255.0 if hr.dtype == torch.uint8 else hr.double()
    lr = imresize(blur(x, kernel), 1.0 / scale, border="replicate")
    if noise is not None:
        lr = lr + noise
    return (lr * 255.0).round().clamp(0, 255).to(torch.uint8)


# ------------------------------------------------------------------------------------------------ training


@dataclass(frozen=True)
class TrainingDraw:
    """The degradation of one training batch: its (k, k) kernel and noise level (8-bit levels)."""

    kernel: torch.Tensor
    noise: float


def draw_training(protocol_: Protocol, rng: np.random.Generator) -> TrainingDraw:
    """One batch's random degradation, as the official training draws it."""
    if protocol_.sigma_range is not None:
        kernel = isotropic_kernel(float(rng.uniform(*protocol_.sigma_range)))
    else:
        lambda_1, lambda_2 = (float(v) for v in rng.uniform(*protocol_.lambda_range, size=2))
        kernel = anisotropic_kernel(lambda_1, lambda_2, float(rng.uniform(0.0, math.pi)))
    return TrainingDraw(kernel, float(rng.uniform(0.0, protocol_.noise_max)) if protocol_.noise_max else 0.0)


def gaussian_noise(shape: tuple[int, ...], level: float, rng: np.random.Generator) -> torch.Tensor | None:
    """Gaussian noise of standard deviation `level` 8-bit levels, in [0, 1] units; None at level 0."""
    if level <= 0:
        return None
    return torch.from_numpy(rng.standard_normal(shape)) * (level / 255.0)


# ------------------------------------------------------------------------------------------------ test sets


def _noise_rng(kernel: Kernel, hr_path: Path, hr: torch.Tensor) -> np.random.Generator:
    """The test noise of one image and kernel: seeded by both, so it never changes between machines or runs."""
    digest = hashlib.sha256(f"{kernel.label}|{hr_path.stem}|{tuple(hr.shape)}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def degraded_test_lr(files: DatasetFiles, hr_path: Path, hr: torch.Tensor, scale: int, protocol_: Protocol,
                     kernel: Kernel) -> torch.Tensor:
    """The LR of a modcropped test HR under one fixed kernel, made once and cached under
    `<cache>/lr-blind/<dataset>/<protocol>-<fingerprint>/X<s>/<kernel>/` (keyed by the HR file's sha256)."""
    folder = (cache_dir() / "lr-blind" / (path_component(files.name) or "dataset")
              / f"{protocol_.name}-{protocol_.fingerprint()[:12]}" / f"X{scale}" / kernel.label)
    size = (hr.shape[-2] // scale, hr.shape[-1] // scale)

    def make() -> torch.Tensor:
        noise = gaussian_noise((3, *size), kernel.noise, _noise_rng(kernel, hr_path, hr))
        return degrade(hr, kernel.weights(), scale, noise)

    return cached_image(folder, hr_path, size, make)


def load_degraded_sets(dataset: str, scale: int, name: str,
                       data_root: Path | str | None = None) -> list[tuple[Kernel, list[EvalImage]]]:
    """Per test kernel of protocol `name`, the HR/LR pairs of an evaluation set (sorted by file name), the LR
    degraded from the modcropped HR; `lr_source` names the protocol and kernel."""
    scale = check_scale(scale)
    protocol_ = protocol(name)
    images = [(files, path, modcrop(read_image(path), scale))
              for files in dataset_files(dataset, data_root, purpose="eval") for path in files.hr]
    return [(kernel, [EvalImage(path.stem, hr, degraded_test_lr(files, path, hr, scale, protocol_, kernel),
                                f"{name} {kernel.label}", path) for files, path, hr in images])
            for kernel in protocol_.kernels(scale)]
