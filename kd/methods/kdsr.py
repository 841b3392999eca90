"""KDSR: knowledge distillation of a blind-SR degradation encoder (Xia et al., ICLR 2023, arXiv 2211.16928).

Read for the facts (never copied) from the official code, `Zj-BinXia/KDSR` @ c7c9e81, KDSR-classic:
`trainer_iso_stage3.py` / `trainer_iso_stage4.py` (and their `anisonoise` twins), `option.py`, `main_iso_*.sh`.

* Stage 1 (official stage 3) trains the teacher `kdsr_teacher` (SR trunk G + encoder E on cat(LR,
  pixel_unshuffle(HR))) with L1 alone: in kdbench that is the teacher zoo, which trains any teacher with the L1 of
  method `none` and feeds this one the HR (`kd.models.sr_inputs`).
* Stage 2 (official stage 4) trains the student `kdsr` (the same G, encoder E_st on the LR only):

      L = L1(S(lr), hr) + 1 * KL(log_softmax(f_S / T) || softmax(f_T / T)),  T = 0.15, batchmean

  on the encoders' 4C MLP features (`E_st.mlp`, `E.mlp`; the teacher's detached; `students.kdsr.kdsr_kd_loss`).
  The official L1 between the features is computed but not used: left out. The student starts from the teacher's
  checkpoint by a non-strict load, which transfers exactly the SR trunk G (`students.kdsr.transfer_sr_trunk`): this
  method does that when it is built, so the student's E_st starts from its own initialisation and G from the
  teacher's weights. `epochs_encoder 0` in the scripts: no encoder-only phase.

KDSR distils blind SR: run it on the blind-SR track (`--set data.degradation=iso_gaussian`, `kd.data.degradations`),
where the teacher's encoder sees what degraded the HR. It works only with student `kdsr` and teacher `kdsr_teacher`
with the same trunk (the KL compares their 4C features, and G is copied).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from kd.errors import KdError
from kd.methods import register_method
from kd.methods.base import Distiller, StepInputs, reconstruction
from students.kdsr import KD_TEMPERATURE, KDSR, KDSRTeacher, kdsr_kd_loss, transfer_sr_trunk

STUDENT_TAP, TEACHER_TAP = "E_st.mlp", "E.mlp"


@dataclass
class KdsrOptions:
    temperature: float = KD_TEMPERATURE  # official `--temperature` of stage 4


@register_method
class KDSRDistillation(Distiller):
    name = "kdsr"
    description = ("KDSR (blind SR): KL at T 0.15 from the HR-aware teacher encoder's features to the student's; "
                   "the student's SR trunk starts as the teacher's. Student kdsr, teacher kdsr_teacher only")
    default_weights = {"rec": 1.0, "kd": 1.0}
    Options = KdsrOptions

    def __init__(self, student: nn.Module, teacher: nn.Module | None, options: KdsrOptions | None = None) -> None:
        super().__init__(student, teacher, options or KdsrOptions())
        if not isinstance(student, KDSR) or not isinstance(teacher, KDSRTeacher):
            raise KdError("method 'kdsr' works with student kdsr and teacher kdsr_teacher only (it distils the "
                          "teacher's HR-aware degradation encoder into the student's); got "
                          f"{type(student).__name__} from {type(teacher).__name__}")
        trunk = ("scale", "n_feats", "n_blocks", "rgb_range")
        if any(getattr(student, f) != getattr(teacher, f) for f in trunk):
            shown = ", ".join(f"{f} {getattr(student, f):g} vs {getattr(teacher, f):g}" for f in trunk)
            raise KdError(f"method 'kdsr' copies the teacher's SR trunk into the student and compares their encoder "
                          f"features: student and teacher need the same {', '.join(trunk)} (here {shown}); give "
                          "them the same preset")
        if not self.options.temperature > 0:
            raise KdError(f"method.options.temperature must be positive, got {self.options.temperature}")
        if not any(p.is_meta for p in teacher.parameters()):  # the up-front checks build the pair on `meta`
            transfer_sr_trunk(teacher.state_dict(), student)
        self.student_taps = [STUDENT_TAP]
        self.teacher_taps = [TEACHER_TAP]

    def losses(self, inputs: StepInputs) -> dict[str, Tensor]:
        kd = kdsr_kd_loss(inputs.student_feats[STUDENT_TAP], inputs.teacher_feats[TEACHER_TAP],
                          self.options.temperature)
        return {"rec": reconstruction(inputs), "kd": kd}
