"""Data-pipeline figures: `python -m kd.data.measure --data-root ../shared/data`.

1. LR regeneration: % of LR values within 1 grey level of the shipped MATLAB files, per dataset and scale.
2. Time to load the x4 evaluation pairs of Set5 + Set14 + B100 (shipped LR), cold cache and warm.
3. Whether the embedded `default` dataset loads with no data root at all.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from kd.data.benchmark import load_eval_images
from kd.data.files import dataset_files
from kd.data.imresize import downscale_uint8, modcrop
from kd.data.io import read_image

EVAL_SETS = ("Set5", "Set14", "B100")


def regeneration_agreement(data_root: Path) -> list[tuple[str, int, float, float, int]]:
    """(dataset, scale, % within 1 level, mean |diff|, max |diff|) against the shipped LR files."""
    rows = []
    for dataset in EVAL_SETS:
        files = dataset_files(dataset, data_root, purpose="eval")[0]
        stats = {s: [0, 0, 0.0, 0] for s in (2, 3, 4)}  # within, total, sum |diff|, max
        for hr_path in files.hr:
            hr = read_image(hr_path)
            for s, acc in stats.items():
                shipped = files.shipped_lr(hr_path, s)
                if shipped is None:
                    continue
                diff = (downscale_uint8(modcrop(hr, s), s).int() - read_image(shipped).int()).abs()
                acc[0] += int((diff <= 1).sum())
                acc[1] += diff.numel()
                acc[2] += float(diff.sum())
                acc[3] = max(acc[3], int(diff.max()))
        for s, (within, total, diff_sum, worst) in stats.items():
            if total:
                rows.append((dataset, s, 100 * within / total, diff_sum / total, worst))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True)
    args = parser.parse_args(argv)
    root = Path(args.data_root)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["KDBENCH_CACHE"] = cache  # cold LR cache for this measurement only
        print("LR regeneration vs shipped MATLAB LR")
        for dataset, s, pct, mean, worst in regeneration_agreement(root):
            print(f"  {dataset:6s} x{s}: {pct:7.3f}% within 1 level, mean |diff| {mean:.3f}, max {worst}")
        for label in ("first", "second"):
            started = time.perf_counter()
            count = sum(len(load_eval_images(d, 4, root)) for d in EVAL_SETS)
            print(f"load x4 eval pairs Set5+Set14+B100 ({label} call): {count} images in "
                  f"{time.perf_counter() - started:.2f} s")
        os.environ.pop("KDBENCH_DATA", None)
        os.environ["XDG_CACHE_HOME"] = str(Path(cache) / "xdg")
        started = time.perf_counter()
        images = load_eval_images("default", 4)
        print(f"embedded default (no data root): {len(images)} test images "
              f"({', '.join(im.name for im in images)}) in {time.perf_counter() - started:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
