"""Step-0 method health: each weighted KD term's gradient norm on the student over the reconstruction term's.

    ratio(term) = || d(w_term L_term) / d theta_S || / || d(w_rec L_rec) / d theta_S ||      (kd.methods.health)

One fixed batch of real patches from the embedded photos (`--dataset`, or any dataset under `--data-root`), every
method with its default weights and options (or those of its release for the teacher, as a run resolves them), each
teacher kind; the student is freshly initialised (seed 0). Teachers are randomly initialised unless
`--teacher-ckpt ARCH=PATH` gives trained weights (e.g. the zoo's teacher.pt). The healthy band the trainer warns
outside is 0.01-10; the tests hold step 0 to 0.05-5 (DCKD's contrastive term, strong as released, to 0.05-10).

    .venv/bin/python benchmarks/method_health.py                            # ASID x4 + RCAN/SwinIR mini, batch 4, LR 48
    .venv/bin/python benchmarks/method_health.py --teacher-ckpt rcan=~/.cache/kdbench/teachers/<key>/teacher.pt
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import torch

from kd.config import TrainConfig
from kd.engine import Trainer
from kd.engine.batches import FixedBatch, patch_batches
from kd.methods import create_method, get_method, list_methods, loss_weights
from kd.methods.health import REFERENCE_TERM
from kd.models import create, get_entry
from kd.models.loading import load_official


def measure(method: str, teacher_arch: str, args: argparse.Namespace, teacher_ckpt: str | None,
            batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
    torch.manual_seed(0)
    student = create(args.student, args.scale, args.student_preset)
    # TAS's teacher in training is its assistant, at half the scale on HR/2: the teacher network stands in for it
    chained = method == "tas"
    teacher = create(teacher_arch, args.scale // 2 if chained else args.scale, args.teacher_preset)
    if teacher_ckpt and not chained:
        teacher = load_official(teacher, teacher_ckpt)
    entry = get_entry(teacher_arch)
    release = get_method(method).release_for(entry.arch, entry.family, args.scale)  # as a run resolves it
    method_module = create_method(method, student, teacher, release.options if release else None)
    weights = loss_weights(method, release.weights if release else None, method_module)
    recipe = TrainConfig(steps=1, batch_size=batch[0].shape[0], lr_patch=args.patch, lr=5e-4)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(recipe, student=student, teacher=teacher, method=method_module, weights=weights,
                          batches=FixedBatch(*batch), holdout=FixedBatch(*batch), run_dir=run_dir, seed=0)
        return trainer.health(*batch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", default="asid")
    parser.add_argument("--student-preset", default=None)
    parser.add_argument("--teachers", default="rcan,swinir")
    parser.add_argument("--teacher-preset", default="mini")
    parser.add_argument("--teacher-ckpt", action="append", default=[], metavar="ARCH=PATH")
    parser.add_argument("--methods", default=",".join(n for n, _ in list_methods() if get_method(n).needs_teacher))
    parser.add_argument("--dataset", default="default")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", type=int, default=48, help="LR patch side")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    checkpoints = dict(item.split("=", 1) for item in args.teacher_ckpt)
    source = patch_batches(args.dataset, args.scale, args.patch, args.batch, 1, seed=0, data_root=args.data_root)
    batch = source.batch(0)

    teachers = args.teachers.split(",")
    rows = []
    for method in args.methods.split(","):
        for teacher in teachers:
            ratios = measure(method, teacher, args, checkpoints.get(teacher), batch)
            rows.append((method, teacher, ratios))
    print(f"step-0 gradient-norm ratio to '{REFERENCE_TERM}' (student {args.student}, x{args.scale}, batch "
          f"{args.batch}, LR {args.patch}; teachers {args.teacher_preset}"
          f"{', trained: ' + ','.join(checkpoints) if checkpoints else ', random init'})")
    print(f"{'method':<10} {'teacher':<8} ratios")
    for method, teacher, ratios in rows:
        shown = "  ".join(f"{term}={ratio:.3g}" for term, ratio in ratios.items()) or "-"
        print(f"{method:<10} {teacher:<8} {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
