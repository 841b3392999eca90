"""An example plugin method: output KD with a squared-error term instead of L1.

Install this package next to kdbench (`pip install -e examples/kdbench-plugin-example`) and the method is
available as `kdbench run --method mse_logits`; kdbench itself is not changed. The class is found through the
`kdbench.methods` entry point in this package's pyproject.toml, so it needs no `@register_method`.
"""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

from kd.methods.base import Distiller, StepInputs, reconstruction


class MseOutputDistillation(Distiller):
    name = "mse_logits"  # must equal the entry point's name
    description = "example plugin: L1 to ground truth + MSE to the teacher's SR image"
    default_weights = {"rec": 1.0, "kd_mse": 10.0}
    taps_features = False

    def losses(self, inputs: StepInputs) -> dict[str, Tensor]:
        return {"rec": reconstruction(inputs), "kd_mse": F.mse_loss(inputs.student_out, inputs.teacher_out)}
