"""Time the bicubic evaluation of Set5 + Set14 + BSD100 at x4 (target: <= 20 s on 2 cores without LPIPS).

    .venv/bin/python benchmarks/bench_eval.py [--data-root ../shared/data] [--threads N] [--lr-source shipped]

Runs once without LPIPS and, if an LPIPS trunk is available offline (`kdbench weights fetch lpips`), once with it.
Generated LR images are cached by kdbench, so use --lr-source shipped (default) for a cache-independent figure.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from kd.evaluate import evaluate
from kd.metrics.lpips import find_trunk
from kd.models import create

DATASETS = ["Set5", "Set14", "B100"]
SCALE = 4


def _time(data_root: Path, lr_source: str, with_lpips: bool) -> tuple[float, object]:
    started = time.perf_counter()
    result = evaluate(create("bicubic", SCALE), DATASETS, SCALE, data_root=data_root, lr_source=lr_source,
                      with_lpips=with_lpips, progress=False)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--lr-source", default="shipped", choices=("auto", "shipped", "generated"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, data root {args.data_root}")

    runs = [False] + ([True] if find_trunk() is not None else [])
    for with_lpips in runs:
        seconds, result = _time(args.data_root, args.lr_source, with_lpips)
        images = int(result.per_dataset["images"].sum())
        label = "LPIPS on " if with_lpips else "LPIPS off"
        print(f"bicubic x{SCALE} {'+'.join(DATASETS)} ({images} images, LR {args.lr_source}), {label}: "
              f"{seconds:.1f} s ({1000 * seconds / images:.0f} ms/image)")
        for row in result.per_dataset.itertuples(index=False):
            print(f"  {row.dataset:6s} {row.psnr_y:.4f} / {row.ssim_y:.5f}  lpips {row.lpips:.4f}  {row.seconds:.1f} s")
    if len(runs) == 1:
        print("LPIPS run skipped: no trunk available (kdbench weights fetch lpips)")


if __name__ == "__main__":
    main()
