"""The image files of a dataset, whether on disk under the data root or embedded, behind one interface."""

from __future__ import annotations

import glob
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from kd.data.embedded import embedded_paths
from kd.data.imresize import downscale_uint8
from kd.data.io import IMAGE_SUFFIXES, read_image, write_png
from kd.data.registry import DatasetInfo, resolve_dataset
from kd.data.roots import cache_dir, dataset_dir, resolve_data_root
from kd.errors import KdError
from kd.fileio import path_component, sha256_file

SUPPORTED_SCALES = (2, 3, 4, 8)


@dataclass(frozen=True)
class DatasetFiles:
    """HR image files of one dataset (or one split of the embedded one), sorted by file name."""

    name: str  # canonical dataset name; "default/train" or "default/test" for the embedded splits
    hr: tuple[Path, ...]
    directory: Path | None = None  # <root>/<Name> for on-disk datasets

    def shipped_lr(self, hr_path: Path, scale: int) -> Path | None:
        """`LR_bicubic/X<s>/<stem>.*` beside `HR/`, if present (any image extension)."""
        if self.directory is None:
            return None
        folder = self.directory / "LR_bicubic" / f"X{scale}"
        for suffix in (hr_path.suffix, *IMAGE_SUFFIXES):
            candidate = folder / f"{hr_path.stem}{suffix}"
            if candidate.is_file():
                return candidate
        return None


def check_scale(scale: int) -> int:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Integral) or int(scale) not in SUPPORTED_SCALES:
        supported = ", ".join(f"x{s}" for s in SUPPORTED_SCALES)
        raise KdError(f"unsupported scale {scale!r}: kdbench datasets support {supported}")
    return int(scale)


def dataset_files(dataset: str | DatasetInfo, data_root: Path | str | None, purpose: str) -> list[DatasetFiles]:
    """Files of `dataset` for `purpose` ("train" or "eval"); a union dataset (291) gives one entry per part."""
    info = dataset if isinstance(dataset, DatasetInfo) else resolve_dataset(dataset, data_root)
    if info.parts:
        parts = [files for part in info.parts for files in dataset_files(part, data_root, purpose)]
        return _split(parts, info) if info.keep or info.drop else parts
    if info.embedded:
        split = "train" if purpose == "train" else "test"
        return [DatasetFiles(f"{info.name}/{split}", tuple(embedded_paths(split)))]
    directory = Path(info.location) if info.location else dataset_dir(info, resolve_data_root(data_root))
    hr_dir = directory / "HR" if (directory / "HR").is_dir() else directory
    hr = tuple(sorted(p for p in hr_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()))
    if not hr:
        raise KdError(f"dataset {info.name}: no PNG/BMP/JPEG images in {hr_dir}")
    stems = [p.stem for p in hr]
    if len(set(stems)) != len(stems):
        raise KdError(f"dataset {info.name}: two HR files share a name in {hr_dir} (e.g. a.png and a.bmp)")
    return [DatasetFiles(info.name, hr, directory)]


def _split(parts: list[DatasetFiles], info: DatasetInfo) -> list[DatasetFiles]:
    """The parts' images kept by `info.keep` / `info.drop`; every kept image must exist."""
    if info.keep:
        missing = sorted(set(info.keep) - {p.stem for files in parts for p in files.hr})
        if missing:
            where = ", ".join(str(files.directory or files.name) for files in parts)
            raise KdError(f"dataset {info.name}: {where} lacks {', '.join(missing)} ({len(missing)} of its "
                          f"{len(info.keep)} images); put the complete {' + '.join(info.parts)} there.")
    return [
        DatasetFiles(files.name, tuple(p for p in files.hr if (not info.keep or p.stem in info.keep)
                                       and p.stem not in info.drop), files.directory)
        for files in parts
    ]


def generated_lr(files: DatasetFiles, hr_path: Path, hr_cropped: torch.Tensor, scale: int) -> torch.Tensor:
    """MATLAB-style LR of a modcropped HR image, cached as PNG under `cache_dir()/lr` keyed by the HR's sha256."""
    folder = cache_dir() / "lr" / (path_component(files.name) or "dataset") / f"X{scale}"
    size = (hr_cropped.shape[-2] // scale, hr_cropped.shape[-1] // scale)
    return cached_image(folder, hr_path, size, lambda: downscale_uint8(hr_cropped, scale))


def cached_image(folder: Path, hr_path: Path, size: tuple[int, int], make: Callable[[], torch.Tensor]) -> torch.Tensor:
    """`<folder>/<stem>.<key>.png` (key: the HR file's sha256) when it holds an image of `size` (H, W); else `make()`,
    written there for the next time (an entry for an older version of the HR file is removed)."""
    key = sha256_file(hr_path)[:16]
    cached = folder / f"{hr_path.stem}.{key}.png"
    if cached.is_file():
        try:
            image = read_image(cached)
            if tuple(image.shape[-2:]) == tuple(size):
                return image
        except KdError:
            pass  # a damaged cache entry is simply regenerated
    image = make()
    try:
        write_png(cached, image)
    except OSError as exc:
        warnings.warn(f"cannot cache generated LR in {folder} ({exc}); set $KDBENCH_CACHE to a writable folder")
        return image
    for stale in folder.glob(f"{glob.escape(hr_path.stem)}.*.png"):
        if stale != cached and len(stale.name) == len(cached.name):
            stale.unlink(missing_ok=True)  # an entry for an older version of this HR file
    return image
