"""FitNet-style feature distillation (FD): L1 to the ground truth plus a feature loss at body taps.

kdbench FD baseline (METHODS.md, sections 4 and 13): taps at about 1/3, 2/3 and the end of both bodies
(computed from relative depth, see `kd.methods.pairing`); one 1x1 conv adapter per tap on the student side when
channel counts differ (identity otherwise), Kaiming-initialised and trained with the student, never exported
with it. Per-tap distances are stacked and averaged (never rebuilt with `torch.tensor`, which would cut the
gradient: METHODS.md, section 14, item 1).

Feature scales differ by teacher (RCAN works in [0, 255], SwinIR in [0, 1], ASID in [-1, 1]), so by default both
sides are centred with the teacher's per-channel mean and divided by the teacher map's RMS deviation (both
detached), which keeps the default weight meaningful for every teacher. Set `normalize=false` for raw features.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from kd.errors import KdError
from kd.methods import register_method
from kd.methods.base import Distiller, StepInputs, reconstruction_l1
from kd.methods.pairing import pair_by_depth, tap_channels


@dataclass
class FitNetOptions:
    count: int = 3  # number of tap pairs chosen by relative depth
    student_taps: list[str] = field(default_factory=list)  # explicit taps (override `count`)
    teacher_taps: list[str] = field(default_factory=list)
    distance: str = "l1"  # l1 | mse
    normalize: bool = True  # centre/scale both sides with the teacher's statistics (see module docstring)


def _adapter_key(tap: str) -> str:
    return tap.replace(".", "_")


@register_method
class FitNet(Distiller):
    name = "fitnet"
    description = "FitNet feature distillation: 1x1 adapters, feature loss at ~1/3, 2/3 and end of the body"
    # A feature term that starts near 1 (standardised features) against an L1 pixel term near 0.1: 0.1 keeps the
    # reconstruction dominant. METHODS.md suggests sweeping {0.1, 1, 10}.
    default_weights = {"rec": 1.0, "fd": 0.1}
    Options = FitNetOptions

    def __init__(self, student: nn.Module, teacher: nn.Module | None, options: FitNetOptions) -> None:
        super().__init__(student, teacher, options)
        if options.distance not in ("l1", "mse"):
            raise KdError(f"method.options.distance must be 'l1' or 'mse', got '{options.distance}'.")
        if options.student_taps or options.teacher_taps:
            if len(options.student_taps) != len(options.teacher_taps) or not options.student_taps:
                raise KdError(
                    "method.options.student_taps and method.options.teacher_taps must list the same number of taps."
                )
            self.student_taps, self.teacher_taps = list(options.student_taps), list(options.teacher_taps)
        else:
            if options.count < 1:
                raise KdError(f"method.options.count must be >= 1, got {options.count}.")
            self.student_taps, self.teacher_taps = pair_by_depth(student, teacher, options.count)
        student_channels = tap_channels(student, self.student_taps)
        teacher_channels = tap_channels(teacher, self.teacher_taps)
        self.adapters = nn.ModuleDict()
        for s_tap, t_tap in zip(self.student_taps, self.teacher_taps):
            c_in, c_out = student_channels[s_tap], teacher_channels[t_tap]
            if c_in == c_out:
                self.adapters[_adapter_key(s_tap)] = nn.Identity()
            else:
                conv = nn.Conv2d(c_in, c_out, kernel_size=1)
                nn.init.kaiming_normal_(conv.weight, nonlinearity="linear")
                nn.init.zeros_(conv.bias)
                self.adapters[_adapter_key(s_tap)] = conv

    def feature_distance(self, student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
        if self.options.normalize:
            # Per-channel centring, one scale for the whole map: a per-channel std would explode on channels a
            # ReLU leaves (nearly) constant.
            mean = teacher_feat.mean(dim=(0, 2, 3), keepdim=True)
            scale = (teacher_feat - mean).pow(2).mean().sqrt().clamp_min(1e-6)
            student_feat, teacher_feat = (student_feat - mean) / scale, (teacher_feat - mean) / scale
        if self.options.distance == "mse":
            return F.mse_loss(student_feat, teacher_feat)
        return F.l1_loss(student_feat, teacher_feat)

    def losses(self, inputs: StepInputs) -> dict[str, Tensor]:
        per_tap = []
        for s_tap, t_tap in zip(self.student_taps, self.teacher_taps):
            teacher_feat = inputs.teacher_feats[t_tap].detach()
            student_feat = self.adapters[_adapter_key(s_tap)](inputs.student_feats[s_tap])
            # Padded networks (ASID, SwinIR) may return maps larger than the LR input; compare the common area.
            h = min(student_feat.shape[-2], teacher_feat.shape[-2])
            w = min(student_feat.shape[-1], teacher_feat.shape[-1])
            per_tap.append(self.feature_distance(student_feat[..., :h, :w], teacher_feat[..., :h, :w]))
        return {"rec": reconstruction_l1(inputs), "fd": torch.stack(per_tap).mean()}
