"""FAKD: feature-affinity based distillation (He et al., ICIP 2020): spatial-affinity matrices of paired features.

Verified in the official code (`Vincent-Hoo/Knowledge-Distillation-for-Super-resolution` at 589d35f, read for the
facts only: `feature_transformation.spatial_similarity`, `loss.py`, the `*SA*` scripts; METHODS.md section 9):

    F in R^{B x C x HW};  F~(:, p) = F(:, p) / (||F(:, p)||_2 + 1e-8)      each pixel's channel vector L2-normalised
    A = F~^T F~ in R^{B x HW x HW}                                         cosine affinity of every pixel pair
    L = (1 - alpha) L1(S(x), y) + alpha L1(S(x), T(x)) + w * sum_l L1(A_S^l, A_T^l),   alpha = 0.5, w = 10

The official pixel losses are L1 on [0, 255] values (EDSR-PyTorch, `rgb_range 255`); kdbench's are on [0, 1],
255 times smaller, while the affinity term is unit-free (cosines). The official balance w = 10 beside [0, 255] pixel
losses is therefore w = 10 / 255 beside kdbench's: that is the default `fakd` weight (with w = 10 the affinity
term's gradient is about 70 times the reconstruction's at step 0, measured with ASID and RCAN/SwinIR mini).

Taps at the ends of the body thirds (RCAN: groups 3 and 7 and the body-tail conv, before the long skip) and
no adapter (an HW x HW affinity does not depend on the channel count). kdbench picks the same relative depths for
every network (`kd.methods.pairing.pair_by_depth`); the weights are `rec` = 1 - alpha, `kd` = alpha, `fakd` = w.

Not reproduced on purpose: the FAKD re-implementation in `yun224/DUKD` (`models/fakd_model.py`) rebuilds the per-tap
losses with `torch.tensor(...)`, which cuts the graph, so its affinity term gives no gradient and "FAKD" then
trains as output KD (METHODS.md section 14, item 1). Here the per-tap terms are stacked and summed, so the affinity
term does train the student.

Memory: the affinity has (HW)^2 entries per sample and tap (2304^2 = 5.3M at a 48x48 LR patch). It is computed in
blocks of `chunk_rows` rows, each recomputed in the backward pass (activation checkpointing), so only one block
per side is alive at a time. Maps with more than `max_positions` pixels are refused with a message naming the
option, before any large allocation. Measured with benchmarks/bench_fakd_affinity.py (1 CPU thread, batch 16,
48x48 maps, one tap, forward + backward): whole matrix 1170 MiB peak RSS growth, 256-row blocks about 350 MiB, at
about the same time (7-8 s).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from kd.errors import KdError
from kd.methods import register_method
from kd.methods.base import Distiller, StepInputs, output_kd_l1, reconstruction
from kd.methods.pairing import common_area, paired_feature_taps

EPS = 1e-8  # as the official spatial_similarity


@dataclass
class FakdOptions:
    count: int = 3  # tap pairs at the ends of the body thirds
    student_taps: list[str] = field(default_factory=list)  # explicit taps (override `count`)
    teacher_taps: list[str] = field(default_factory=list)
    chunk_rows: int = 256  # affinity rows computed (and recomputed in backward) at a time
    max_positions: int = 96 * 96  # refuse feature maps with more pixels than this (memory grows as positions^2)


def normalized_pixels(feat: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C, HW) with each pixel's channel vector divided by its L2 norm (+1e-8)."""
    flat = feat.flatten(2)
    return flat / (flat.norm(dim=1, keepdim=True) + EPS)


def _block_l1_sum(student: Tensor, teacher: Tensor, start: int, rows: int) -> Tensor:
    s, t = student[:, :, start:start + rows], teacher[:, :, start:start + rows]
    return ((s.transpose(1, 2) @ student) - (t.transpose(1, 2) @ teacher)).abs().sum()


def affinity_l1(student_feat: Tensor, teacher_feat: Tensor, chunk_rows: int) -> Tensor:
    """mean |A_S - A_T| over all (B, HW, HW) entries, in row blocks that are recomputed during backward."""
    student = normalized_pixels(student_feat)
    teacher = normalized_pixels(teacher_feat.detach())
    b, _, n = student.shape
    blocks = []
    for start in range(0, n, chunk_rows):
        rows = min(chunk_rows, n - start)
        if student.requires_grad:
            blocks.append(checkpoint(_block_l1_sum, student, teacher, start, rows, use_reentrant=False))
        else:
            blocks.append(_block_l1_sum(student, teacher, start, rows))
    return torch.stack(blocks).sum() / (b * n * n)


@register_method
class FAKD(Distiller):
    name = "fakd"
    description = "FAKD (ICIP 2020): L1 between spatial-affinity matrices of paired body features + output KD"
    # (1 - alpha), alpha = 0.5, and w = 10 ("10*SA") converted to kdbench's [0, 1] pixel units (module docstring)
    default_weights = {"rec": 0.5, "kd": 0.5, "fakd": 10.0 / 255.0}
    Options = FakdOptions

    def __init__(self, student: nn.Module, teacher: nn.Module | None, options: FakdOptions) -> None:
        super().__init__(student, teacher, options)
        for option in ("chunk_rows", "max_positions"):
            if getattr(options, option) < 1:
                raise KdError(f"method.options.{option} must be >= 1, got {getattr(options, option)}.")
        self.student_taps, self.teacher_taps, _, _ = paired_feature_taps(
            self.name, student, teacher, options.count, options.student_taps, options.teacher_taps
        )

    def check_size(self, h: int, w: int) -> None:
        if h * w > self.options.max_positions:
            raise KdError(
                f"method 'fakd': feature maps of {h}x{w} = {h * w} pixels make affinity matrices of "
                f"{(h * w) ** 2:,} entries per sample and tap, above method.options.max_positions = "
                f"{self.options.max_positions} pixels; use a smaller train.lr_patch or raise "
                "method.options.max_positions (memory grows as its square)."
            )

    def affinity_loss(self, inputs: StepInputs) -> Tensor:
        per_tap = []
        for s_tap, t_tap in zip(self.student_taps, self.teacher_taps):
            student_feat, teacher_feat = common_area(inputs.student_feats[s_tap], inputs.teacher_feats[t_tap],
                                                     tuple(inputs.lr.shape[-2:]))
            self.check_size(*student_feat.shape[-2:])
            per_tap.append(affinity_l1(student_feat, teacher_feat, self.options.chunk_rows))
        return torch.stack(per_tap).sum()  # summed over taps, as the official loss

    def losses(self, inputs: StepInputs) -> dict[str, Tensor]:
        return {
            "rec": reconstruction(inputs),
            "kd": output_kd_l1(inputs),
            "fakd": self.affinity_loss(inputs),
        }
