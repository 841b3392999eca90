"""The distillation-method interface shared by every method (mdistiller-style: one small class per method).

A method is an `nn.Module` holding only its own trainable helpers (adapters, KRNets). It never owns the student
or the teacher, so its `state_dict()` is exactly what must be checkpointed beside the student and never exported
with it. Per training step the trainer:

1. runs the student on the LR batch, capturing `student_taps`;
2. if `needs_teacher`, runs the frozen teacher under `no_grad`, capturing `teacher_taps`;
3. calls `losses(StepInputs)` -> {term: scalar tensor}, weights the terms (method defaults, then
   `method.weights` of the config) and sums them; every term is logged unweighted;
4. backward, then `before_optimizer_step(ctx)` (a hook for methods that need extra work between the gradient and
   the update, e.g. meta-KD's virtual student step on a held-out batch), the optimizer step, then
   `after_optimizer_step(ctx)`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from kd.config import RunConfig

Average = Callable[[Sequence[Tensor]], None]  # in-place mean over data-parallel ranks


def no_average(tensors: Sequence[Tensor]) -> None:
    """The `Average` of a single process: nothing to average over."""


@dataclass
class StepInputs:
    lr: Tensor  # (B, 3, h, w) in [0, 1]
    hr: Tensor  # (B, 3, h*s, w*s) in [0, 1]
    student_out: Tensor
    teacher_out: Tensor | None = None
    student_feats: dict[str, Tensor] = field(default_factory=dict)
    teacher_feats: dict[str, Tensor] = field(default_factory=dict)
    average: Average = no_average  # for batch statistics that must be global
    rec: str = "l1"  # the reconstruction loss (`method.rec`): see `reconstruction`


@dataclass(frozen=True)
class Release:
    """A method's released configuration for one teacher: the loss weights and options its authors published for
    that pair, layered over the method's defaults (`kd.profiles.resolve_layers`), so the run's config shows them."""

    source: str  # the released file the values come from (repository, commit, path)
    weights: dict[str, float] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepContext:
    """What the optimizer-step hooks may use. Gradients of the weighted loss are already in `.grad`."""

    step: int  # index of the step being taken (0-based)
    student: nn.Module
    teacher: nn.Module | None
    optimizer: torch.optim.Optimizer
    lr: float
    holdout_batch: Callable[[], tuple[Tensor, Tensor]]  # a training batch never used for the gradient step
    weights: dict[str, float] = field(default_factory=dict)  # the loss-term weights the trainer applied
    # Gradients a hook computes itself must pass through it so every rank applies the same update. The trainer has
    # already averaged `.grad`.
    average: Average = no_average


class Distiller(nn.Module):
    """Base class of distillation methods; subclasses set the class attributes and implement `losses`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = True
    taps_features: ClassVar[bool] = True  # captures intermediate features (rules out accel.compile)
    default_weights: ClassVar[dict[str, float]] = {"rec": 1.0}  # an instance may narrow them (e.g. per mode)
    version: ClassVar[int] = 1  # part of the run id: bump it when the method's behaviour changes
    Options: ClassVar[type | None] = None  # dataclass of method options (`method.options.*`)
    # What of the method is kdbench's reconstruction rather than published code, e.g. "LSFD (from the abstract)";
    # reports name every such method beside its results. "" for a method verified against its official code.
    reconstructed: ClassVar[str] = ""
    # Terms whose published weight leaves them nearly inert beside the reconstruction: at that weight a health ratio
    # below the healthy range is the published configuration, not a fault (kd.methods.health.inert_as_published).
    published_inert: ClassVar[frozenset[str]] = frozenset()
    # Released per-pair settings, by teacher architecture or else teacher family ("cnn", "transformer"), then scale
    # (0: every scale); see `release_for`.
    releases: ClassVar[dict[str, dict[int, Release]]] = {}

    def __init__(self, student: nn.Module, teacher: nn.Module | None, options: Any = None) -> None:
        super().__init__()
        self.options = options
        self.student_taps: list[str] = []
        self.teacher_taps: list[str] = []

    @classmethod
    def release_for(cls, teacher_arch: str, family: str, scale: int) -> Release | None:
        """The released settings for this teacher (its architecture's, else its family's) at `scale`; None where
        the authors released none."""
        by_scale = cls.releases.get(teacher_arch) or cls.releases.get(family) or {}
        return by_scale.get(scale, by_scale.get(0))

    @classmethod
    def weights_for(cls, options: Any) -> dict[str, float]:
        """The default loss-term weights of the method built with `options` (the terms `method.weights` may name)."""
        return dict(cls.default_weights)

    @classmethod
    def teacher_run(cls, config: RunConfig) -> RunConfig | None:
        """The configuration of a run whose student becomes this run's teacher (a teacher assistant, trained and
        cached first: `kd.engine.assistants`); None: the configured teacher."""
        return None

    def teacher_input(self, lr: Tensor, hr: Tensor) -> Tensor:
        """The batch the frozen teacher sees: the student's LR batch, unless the teacher works at another scale."""
        return lr

    def losses(self, inputs: StepInputs) -> dict[str, Tensor]:
        raise NotImplementedError

    def check_schedule(self, steps: int) -> None:
        """Raise a KdError when a term of the method could not act within `steps` training steps."""

    def before_optimizer_step(self, ctx: StepContext) -> dict[str, float]:
        """Hook between backward and the optimizer step; may add gradients. Returns extra values to log."""
        return {}

    def after_optimizer_step(self, ctx: StepContext) -> None:
        """Hook after the optimizer step (e.g. to update a method-owned second optimizer)."""

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimizer groups for the method's own parameters; by default trained with the student's lr."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "lr": lr}] if params else []


def reconstruction(inputs: StepInputs) -> Tensor:
    """The reconstruction term of every method: L1 to the ground truth, or with `method.rec=dct` the weighted
    8x8 block-DCT L1 (`kd.methods.dct`)."""
    if inputs.rec == "dct":
        from kd.methods.dct import frequency_l1  # the DCT method's module imports this one

        return frequency_l1(inputs.student_out, inputs.hr)
    return torch.nn.functional.l1_loss(inputs.student_out, inputs.hr)


reconstruction_l1 = reconstruction  # its name before `method.rec` existed, which method plugins import


def output_kd_l1(inputs: StepInputs) -> Tensor:
    """Output ("logits") KD: both networks output RGB in [0, 1], so the SR images compare directly."""
    return torch.nn.functional.l1_loss(inputs.student_out, inputs.teacher_out)
