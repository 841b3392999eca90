"""ASID x4 speed against the official implementation, side by side in one process (CPU).

The official code is never part of this repository: fetch saturnian77/ASID (`components/ASID.py`, `ops/IDSA.py`,
`ops/IDSG.py`, `ops/IDSG_A.py`) and Omni-SR's `ops/esa.py`, `ops/layernorm.py`, `ops/pixelshuffle.py` into a
temporary folder outside the repository (laid out as `components/`, `ops/`), install `einops` somewhere on a path,
and pass both:

    .venv/bin/python benchmarks/bench_asid_official.py --official /tmp/asid-official --path /tmp/pylib

Both networks hold the same weights (ours exports the official keys). Forward (no_grad) and forward+backward
(L1 loss) are timed in alternating order per repeat; the figures are medians of the paired per-repeat ratios
ours / official with their interquartile range (`bench_step.py`'s rules).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from torch.nn import functional as F

from bench_step import measure, paired_ratios  # noqa: E402 - this script's folder is on sys.path
from kd.models import create

# train_logs/ASID_X4_DIV2K/model_config.json of the official repository.
OFFICIAL_X4 = {"upsampling": 4, "res_num": 3, "block_num": 1, "bias": True, "block_script_name": "IDSA",
               "block_class_name": "IDSA_Block2", "window_size": 8, "pe": True, "ffn_bias": True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", required=True, help="folder holding the official components/ and ops/")
    parser.add_argument("--path", action="append", default=[], help="extra import path (e.g. where einops is)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", type=int, default=48, help="LR side")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    sys.path[:0] = [args.official, *args.path]
    from components.ASID import ASID  # the official network

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours = create("asid", 4, "paper").train()
    official = ASID(num_feat=48, **OFFICIAL_X4).train()
    official.load_state_dict(ours.state_dict())
    lr = torch.rand(args.batch, 3, args.patch, args.patch)
    hr = torch.rand(args.batch, 3, args.patch * 4, args.patch * 4)

    def forward(model):
        def run() -> None:
            with torch.no_grad():
                model(lr)
        return run

    def forward_backward(model):
        def run() -> None:
            model.zero_grad(set_to_none=True)
            F.l1_loss(model(lr), hr).backward()
        return run

    report = {"setup": {k: v for k, v in vars(args).items() if k != "json"}, "torch": torch.__version__}
    for name, make in (("forward", forward), ("forward+backward", forward_backward)):
        times = measure({"ours": make(ours), "official": make(official)}, args.repeats, args.warmup)
        ratio = paired_ratios(times, "official")["ours"]
        report[name] = {"ratio_ours_to_official": ratio,
                        "median_s": {k: sorted(v)[len(v) // 2] for k, v in times.items()}}
        print(f"{name:17s} ours/official median {ratio['median']:.3f} (IQR {ratio['q1']:.3f}-{ratio['q3']:.3f}); "
              f"ours {report[name]['median_s']['ours']:.3f} s, official {report[name]['median_s']['official']:.3f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
