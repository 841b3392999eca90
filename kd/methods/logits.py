"""Output ("logits") KD: L1 to the ground truth plus L1 between the student and teacher SR images.

Both networks output RGB in [0, 1] (kdbench convention), so the two images are directly comparable.
Weights w_pix = w_kd = 1 as in the DUKD/DCKD configurations (METHODS.md, section 3).
"""

from __future__ import annotations

from torch import Tensor

from kd.methods import register_method
from kd.methods.base import Distiller, StepInputs, output_kd_l1, reconstruction


@register_method
class OutputDistillation(Distiller):
    name = "logits"
    description = "output KD: L1 to ground truth + L1 to the teacher's SR image"
    default_weights = {"rec": 1.0, "kd": 1.0}
    taps_features = False

    def losses(self, inputs: StepInputs) -> dict[str, Tensor]:
        return {"rec": reconstruction(inputs), "kd": output_kd_l1(inputs)}
