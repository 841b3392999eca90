"""Grid artefacts: the sub-pixel-phase pattern of each run's residual on an evaluation set.

For a x s network every HR pixel has a phase (y mod s, x mod s). A phase-locked error (the 4x4 checkerboard that
teacher-scale feature matching produced) shows as a residual whose mean depends on the phase. Per image,

    M[a, b]  = mean of (Y_SR - Y_HR) over the pixels of phase (a, b)        (Y: BT.601, 8-bit scale, crop = s)
    pattern  = standard deviation of M over the s * s phases

averaged over the images. Each run is compared with the no-KD run of the same profile, scale and seed (the bar of
the method-correctness issue: pattern <= 1.5 x no-KD).

Each measured pattern is also written to the run's `phase_residual.json`, which `kdbench report` keeps in its
records; a run known only by its record (no student.pt: a grid that went on across machines) is read from there.

    .venv/bin/python benchmarks/phase_residual.py --runs runs --runs reports/NAME/records --dataset Set5 \
        --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from kd.config import from_dict, read_config_file
from kd.data.benchmark import load_eval_images
from kd.errors import KdError
from kd.evaluate import forward_tiled
from kd.fileio import atomic_write_text
from kd.metrics.psnr_ssim import quantize, rgb_to_y_bt601
from kd.models.loading import model_from_checkpoint
from kd.report.runs import scan_runs

LIMIT = 1.5
RECORD = "phase_residual.json"  # {dataset: pattern}, beside the run's summary


def phase_pattern(sr: torch.Tensor, hr: torch.Tensor, scale: int) -> float:
    """Std over the s*s sub-pixel phases of the mean Y residual (uint8 RGB images (3, H, W), border crop = s)."""
    residual = (rgb_to_y_bt601(sr) - rgb_to_y_bt601(hr))[scale:-scale, scale:-scale]
    h, w = (residual.shape[0] // scale) * scale, (residual.shape[1] // scale) * scale
    phases = residual[:h, :w].reshape(h // scale, scale, w // scale, scale).mean(dim=(0, 2))
    return float(phases.std(unbiased=False))


def recorded_patterns(run_dir: Path) -> dict[str, float]:
    try:
        return {str(k): float(v) for k, v in json.loads((run_dir / RECORD).read_text(encoding="utf-8")).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def run_pattern(run_dir: Path, dataset: str, data_root: str | None) -> float | None:
    """The run's pattern on `dataset`, measured from its student.pt (and recorded), else read from its record;
    None when it has neither."""
    recorded = recorded_patterns(run_dir)
    if not (run_dir / "student.pt").is_file():
        return recorded.get(dataset)
    config = from_dict(read_config_file(run_dir / "config.yaml"), f"'{run_dir / 'config.yaml'}'")
    model = model_from_checkpoint(run_dir / "student.pt", arch=config.student.arch, scale=config.scale,
                                  preset=config.student.preset).eval()
    values = []
    with torch.inference_mode():
        for image in load_eval_images(dataset, config.scale, data_root=data_root):
            lr = image.lr.float().div(255.0).unsqueeze(0)
            sr = quantize(forward_tiled(model, lr, config.scale, None)[0])
            values.append(phase_pattern(sr, image.hr, config.scale))
    pattern = statistics.fmean(values)
    atomic_write_text(run_dir / RECORD, json.dumps({**recorded, dataset: pattern}, indent=1) + "\n")
    return pattern


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", action="append", help="runs folder (default runs/); repeatable, e.g. a report's "
                        "records/ beside runs/")
    parser.add_argument("--dataset", default="Set5")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        runs = scan_runs(args.runs or ["runs"]).runs
        patterns = {run.run_dir: run_pattern(run.run_dir, args.dataset, args.data_root) for run in runs}
    except KdError as exc:
        raise SystemExit(str(exc)) from None
    unmeasured = [run.run_id for run in runs if patterns[run.run_dir] is None]
    runs = [run for run in runs if patterns[run.run_dir] is not None]
    if not runs:
        raise SystemExit(f"no run has a student.pt or a pattern on {args.dataset} in its {RECORD}: nothing to measure")
    if unmeasured:
        print(f"left out (no student.pt and no {RECORD}): {', '.join(unmeasured)}", file=sys.stderr)
    baseline = {(run.profile, run.scale, run.seed): patterns[run.run_dir] for run in runs if run.method == "none"}
    print(f"sub-pixel-phase residual pattern on {args.dataset} (8-bit units)")
    print(f"pattern = std over phases of the mean Y residual; limit: {LIMIT}x no-KD, same seed")
    print(f"{'method':<10} {'teacher':<16} {'seed':>4} {'pattern':>8} {'/ no-KD':>8}  verdict")
    ratios: list[float] = []
    unpaired: set[int] = set()
    for run in sorted(runs, key=lambda r: (r.method != "none", r.method, r.teacher or "", r.seed)):
        reference = baseline.get((run.profile, run.scale, run.seed))
        if reference:
            ratios.append(patterns[run.run_dir] / reference)
            shown, verdict = f"{ratios[-1]:8.2f}", "ok" if ratios[-1] <= LIMIT else "GRID PATTERN"
        else:
            unpaired.add(run.seed)
            shown, verdict = f"{'-':>8}", "no no-KD run to compare"
        print(f"{run.method:<10} {run.teacher or '-':<16} {run.seed:>4} {patterns[run.run_dir]:8.4f} {shown}  {verdict}")
    missing = f"the no-KD run of seed(s) {', '.join(map(str, sorted(unpaired)))} is not measurable here"
    if not ratios:
        print(f"no run compared: {missing}", file=sys.stderr)
        return 1
    worst = max(ratios)
    print(f"largest ratio to no-KD: {worst:.2f} ({'within' if worst <= LIMIT else 'over'} the {LIMIT}x limit)"
          + (f"; not compared: {missing}" if unpaired else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
