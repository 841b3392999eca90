"""Data pipeline: image I/O, MATLAB-style resizing, dataset registry and roots, evaluation pairs, training patches."""

from kd.data.benchmark import EvalImage, load_eval_images
from kd.data.imresize import imresize, modcrop
from kd.data.io import read_image, write_png
from kd.data.patches import PatchDataset
from kd.data.registry import DatasetInfo, list_datasets, resolve_dataset
from kd.data.roots import cache_dir, resolve_data_root

__all__ = [
    "DatasetInfo",
    "EvalImage",
    "PatchDataset",
    "cache_dir",
    "imresize",
    "list_datasets",
    "load_eval_images",
    "modcrop",
    "read_image",
    "resolve_data_root",
    "resolve_dataset",
    "write_png",
]
