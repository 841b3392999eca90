"""Meta knowledge distillation with knowledge representation networks (KRNets), re-implemented from the abstract.

Paper: Han Zhu, Zhenzhong Chen, Shan Liu, "Learning Knowledge Representation with Meta Knowledge Distillation for
Single Image Super-Resolution", arXiv:2207.08356 (2022). No public code exists and the method section was not
checked (METHODS.md, section 8), so this is "KRNet-like, reconstructed from the abstract".

Verified from the abstract [V-abs]: knowledge is represented by learnable KRNets that use the student features and
the teacher-student correlation; texture-aware dynamic kernels extract the student's texture features and the
matching teacher guidance (texture-wise supervision); the KRNets are optimised by meta-learning so that knowledge
transfer improves the student's reconstruction; no inference overhead (the KRNets are never exported).

Reconstructed here (METHODS.md 8.1 [I] plus documented choices):

* taps: pairs at about 1/3 and 2/3 of both bodies plus body tail to body tail (`kd.methods.pairing`, as FitNet);
  a learned 1x1 adapter maps student channels to the teacher's and is trained with the student (like FitNet's);
* each side is standardised with its own statistics (`kd.methods.pairing.standardize_pair`), so one weight suits
  RCAN ([0, 255]), SwinIR ([0, 1]) and ASID ([-1, 1]) teachers and the student is not pulled to the teacher's scale;
* per tap, a KRNet `g_phi` (1x1 conv -> GELU -> 3x3 conv -> GELU -> 1x1 conv) reads concat(S, T, S*T) (the product
  is the per-channel correlation) and emits `num_kernels` per-pixel k x k kernels, shared across channels. Each
  kernel is made zero-mean (a high-pass filter: texture, not flat colour) and unit-norm (so the KRNet chooses which
  textures to compare, never how loudly), then applied to both sides: L_KR = mean |K * S - K * T|. The student
  features reach the generator *detached*: the student learns by matching the filtered features, never by steering
  which textures are compared (without the detach, 74 % of L_KR's gradient on the student went through the
  generator's input);
* meta step (DARTS-style bi-level update, after the main backward): a virtual step theta' = theta - Delta(g) that is
  the update the student's own optimizer would take for its current gradient g (Adam/AdamW with its moments, bias
  corrections and weight decay: a plain SGD step at the same lr is ~2000x smaller than the real AdamW step;
  `virtual_step="sgd"` keeps the DARTS form theta - alpha * g); v = grad of the L1 reconstruction of S_theta' on a
  held-out training batch; the hyper-gradient of phi is -w_kr * d/dphi <grad_theta L_KR(theta, phi), P v>, with
  P = dDelta/dg the optimizer's per-element step size (Adam: lr (1 - beta1) / (1 - beta1^t) / (sqrt(v_hat) + eps),
  the second moment held fixed; SGD: alpha).
  `meta_order="first"` (default) approximates that mixed second derivative by a central finite difference of
  grad_phi L_KR at theta +- r v (first-order gradients only); `"second"` computes it exactly with `torch.func`
  (grad of grad; memory-heavy). The KRNets have their own Adam optimizer (lr 3e-4, DARTS' architecture lr), fed
  the hyper-gradient divided by lr * w_kr with eps 1e-12 (the hyper-gradient is a mixed second derivative,
  often ~1e-10 per element, which Adam's default eps would swamp); its state is checkpointed in this module's
  state dict (`get_extra_state`);
* the student update uses the gradient computed with phi before its meta update (alternating, saves a recompute).

First versus second order: with plain L1 the hyper-gradient is a derivative of sign(K*S - K*T), which autograd
takes as zero; the exact (second-order) route therefore drops the sign-flip terms that the finite difference picks
up, and the two disagree. With a smooth distance (`smooth` > 0, Charbonnier) both approximate the same derivative
and agree (tests/test_methods_krnet.py checks them against a brute-force difference of the bilevel objective).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn import functional as F

from kd.errors import KdError
from kd.methods import register_method
from kd.methods.base import Distiller, StepContext, StepInputs, reconstruction
from kd.methods.pairing import conv_adapter, paired_feature_taps, standardize_pair, tap_key
from kd.models import capture


@dataclass
class KRNetOptions:
    count: int = 3  # number of tap pairs chosen by relative depth
    student_taps: list[str] = field(default_factory=list)  # explicit taps (override `count`)
    teacher_taps: list[str] = field(default_factory=list)
    num_kernels: int = 4  # dynamic kernels per pixel
    kernel_size: int = 3
    hidden: int = 32  # KRNet width
    zero_mean: bool = True  # high-pass (texture) kernels
    smooth: float = 0.0  # Charbonnier eps of the distance; 0 = plain L1 (see the module docstring)
    normalize: bool = True  # standardise each side with its own statistics (kd.methods.pairing.standardize_pair)
    meta_order: str = "first"  # first (finite-difference hyper-gradient) | second (exact, torch.func)
    meta_lr: float = 3e-4  # Adam lr of the KRNets
    meta_eps: float = 1e-12  # Adam eps of the KRNets: hyper-gradients are tiny, 1e-8 would swamp them
    meta_every: int = 1  # meta step every N student steps (CPU budget knob)
    virtual_step: str = "optimizer"  # optimizer: the student optimizer's own (Adam/AdamW) update | sgd: theta - alpha g
    virtual_lr: float = 0.0  # lr of the virtual step; 0 = the student's current lr
    fd_epsilon: float = 0.01  # finite-difference radius r = fd_epsilon / ||v|| (DARTS)



@dataclass
class VirtualStep:
    """A virtual student update theta' = theta - update, and its per-element derivative d update / d g."""

    update: list[Tensor]
    jacobian: list[Tensor]


