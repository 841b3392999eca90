"""No distillation: the student is trained with the L1 reconstruction loss only (the no-KD baseline)."""

from __future__ import annotations

from torch import Tensor

from kd.methods import register_method
from kd.methods.base import Distiller, StepInputs, reconstruction


@register_method
class NoDistillation(Distiller):
    name = "none"
    description = "no distillation: L1 to the ground truth (the baseline)"
    needs_teacher = False
    taps_features = False
    default_weights = {"rec": 1.0}

    def losses(self, inputs: StepInputs) -> dict[str, Tensor]:
        return {"rec": reconstruction(inputs)}
