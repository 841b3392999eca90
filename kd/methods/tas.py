"""TAS: a teacher-assistant-student chain, Pixel Distillation's two stages adapted to SR (or TAKD's plain chain).

Pixel Distillation (G. Guo, D. Zhang, L. Han, N. Liu, M.-M. Cheng, J. Han, TPAMI 2024, arXiv:2112.09532v2;
abstract, and the README of gyguo/PixelDistillation at 0c1bc35) distils a teacher that sees large images into a
student that sees small ones through a Teacher-Assistant-Student (TAS) framework that "disentangle[s] pixel
distillation into the model compression stage and input compression stage". Its repository releases the one-stage
teacher-student code only; the two-stage TAS is listed as "Todo", and the paper is about classification and
detection. Nothing here is checked against code: kdbench adapts the framework to SR as follows.

Mode `input` (default). In SR a larger input is an easier scale: the student's xs problem with a 2x larger LR
input is the x(s/2) problem with the same HR target (x4 student, x2 assistant).
* Stage 1, model compression: an assistant with the student's architecture and preset learns x(s/2) from a
  teacher of the run's teacher architecture and preset at x(s/2) (the zoo trains it when missing). Teacher and
  assistant see the same input, as in the paper's first stage: the HR/2 of the same HR patches
  (`train.lr_patch` doubled, so the HR patch, and the training images that hold one, stay the student's).
* Stage 2, input compression: the student (xs, LR input) learns from the frozen assistant, which sees HR/2 made
  from the batch's HR patch with kdbench's MATLAB-style bicubic rounded to 8 bits, as the data pipeline makes LR
  images (`kd.data.imresize.downscale_uint8`; made per patch, so only its border pixels differ from a crop of the
  whole image's HR/2). Both networks output HR-sized images, so output terms compare directly; the assistant's
  maps are twice the student's size and are averaged over 2x2 cells onto the student's grid
  (`kd.methods.pairing.on_student_grid`) before the stage method compares them.
kdbench's reading, not the paper's: stage 1's teacher is the x(s/2) one, because the paper's teacher sees the large
input (distilling the xs teacher into the x(s/2) assistant would pull the assistant, which sees more, towards a
worse image); ISRD, the paper's own stage-2 loss (a learned pixel-shuffle reconstruction of the large image from
the student's input features), is not reproduced: any kdbench method can distil in both stages (`stage_method`,
with `stage_options`), provided in stage 2 it meets the teacher only through the trainer's forward pass
(`INPUT_MODE_METHODS`).

Mode `size`: the plain teacher-assistant chain of TAKD (S. I. Mirzadeh et al., AAAI 2020, arXiv:1902.03393): an
intermediate-size network (`assistant_arch`, `assistant_preset`) learns the run's scale from the run's teacher,
then teaches the student; every network sees the same LR input.

Both stages are kdbench runs with their ids, records and resume. Stage 1 is `teacher_run(config)`: a run of the
stage method (its `stage_options`, the run's `method.weights` and `method.rec`, over that method's released
settings and the profile's weights for the teacher, as any run of it), seeded with `teacher.seed` like a zoo
teacher so that every seed of a grid shares one assistant; `kd.engine.assistants` trains it first and caches it.
Stage 2 is this run: the stage method's terms and weights, from the assistant.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from kd.data.imresize import downscale_uint8
from kd.errors import KdError
from kd.methods import create_method, get_method, method_options, register_method
from kd.methods.base import Distiller, StepContext, StepInputs
from kd.methods.pairing import on_student_grid

if TYPE_CHECKING:
    from kd.config import RunConfig

INPUT_FACTOR = 2  # mode input: the assistant's input is this many times larger than the student's
# Methods that meet the teacher only through the trainer's forward pass (its output and (B, C, h, w) tap maps), so
# an assistant that sees HR/2 can teach with them in stage 2. The others run the teacher on LR-based inputs of their
# own (DUKD, DCKD, MiPKD's block mixer) or compare attention maps laid out on one padded grid (attention).
INPUT_MODE_METHODS = frozenset({"logits", "fitnet", "lsfd", "facd", "fakd", "krnet", "dct"})


@dataclass
class TasOptions:
    mode: str = "input"  # input: x(s/2) assistant of the student's network (Pixel Distillation); size: TAKD's
    stage_method: str = "logits"  # the distillation method of both stages
    stage_options: dict[str, Any] = field(default_factory=dict)  # its method.options
    assistant_arch: str | None = None  # mode size: the intermediate network
    assistant_preset: str | None = None  # mode size: its preset (None: the architecture's default)


def check_options(options: TasOptions) -> None:
    """Option values that cannot make a chain; each error names the option and what works."""
    if options.mode not in ("input", "size"):
        raise KdError(f"method.options.mode must be 'input' (an x(s/2) assistant of the student's network) or "
                      f"'size' (an intermediate network at the run's scale), got '{options.mode}'.")
    stage = get_method(options.stage_method)
    if stage.name == TeacherAssistant.name or not stage.needs_teacher:
        raise KdError(f"method.options.stage_method must be a distillation method other than tas, got "
                      f"'{options.stage_method}'.")
    if options.mode == "input":
        if stage.name not in INPUT_MODE_METHODS:
            raise KdError(f"method 'tas' (mode input): stage method '{stage.name}' runs the teacher on inputs of its "
                          "own or compares maps on one padded grid, so an assistant that sees HR/2 cannot teach with "
                          f"it; use one of {', '.join(sorted(INPUT_MODE_METHODS))}, or method.options.mode=size.")
        if options.assistant_arch or options.assistant_preset:
            raise KdError("method.options.assistant_arch and assistant_preset are for mode size; mode input's "
                          "assistant is the student's network at half the scale.")
    elif not options.assistant_arch:
        raise KdError("method 'tas' (mode size) needs the intermediate network: give method.options.assistant_arch "
                      "(and assistant_preset), e.g. assistant_arch=rcan assistant_preset=mini_student.")


@register_method
class TeacherAssistant(Distiller):
    name = "tas"
    description = ("teacher-assistant-student chain (reconstruction: Pixel Distillation's TAS adapted to SR, its "
                   "two-stage code unreleased): an x(s/2) assistant of the student's network learns from the x(s/2) "
                   "teacher, then teaches the student from HR/2; mode=size: TAKD's intermediate assistant. Terms: "
                   "those of stage_method (default logits)")
    reconstructed = "TAS (Pixel Distillation's two stages adapted to SR; its two-stage code was never released)"
    default_weights = {"rec": 1.0, "kd": 1.0}  # those of the default stage method, logits
    taps_features = True  # whatever the stage method, so accel.compile is refused for every TAS run
    Options = TasOptions

    @classmethod
    def weights_for(cls, options: TasOptions) -> dict[str, float]:
        check_options(options)
        stage = get_method(options.stage_method)
        return stage.weights_for(method_options(stage.name, options.stage_options))

    @classmethod
    def teacher_run(cls, config: RunConfig) -> RunConfig:
        """Stage 1: the run that trains the assistant (see the module docstring)."""
        from kd.config import run_prefix, to_dict
        from kd.profiles import PROFILES, profile_layer, resolve_layers

        options = method_options(cls.name, config.method.options)
        check_options(options)
        values = to_dict(config)
        values["seed"] = config.teacher.seed
        values["method"] = {"name": options.stage_method, "weights": dict(config.method.weights),
                            "options": dict(options.stage_options), "rec": config.method.rec}
        if options.mode == "input":
            if config.scale % INPUT_FACTOR or config.scale < 2 * INPUT_FACTOR:
                raise KdError(f"method 'tas' (mode input) trains an assistant at half the scale, which needs an even "
                              f"scale of at least {2 * INPUT_FACTOR}, got x{config.scale}; use "
                              "method.options.mode=size.")
            if config.teacher.ckpt:
                raise KdError(f"method 'tas' (mode input) distils the assistant from an x{config.scale // 2} "
                              f"teacher, but --teacher-ckpt (teacher.ckpt) gives an x{config.scale} one: leave it "
                              "out (the zoo trains the teacher at that scale) or use method.options.mode=size.")
            values["scale"] = config.scale // INPUT_FACTOR
            values["train"]["lr_patch"] = config.train.lr_patch * INPUT_FACTOR
        else:
            values["student"] = {"arch": options.assistant_arch, "preset": options.assistant_preset}
        layers = [profile_layer(config.profile)] if config.profile in PROFILES else []
        layers.append((f"TAS stage 1 (the assistant) of {run_prefix(config)}", values))
        return resolve_layers(layers)

    def __init__(self, student: nn.Module, teacher: nn.Module | None, options: TasOptions) -> None:
        super().__init__(student, teacher, options)
        check_options(options)
        self.factor = INPUT_FACTOR if options.mode == "input" else 1
        student_scale = (getattr(student, "kd_spec", None) or {}).get("scale")
        teacher_scale = (getattr(teacher, "kd_spec", None) or {}).get("scale")
        if student_scale and teacher_scale and teacher_scale * self.factor != student_scale:
            raise KdError(f"method 'tas' (mode {options.mode}): the teacher of an x{student_scale} student here is the "
                          f"assistant, an x{student_scale // self.factor} network; got an x{teacher_scale} one.")
        self.stage = create_method(options.stage_method, student, teacher, options.stage_options)
        self.student_taps, self.teacher_taps = self.stage.student_taps, self.stage.teacher_taps
        self.default_weights = dict(self.stage.default_weights)
        self.published_inert = self.stage.published_inert

    def teacher_input(self, lr: Tensor, hr: Tensor) -> Tensor:
        """Mode input: HR / 2 of the batch's HR patch, rounded to 8 bits like the LR images; else the LR batch."""
        if self.factor == 1:
            return lr
        pixels = (hr.float() * 255).round().clamp(0, 255).to(torch.uint8)
        return downscale_uint8(pixels, self.factor).to(hr.dtype) / 255

    def losses(self, inputs: StepInputs) -> dict[str, Tensor]:
        if self.factor != 1:
            size = (inputs.lr.shape[-2], inputs.lr.shape[-1])
            grid = {tap: on_student_grid(feat, size, self.factor) for tap, feat in inputs.teacher_feats.items()}
            inputs = dataclasses.replace(inputs, teacher_feats=grid)
        return self.stage.losses(inputs)

    def check_schedule(self, steps: int) -> None:
        self.stage.check_schedule(steps)

    def before_optimizer_step(self, ctx: StepContext) -> dict[str, float]:
        return self.stage.before_optimizer_step(ctx)

    def after_optimizer_step(self, ctx: StepContext) -> None:
        self.stage.after_optimizer_step(ctx)

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        return self.stage.param_groups(lr)
