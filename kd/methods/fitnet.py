"""FitNet-style feature distillation (FD): L1 to the ground truth plus a feature loss at body taps.

kdbench FD baseline (METHODS.md, sections 4 and 13): taps at about 1/3 and 2/3 of both bodies by relative depth
plus body tail to body tail (`kd.methods.pairing`); one learned 1x1 conv adapter per tap on the student side
(always: two networks' channels never correspond, even when their counts match), Kaiming-initialised and trained
with the student, never exported with it. Per-tap distances are stacked and averaged (never rebuilt with
`torch.tensor`, which would cut the gradient: METHODS.md, section 14, item 1).

Feature scales differ by teacher (RCAN works in [0, 255], SwinIR in [0, 1], ASID in [-1, 1]), so by default each
side is standardised with its own statistics (`kd.methods.pairing.standardize_pair`): the student matches the
teacher's pattern, not its magnitude, and the default weight means the same for every teacher. Set
`normalize=false` for raw features.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from kd.errors import KdError
from kd.methods import register_method
from kd.methods.base import Distiller, StepInputs, reconstruction
from kd.methods.pairing import common_area, conv_adapter, paired_feature_taps, standardize_pair, tap_key


@dataclass
class FitNetOptions:
    count: int = 3  # number of tap pairs chosen by relative depth
    student_taps: list[str] = field(default_factory=list)  # explicit taps (override `count`)
    teacher_taps: list[str] = field(default_factory=list)
    distance: str = "l1"  # l1 | mse
    normalize: bool = True  # standardise each side with its own statistics (see the module docstring)


@register_method
class FitNet(Distiller):
    name = "fitnet"
    description = "FitNet feature distillation: learned 1x1 adapters, feature loss at ~1/3, 2/3 and the body tail"
    # A feature term that starts near 1 (standardised features) against an L1 pixel term near 0.1: 0.1 keeps the
    # reconstruction dominant. METHODS.md suggests sweeping {0.1, 1, 10}.
    default_weights = {"rec": 1.0, "fd": 0.1}
    Options = FitNetOptions
    version = 2  # per-side standardisation, learned adapters, body-tail pairing

    def __init__(self, student: nn.Module, teacher: nn.Module | None, options: FitNetOptions) -> None:
        super().__init__(student, teacher, options)
        if options.distance not in ("l1", "mse"):
            raise KdError(f"method.options.distance must be 'l1' or 'mse', got '{options.distance}'.")
        self.student_taps, self.teacher_taps, s_channels, t_channels = paired_feature_taps(
            self.name, student, teacher, options.count, options.student_taps, options.teacher_taps
        )
        self.adapters = nn.ModuleDict({
            tap_key(s): conv_adapter(s_channels[s], t_channels[t]) for s, t in zip(self.student_taps, self.teacher_taps)
        })

    def feature_distance(self, student_feat: Tensor, teacher_feat: Tensor, average=lambda tensors: None) -> Tensor:
        if self.options.normalize:
            student_feat, teacher_feat = standardize_pair(student_feat, teacher_feat, average)
        if self.options.distance == "mse":
            return F.mse_loss(student_feat, teacher_feat)
        return F.l1_loss(student_feat, teacher_feat)

    def losses(self, inputs: StepInputs) -> dict[str, Tensor]:
        per_tap = []
        for s_tap, t_tap in zip(self.student_taps, self.teacher_taps):
            teacher_feat = inputs.teacher_feats[t_tap].detach()
            student_feat = self.adapters[tap_key(s_tap)](inputs.student_feats[s_tap])
            student_feat, teacher_feat = common_area(student_feat, teacher_feat, tuple(inputs.lr.shape[-2:]))
            per_tap.append(self.feature_distance(student_feat, teacher_feat, inputs.average))
        return {"rec": reconstruction(inputs), "fd": torch.stack(per_tap).mean()}