def sgd_virtual_step(grads: Sequence[Tensor], lr: float) -> VirtualStep:
    return VirtualStep([lr * g for g in grads], [torch.full_like(g, lr) for g in grads])


def optimizer_virtual_step(optimizer: torch.optim.Optimizer, params: Sequence[Tensor], grads: Sequence[Tensor],
                           lr: float) -> VirtualStep:
    """The update `optimizer` (Adam or AdamW, with its current moments) would apply for `grads` at `lr`, without
    applying it; other optimizers fall back to an SGD step. The second moment is held fixed in the derivative."""
    if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        return sgd_virtual_step(grads, lr)
    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    decoupled = isinstance(optimizer, torch.optim.AdamW)
    updates, jacobians = [], []
    for param, grad in zip(params, grads):
        group = group_of.get(id(param))
        if group is None:
            updates.append(lr * grad)
            jacobians.append(torch.full_like(grad, lr))
            continue
        beta1, beta2 = group["betas"]
        state = optimizer.state.get(param, {})
        t = int(state["step"]) + 1 if "step" in state else 1
        if group["weight_decay"] and not decoupled:
            grad = grad + group["weight_decay"] * param.detach()
        m = state["exp_avg"] * beta1 + (1 - beta1) * grad if "exp_avg" in state else (1 - beta1) * grad
        v = state["exp_avg_sq"] * beta2 + (1 - beta2) * grad * grad if "exp_avg_sq" in state else (1 - beta2) * grad * grad
        denominator = (v / (1 - beta2**t)).sqrt() + group["eps"]
        update = lr * (m / (1 - beta1**t)) / denominator
        if group["weight_decay"] and decoupled:
            update = update + lr * group["weight_decay"] * param.detach()
        updates.append(update)
        jacobians.append(lr * (1 - beta1) / (1 - beta1**t) / denominator)
    return VirtualStep(updates, jacobians)


