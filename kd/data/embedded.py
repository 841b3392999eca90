"""The embedded `default` dataset: real colour photographs shipped inside the scikit-image wheel.

No download and no data root: these files are part of the installed `skimage` package (`skimage/data/`), so the
pipeline, the demo and the tests run on real images anywhere kdbench is installed.

Split (fixed, by file name; documented here and in `kdbench data list`):
    train (6): astronaut, hubble_deep_field, ihc, motorcycle_left, motorcycle_right, retina
    test  (3): chelsea, coffee, rocket
The two motorcycle images are a stereo pair of the same scene; both sit in the train split so that no near-duplicate
of a training image is evaluated. Used for training, `default` means its train split; for evaluation, its test split.
"""

from __future__ import annotations

from pathlib import Path

from kd.errors import KdError

# file name -> sha256 of the file as shipped by scikit-image (the same values as skimage.data's own registry).
EMBEDDED_FILES: dict[str, str] = {
    "astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    "chelsea.png": "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
    "coffee.png": "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
    "hubble_deep_field.jpg": "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4",
    "ihc.png": "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef",
    "motorcycle_left.png": "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179",
    "motorcycle_right.png": "5fc913ae870e42a4b662314bc904d1786bcad8e2f0b9b67dba5a229406357797",
    "retina.jpg": "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6",
    "rocket.jpg": "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
}

SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("astronaut.png", "hubble_deep_field.jpg", "ihc.png", "motorcycle_left.png", "motorcycle_right.png",
              "retina.jpg"),
    "test": ("chelsea.png", "coffee.png", "rocket.jpg"),
}


def embedded_dir() -> Path:
    import skimage

    return Path(skimage.__file__).resolve().parent / "data"


def embedded_paths(split: str) -> list[Path]:
    """Paths of the embedded images of one split ("train" or "test"), sorted by name."""
    if split not in SPLITS:
        raise ValueError(f"embedded split must be 'train' or 'test', got {split!r}")
    folder = embedded_dir()
    paths = [folder / name for name in sorted(SPLITS[split])]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise KdError(
            f"the embedded 'default' dataset expects {', '.join(missing)} in {folder} (shipped with scikit-image); "
            "reinstall scikit-image (pip install --force-reinstall scikit-image)"
        )
    return paths
