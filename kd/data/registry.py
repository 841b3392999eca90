"""The datasets kdbench knows by name, and the user's own image folders.

Anywhere a dataset is named (`--data`, `eval.datasets`, `data.train`), a folder works too: a path to a folder of HR
images, to a folder holding `HR/` (and optionally `LR_bicubic/X<s>/` with the same file names; otherwise the LR is
generated with the MATLAB-style bicubic), or the name of such a folder under the data root (`MyPhotos`,
`MyPhotos/HR`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kd.errors import KdError, unknown_choice


@dataclass(frozen=True)
class DatasetInfo:
    name: str  # canonical name, also the folder name under the data root
    aliases: tuple[str, ...]
    role: str  # "eval" (a test set), "train" or "val" (held out for validation): what it is normally used for
    description: str
    image_count: int | None  # None when it varies or is unknown
    download_source: str | None  # key of kd.data.download.SOURCES, or None (manual placement)
    folders: tuple[str, ...] = ()  # folder names accepted on disk, in order of preference (default: (name,))
    parts: tuple[str, ...] = ()  # a union of other datasets (291 = T91 + BSD200)
    embedded: bool = False  # shipped inside an installed package (no data root needed)
    # A split of the parts' images by file stem: only `keep` (when given), never `drop`.
    keep: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    location: str | None = None  # a user's folder: holds HR/ (and LR_bicubic/), or the HR images themselves

    @property
    def folder_names(self) -> tuple[str, ...]:
        return self.folders or (self.name,)


# Validation images held out of the 291 training set: every 20th BSD200 image by sorted file name. Tuning and
# best-checkpoint selection use these, so Set5/Set14/B100 are touched only by the final evaluation.
VALIDATION_291 = ("100075", "12074", "151087", "176035", "198023", "232038", "268002", "317080", "376020", "65010")
# The paper protocol's validation images: DIV2K 0801-0810 (outside DIV2K's 800 training images).
VALIDATION_DIV2K = tuple(f"{i:04d}" for i in range(801, 811))

DATASETS: tuple[DatasetInfo, ...] = (
    DatasetInfo("Set5", (), "eval", "Bevilacqua et al. 2012, 5 images", 5, "benchmark"),
    DatasetInfo("Set14", (), "eval", "Zeyde et al. 2010, 14 images (bridge is grey)", 14, "benchmark"),
    DatasetInfo(
        "B100", ("BSD100",), "eval", "Berkeley BSDS300 test images (Martin et al. 2001)", 100, "benchmark",
        folders=("B100", "BSD100"),
    ),
    DatasetInfo("Urban100", (), "eval", "Huang et al. 2015, urban scenes", 100, "benchmark"),
    DatasetInfo("Manga109", (), "eval", "Matsui et al. 2017, manga covers", 109, None),
    DatasetInfo(
        "DIV2K_train", ("DIV2K",), "train", "DIV2K images 0001-0800 (Agustsson & Timofte 2017)", 800, "div2k_train"
    ),
    DatasetInfo("DIV2K_valid", (), "eval", "DIV2K images 0801-0900", 100, "div2k_valid"),
    DatasetInfo("Flickr2K", (), "train", "2650 Flickr images (Lim et al. 2017, EDSR)", 2650, "flickr2k"),
    DatasetInfo("T91", (), "train", "Yang et al. 2010, 91 small BMP images", 91, "dcscn"),
    DatasetInfo("BSD200", (), "train", "Berkeley BSDS300 training images", 200, "dcscn"),
    DatasetInfo(
        "291", (), "train", "T91 + BSD200, the classic 291-image training set", 291, "dcscn", parts=("T91", "BSD200")
    ),
    DatasetInfo(
        "291-train", (), "train", "291 without the 10 validation images of 291-val (the cpu profile's training set)",
        281, "dcscn", parts=("T91", "BSD200"), drop=VALIDATION_291,
    ),
    DatasetInfo(
        "291-val", (), "val", "10 BSD200 images held out of 291-train for validation and tuning", 10, "dcscn",
        parts=("BSD200",), keep=VALIDATION_291,
    ),
    DatasetInfo(
        "DIV2K-val10", (), "val", "DIV2K 0801-0810, the paper profile's validation images", 10, None,
        parts=("DIV2K_valid",), keep=VALIDATION_DIV2K,
    ),
    DatasetInfo(
        "default", (), "train", "colour photographs shipped with scikit-image (train split for training, "
        "test split for evaluation); needs no data root", 9, None, embedded=True,
    ),
)


def list_datasets() -> tuple[DatasetInfo, ...]:
    return DATASETS


def resolve_dataset(name: str, data_root: str | Path | None = None) -> DatasetInfo:
    """Dataset by canonical name or alias (case-insensitive), else a user's folder: `name` as a path, then as a
    folder under the data root. The folder's dataset keeps `name` as its name, so resolving it again finds it
    again. Anything else raises a `KdError` with the closest known name."""
    wanted = str(name).strip().lower()
    for info in DATASETS:
        if wanted in (n.lower() for n in (info.name, *info.aliases)):
            return info
    folder = user_folder(str(name), data_root)
    if folder is not None:
        return folder
    choices = [n for info in DATASETS for n in (info.name, *info.aliases)]
    error = unknown_choice("dataset", str(name), choices)
    raise KdError(f"{error} Or give a folder of HR images (a path, or a folder name under the data root).")


def user_folder(name: str, data_root: str | Path | None = None) -> DatasetInfo | None:
    """A folder of images named by path or found under the data root, as a dataset; None when there is none."""
    from kd.data.roots import resolve_data_root

    if not name.strip():
        return None
    for candidate in (Path(name).expanduser(), resolve_data_root(data_root) / name):
        if candidate.is_dir():
            location = candidate.parent if candidate.name == "HR" else candidate
            return DatasetInfo(name, (), "eval", f"images in {candidate}", None, None, location=str(location))
    return None


def incomplete_note(dataset: str, images: int) -> str | None:
    """A note when a dataset holds fewer images than its published (reference) version."""
    info = resolve_dataset(dataset)
    expected = info.image_count
    if info.embedded or not expected or images >= expected:
        return None
    return (f"{dataset} holds {images} of its {expected} images: its scores are not comparable with published "
            f"numbers (complete it with `kdbench data download {dataset}`)")
