"""Forward speed of the seed papers' networks against their official code, side by side in one process (CPU).

Each network has an adapter in `benchmarks/seed_official/<name>.py` that says where its official code comes from
and how to build it with our weights. The official code is never part of this repository: fetch each repository
(the adapter's `REPO` at `COMMIT`) into a temporary folder outside it, e.g. `/tmp/official/<name>/`, install what
it imports (e.g. `einops`) somewhere on a path, and run

    .venv/bin/python benchmarks/bench_seed_official.py --official /tmp/official --path /tmp/pylib [--networks san,a2n]

Per network: our `paper` preset (or the adapter's `PRESET`) at x4 and the official model holding the same weights
run on one 320x180 LR image under no_grad, in alternating order per repeat; the figure is the median of the paired
per-repeat ratios ours / official with its interquartile range (`bench_step.py`'s rules). Ours must be no slower
(ratio <= 1.0). Where the official test path wraps the network (SAN's `--chop`: its covariance pooling cannot hold a
whole 320x180 map), the adapter's `ours_forward` runs ours under the same wrapper. `--clock cpu` times this
process's CPU time instead of wall time (less sensitive to other processes' load; one thread).
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

import torch

from bench_step import measure, paired_ratios  # noqa: E402 - this script's folder is on sys.path
from kd.models import create

ADAPTERS = Path(__file__).resolve().parent / "seed_official"


def adapters() -> dict[str, object]:
    """Adapter modules by name: each defines ARCH, PRESET, REPO, COMMIT and build_official(folder, ours)."""
    sys.path.insert(0, str(ADAPTERS.parent))
    found = {}
    for module in pkgutil.iter_modules([str(ADAPTERS)]):
        found[module.name] = importlib.import_module(f"seed_official.{module.name}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", required=True, type=Path,
                        help="folder holding one subfolder per adapter name with that repository's files")
    parser.add_argument("--path", action="append", default=[], help="extra import path (e.g. where einops is)")
    parser.add_argument("--networks", default="", help="comma-separated adapter names (default: all)")
    parser.add_argument("--height", type=int, default=180, help="LR height")
    parser.add_argument("--width", type=int, default=320, help="LR width")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time, or this process's CPU time (less sensitive to other processes' load)")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    sys.path[:0] = args.path
    torch.set_num_threads(args.threads)
    known = adapters()
    names = [n for n in args.networks.split(",") if n] or sorted(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"no adapter for {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    lr = torch.rand(1, 3, args.height, args.width, generator=torch.Generator().manual_seed(0))
    report = {"setup": {k: str(v) for k, v in vars(args).items() if k != "json"}, "torch": torch.__version__}
    for name in names:
        adapter = known[name]
        torch.manual_seed(0)
        ours = create(adapter.ARCH, 4, adapter.PRESET).eval()
        official = adapter.build_official(args.official / name, ours)
        inputs = adapter.inputs(lr) if hasattr(adapter, "inputs") else (lr,)
        ours_forward = getattr(adapter, "ours_forward", None)
        timed_ours = ours_forward(args.official / name, ours) if ours_forward else ours

        def run(model):
            def forward() -> None:
                with torch.no_grad():
                    model(*inputs)
            return forward

        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        times = measure({"ours": run(timed_ours), "official": run(official)}, args.repeats, args.warmup, clock)
        ratio = paired_ratios(times, "official")["ours"]
        medians = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        report[name] = {"ratio_ours_to_official": ratio, "median_s": medians,
                        "official": f"{adapter.REPO}@{adapter.COMMIT}"}
        print(f"{name:12s} ours/official {ratio['median']:.3f} (IQR {ratio['q1']:.3f}-{ratio['q3']:.3f}); "
              f"ours {medians['ours']:.3f} s, official {medians['official']:.3f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
