"""Evaluation pairs: modcropped HR and its bicubic LR, per the benchmark protocol (METRICS.md, section 2)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from kd.data.files import DatasetFiles, check_scale, dataset_files, generated_lr
from kd.data.imresize import modcrop
from kd.data.io import read_image
from kd.errors import KdError

LR_SOURCES = ("auto", "shipped", "generated")


@dataclass(frozen=True)
class EvalImage:
    name: str  # file stem
    hr: torch.Tensor  # uint8 (3, H', W'), modcropped to the scale
    lr: torch.Tensor  # uint8 (3, H'/s, W'/s)
    lr_source: str  # "shipped" (MATLAB files on disk) or "generated" (our MATLAB-style imresize)
    path: Path | None = None  # the HR file


def load_eval_images(
    dataset: str, scale: int, data_root: Path | str | None = None, lr_source: str = "auto"
) -> list[EvalImage]:
    """HR/LR pairs of an evaluation set, sorted by file name.

    lr_source: "auto" uses the shipped `LR_bicubic/X<s>` file of an image when there is one and generates the LR
    otherwise (or, with a warning, when the shipped file's size is not modcrop(HR) / s); "shipped" requires the files;
    "generated" always uses kdbench's MATLAB-style resize (cached).
    For the embedded `default` dataset the images are its test split.
    """
    scale = check_scale(scale)
    if lr_source not in LR_SOURCES:
        raise KdError(f"unknown LR source {lr_source!r}: choose one of {', '.join(LR_SOURCES)}")
    return [
        _eval_image(files, hr_path, scale, lr_source)
        for files in dataset_files(dataset, data_root, purpose="eval")
        for hr_path in files.hr
    ]


def _eval_image(files: DatasetFiles, hr_path: Path, scale: int, lr_source: str) -> EvalImage:
    hr = modcrop(read_image(hr_path), scale)
    if min(hr.shape[-2:]) == 0:
        raise KdError(f"{hr_path} is smaller than the scale x{scale}")
    lr_size = (hr.shape[-2] // scale, hr.shape[-1] // scale)
    shipped = files.shipped_lr(hr_path, scale) if lr_source != "generated" else None
    if shipped is not None:
        lr = read_image(shipped)
        if tuple(lr.shape[-2:]) == lr_size:
            return EvalImage(hr_path.stem, hr, lr, "shipped", hr_path)
        mismatch = (
            f"{shipped} is {lr.shape[-1]}x{lr.shape[-2]} but modcrop({hr_path.name}, {scale}) / {scale} is "
            f"{lr_size[1]}x{lr_size[0]}"
        )
        if lr_source == "shipped":
            raise KdError(f"{mismatch}; fix the file or use lr_source 'generated' (--lr-source generated)")
        warnings.warn(f"{mismatch}; using a generated LR image instead", stacklevel=3)
    elif lr_source == "shipped":
        if files.directory is None:
            raise KdError(f"dataset {files.name} has no shipped LR files; use lr_source 'auto' or 'generated'")
        expected = files.directory / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}.png"
        raise KdError(f"no shipped LR for {hr_path.name} at x{scale}: expected {expected}")
    return EvalImage(hr_path.stem, hr, generated_lr(files, hr_path, hr, scale), "generated", hr_path)