def apply_kernels(feat: Tensor, kernels: Tensor) -> Tensor:
    """Per-pixel kernels (B, M, k*k, H, W), shared across channels, applied to (B, C, H, W) -> (B, M, C, H, W)."""
    b, c, h, w = feat.shape
    k = int(round(kernels.shape[2] ** 0.5))
    patches = F.unfold(feat, k, padding=k // 2).view(b, c, k * k, h, w)
    return torch.einsum("bcqhw,bmqhw->bmchw", patches, kernels)


class KRNet(nn.Module):
    """Texture-aware dynamic-kernel generator of one tap pair."""

    def __init__(
        self, channels: int, hidden: int, num_kernels: int, kernel_size: int, zero_mean: bool, smooth: float = 0.0
    ) -> None:
        super().__init__()
        self.num_kernels, self.kernel_size, self.zero_mean, self.smooth = num_kernels, kernel_size, zero_mean, smooth
        self.generator = nn.Sequential(
            nn.Conv2d(3 * channels, hidden, 1), nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.GELU(),
            nn.Conv2d(hidden, num_kernels * kernel_size**2, 1),
        )

    def kernels(self, student: Tensor, teacher: Tensor) -> Tensor:
        b, _, h, w = student.shape
        student = student.detach()  # see the module docstring: the student must not steer the kernels
        raw = self.generator(torch.cat([student, teacher, student * teacher], dim=1))
        raw = raw.view(b, self.num_kernels, self.kernel_size**2, h, w)
        if self.zero_mean:
            raw = raw - raw.mean(dim=2, keepdim=True)
        return raw * torch.rsqrt(raw.pow(2).sum(dim=2, keepdim=True) + 1e-6)

    def forward(self, student: Tensor, teacher: Tensor, kernel_student: Tensor | None = None) -> Tensor:
        """L_KR of one tap; the kernels read `kernel_student` (default: `student`), always detached."""
        kernels = self.kernels(student if kernel_student is None else kernel_student, teacher)
        diff = apply_kernels(student - teacher, kernels)  # K*S - K*T, filtered once: the filter is linear
        if self.smooth > 0:
            return (diff.pow(2) + self.smooth**2).sqrt().sub(self.smooth).mean()
        return diff.abs().mean()


@register_method
class KRNetDistillation(Distiller):
    name = "krnet"
    reconstructed = "KRNet meta-KD (from the abstract)"
    description = "meta-KD: KRNet texture-aware dynamic kernels on both sides, L1; KRNets meta-learned (reconstructed)"
    # Standardised features as in FitNet; 0.1 keeps the reconstruction term dominant (paper weight unknown).
    default_weights = {"rec": 1.0, "kr": 0.1}
    Options = KRNetOptions
    version = 2  # per-side standardisation, body-tail pairing, detached kernel input, optimizer-consistent virtual step

    def __init__(self, student: nn.Module, teacher: nn.Module | None, options: KRNetOptions) -> None:
        super().__init__(student, teacher, options)
        _check_options(options)
        self.student_taps, self.teacher_taps, student_channels, teacher_channels = paired_feature_taps(
            self.name, student, teacher, options.count, options.student_taps, options.teacher_taps
        )
        self.adapters = nn.ModuleDict()
        self.krnets = nn.ModuleDict()
        for s_tap, t_tap in zip(self.student_taps, self.teacher_taps):
            c_out = teacher_channels[t_tap]
            self.adapters[tap_key(s_tap)] = conv_adapter(student_channels[s_tap], c_out)
            self.krnets[tap_key(s_tap)] = KRNet(
                c_out, options.hidden, options.num_kernels, options.kernel_size, options.zero_mean, options.smooth
            )
        self.meta_optimizer = torch.optim.Adam(self.krnets.parameters(), lr=options.meta_lr, eps=options.meta_eps)
        self._step_batch: tuple[Tensor, dict[str, Tensor], dict[str, Tensor]] | None = None
        self._average: Callable[[Sequence[Tensor]], None] = lambda tensors: None

    # ------------------------------------------------------------------------------------------ loss

    def _compared(self, s_tap: str, t_tap: str, student_feats: dict[str, Tensor],
                  teacher_feats: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The adapted student map and the teacher map of one pair, on their common area, standardised."""
        teacher = teacher_feats[t_tap].detach()
        student = self.adapters[tap_key(s_tap)](student_feats[s_tap])
        # Padded networks (ASID, SwinIR) may return maps larger than the LR input; compare the common area.
        h, w = min(student.shape[-2], teacher.shape[-2]), min(student.shape[-1], teacher.shape[-1])
        student, teacher = student[..., :h, :w], teacher[..., :h, :w]
        if self.options.normalize:
            student, teacher = standardize_pair(student, teacher, self._average)
        return student, teacher

    def forward(self, student_feats: dict[str, Tensor], teacher_feats: dict[str, Tensor],
                kernel_feats: dict[str, Tensor] | None = None) -> Tensor:
        """L_KR: mean over tap pairs of the L1 between kernel-filtered student and teacher features. The kernels
        read `kernel_feats` (default: `student_feats`): the meta step holds them at the unperturbed student."""
        per_tap = []
        for s_tap, t_tap in zip(self.student_taps, self.teacher_taps):
            student, teacher = self._compared(s_tap, t_tap, student_feats, teacher_feats)
            kernel_student = None if kernel_feats is None else self._compared(s_tap, t_tap, kernel_feats,
                                                                               teacher_feats)[0]
            per_tap.append(self.krnets[tap_key(s_tap)](student, teacher, kernel_student))
        return torch.stack(per_tap).mean()

    def losses(self, inputs: StepInputs) -> dict[str, Tensor]:
        teacher_feats = {k: v.detach() for k, v in inputs.teacher_feats.items()}
        # The meta step re-evaluates L_KR on this batch, with kernels read from these student features; it runs
        # outside autocast, so a bf16-autocast student's maps are stored in the input's precision.
        student_feats = {k: inputs.student_feats[k].detach().to(inputs.lr.dtype) for k in self.student_taps}
        self._step_batch = (inputs.lr.detach(), teacher_feats, student_feats)
        self._average = inputs.average  # ... with the same (global) feature statistics
        return {"rec": reconstruction(inputs), "kr": self(inputs.student_feats, teacher_feats)}

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Only the adapters train with the student; the KRNets have their own (meta) optimizer."""
        params = [p for p in self.adapters.parameters() if p.requires_grad]
        return [{"params": params, "lr": lr}] if params else []

    # ------------------------------------------------------------------------------------------ meta step

    def before_optimizer_step(self, ctx: StepContext) -> dict[str, float]:
        weight = ctx.weights.get("kr", self.default_weights["kr"]) if ctx.weights else self.default_weights["kr"]
        # L_KR's own gradient on the KRNets is never used: they learn only from the meta objective.
        self.meta_optimizer.zero_grad(set_to_none=True)
        if self._step_batch is None or weight == 0 or ctx.step % self.options.meta_every:
            self._step_batch = None
            return {}
        lr, teacher_feats, student_feats = self._step_batch
        self._step_batch = None
        step_lr = self.options.virtual_lr or ctx.lr
        params = [p for p in ctx.student.parameters() if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        if self.options.virtual_step == "optimizer":
            step = optimizer_virtual_step(ctx.optimizer, params, grads, step_lr)
        else:
            step = sgd_virtual_step(grads, step_lr)
        holdout_lr, holdout_hr = ctx.holdout_batch()
        hyper, val_loss = self.hypergradient(ctx.student, lr, teacher_feats, holdout_lr, holdout_hr, step, weight,
                                             student_feats)
        ctx.average(hyper)
        for param, grad in zip(self.krnets.parameters(), hyper):
            param.grad = grad / (step_lr * weight)  # Adam ignores this positive scale, except through its eps
        self.meta_optimizer.step()
        self.meta_optimizer.zero_grad(set_to_none=True)
        return {"meta_val_rec": val_loss}

    def hypergradient(
        self,
        student: nn.Module,
        lr: Tensor,
        teacher_feats: dict[str, Tensor],
        holdout_lr: Tensor,
        holdout_hr: Tensor,
        step: VirtualStep | float,
        weight: float,
        student_feats: dict[str, Tensor] | None = None,
    ) -> tuple[list[Tensor], float]:
        """d L_val(theta') / d phi for theta' = theta - step.update; `step` may be a plain SGD step size, applied to
        the gradient in `.grad` (which must hold the step's gradient). `student_feats` are the student's taps at
        theta on `lr` when the caller has them (the training step does), saving a forward.

        Returns the gradients in `self.krnets.parameters()` order and L_val(theta'). The student is left bitwise
        as it was.
        """
        names, params = zip(*[(n, p) for n, p in student.named_parameters() if p.requires_grad])
        if not isinstance(step, VirtualStep):
            step = sgd_virtual_step([p.grad if p.grad is not None else torch.zeros_like(p) for p in params], step)
        device = params[0].device
        holdout_lr, holdout_hr = holdout_lr.to(device), holdout_hr.to(device)
        saved = [p.detach().clone() for p in params]
        try:
            with torch.no_grad():
                for p, u in zip(params, step.update):
                    p.sub_(u)
            val_loss = F.l1_loss(student(holdout_lr), holdout_hr)
            direction = torch.autograd.grad(val_loss, params, allow_unused=True)
            direction = [torch.zeros_like(p) if d is None else d * j for p, d, j in zip(params, direction,
                                                                                        step.jacobian)]
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
            if self.options.meta_order == "second":
                mixed = self._mixed_exact(student, dict(zip(names, direction)), lr, teacher_feats)
            else:
                mixed = self._mixed_finite_difference(student, params, saved, direction, lr, teacher_feats,
                                                      student_feats)
        finally:
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
        return [-weight * m for m in mixed], float(val_loss.detach())

    def _mixed_finite_difference(
        self,
        student: nn.Module,
        params: Sequence[Tensor],
        saved: Sequence[Tensor],
        direction: Sequence[Tensor],
        lr: Tensor,
        teacher_feats: dict[str, Tensor],
        at_theta: dict[str, Tensor] | None = None,
    ) -> list[Tensor]:
        """(grad_phi L_KR(theta + r v) - grad_phi L_KR(theta - r v)) / 2r ~ d/dphi <grad_theta L_KR, v>.

        The kernels read the features at theta on both sides: the student's gradient never flows through the
        kernel generator's input, so its derivative along v must not either."""
        norm = torch.sqrt(sum(d.pow(2).sum() for d in direction))
        radius = self.options.fd_epsilon / float(norm.clamp_min(1e-12))
        phi = list(self.krnets.parameters())
        if at_theta is None:
            with torch.no_grad(), capture(student, self.student_taps, detach=True) as captured:
                student(lr)
            at_theta = dict(captured)
        device = saved[0].device
        sides = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for p, s, d in zip(params, saved, direction):
                    p.copy_(s + sign * radius * d)
            # Both sides draw the same random numbers (a student with dropout or drop-path): a difference of
            # two differently masked forwards, divided by a tiny 2r, would be noise.
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad(), \
                    capture(student, self.student_taps, detach=True) as feats:
                student(lr)
            sides.append(torch.autograd.grad(self(dict(feats), teacher_feats, at_theta), phi, allow_unused=True))
        return [
            torch.zeros_like(p) if a is None else (a - b) / (2 * radius) for p, a, b in zip(phi, *sides)
        ]

    def _mixed_exact(
        self, student: nn.Module, direction: dict[str, Tensor], lr: Tensor, teacher_feats: dict[str, Tensor]
    ) -> list[Tensor]:
        """d/dphi <grad_theta L_KR(theta, phi), v> by grad-of-grad with torch.func."""
        theta = {n: p.detach() for n, p in student.named_parameters() if n in direction}
        phi = {f"krnets.{n}": p.detach() for n, p in self.krnets.named_parameters()}

        def kr_loss(theta: dict[str, Tensor], phi: dict[str, Tensor]) -> Tensor:
            with capture(student, self.student_taps) as feats:
                functional_call(student, theta, (lr,))
            return functional_call(self, phi, (dict(feats), teacher_feats))

        def directional(phi: dict[str, Tensor]) -> Tensor:
            grad_theta = torch.func.grad(kr_loss)(theta, phi)
            return torch.stack([(grad_theta[n] * direction[n]).sum() for n in grad_theta]).sum()

        mixed = torch.func.grad(directional)(phi)
        return [mixed[f"krnets.{n}"] for n, _ in self.krnets.named_parameters()]

    # ------------------------------------------------------------------------------------------ state

    def get_extra_state(self) -> Any:
        return {"meta_optimizer": self.meta_optimizer.state_dict()}

    def set_extra_state(self, state: Any) -> None:
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])


def _check_options(options: KRNetOptions) -> None:
    problems = []
    if options.count < 1:
        problems.append(f"method.options.count must be >= 1, got {options.count}")
    if options.num_kernels < 1:
        problems.append(f"method.options.num_kernels must be >= 1, got {options.num_kernels}")
    if options.kernel_size < 1 or options.kernel_size % 2 == 0:
        problems.append(f"method.options.kernel_size must be odd and >= 1, got {options.kernel_size}")
    elif options.zero_mean and options.kernel_size == 1:
        problems.append("method.options.kernel_size=1 with zero_mean=true gives all-zero kernels; use 3 or more")
    if options.smooth < 0:
        problems.append(f"method.options.smooth must be >= 0, got {options.smooth}")
    if options.hidden < 1:
        problems.append(f"method.options.hidden must be >= 1, got {options.hidden}")
    if options.virtual_step not in ("optimizer", "sgd"):
        problems.append(f"method.options.virtual_step must be 'optimizer' or 'sgd', got '{options.virtual_step}'")
    if options.meta_order not in ("first", "second"):
        problems.append(f"method.options.meta_order must be 'first' or 'second', got '{options.meta_order}'")
    positive = min(options.meta_lr, options.meta_eps, options.fd_epsilon) > 0
    if not positive or options.meta_every < 1 or options.virtual_lr < 0:
        problems.append("method.options.meta_lr, meta_eps and fd_epsilon must be > 0, meta_every >= 1 and "
                        "virtual_lr >= 0")
    if problems:
        raise KdError("; ".join(problems) + ".")
