"""MiPKD-like multi-granularity mixture of priors, reconstructed from the paper's description (no public code).

Paper: S. Li, Y. Zhang, W. Li, H. Chen, W. Wang, B. Jing, S. Lin, J. Hu, "Knowledge Distillation with
Multi-granularity Mixture of Priors for Image Super-Resolution", arXiv:2404.02573, ICLR 2025. No official code was
found (METHODS.md 10.2); everything below the first paragraph is kdbench's reconstruction [I].

Described [V-abs / V-2nd]: a *feature prior mixer* encodes teacher and student features with separate CNN encoders
into one latent space, mixes them with random complementary 3-D masks and decodes the mix back to the teacher's
feature space, with an L1 loss to the teacher feature and an auxiliary auto-encoder reconstruction loss; a *block
prior mixer* sends the mixed feature through the next student block or the next teacher block (random switch) and
compares the output of that dynamically assembled network with the teacher's output;
L = L_rec + L_kd + lambda_feat L_feat + lambda_block L_block with lambda_feat = 1, lambda_block = 0.1.

Reconstruction, per tap pair j (taps at relative depths, as FitNet's):
    s, t   = standardize_pair(F_S^j, F_T^j)               each side with its own statistics, teacher detached
    z_s    = E_S^j(s),  z_t = E_T^j(t)                      conv3x3 -> LeakyReLU -> conv3x3 to `latent` channels
    M      ~ Bernoulli(mask_ratio) of shape (B, latent, h, w); z_mix = M * z_t + (1 - M) * z_s
    L_feat = mean_j [ L1(D_T^j(z_mix), t) + L1(D_T^j(z_t), t) + L1(D_S^j(z_s), sg(s)) ]
             (the mixture term, and auto-encoder terms for both sides; sg = stop-gradient, so the student is not
             pulled towards features that are easy to reconstruct)
Block level, one random tap pair k and one random switch R per step:
    R = 0: D_T^k(z_mix), put back in the teacher's units (its detached statistics), replaces the teacher's feature
           at tap k and the teacher's remaining blocks run (frozen, with gradient to the feature);
    R = 1: D_S^k(z_mix) in the student's units replaces the student's feature at tap k and the student's
           remaining blocks run;
    L_block = L1(output, T(x)).
The encoders and decoders are method modules (trained with the student, never exported). The mask ratio 0.5, the
latent width and the per-step choice of k and R are kdbench choices.

Health: on the teacher branch (R = 0) the block term reaches the student only through z_s's share of the mixed latent,
so its gradient ratio is near 0 there (about 1e-4 at step 0 of the miniature SwinIR pair, against about 0.1 on the
student branch; tests check the gap on tiny networks); the low block readings `kdbench report` flags are those
steps.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from kd.errors import KdError
from kd.methods import register_method
from kd.methods.base import Distiller, StepInputs, output_kd_l1, reconstruction
from kd.methods.pairing import common_area, map_stats, paired_feature_taps, standardize_pair, tap_key


@dataclass
class MipkdOptions:
    count: int = 3  # tap pairs chosen by relative depth
    student_taps: list[str] = field(default_factory=list)  # explicit taps (override `count`)
    teacher_taps: list[str] = field(default_factory=list)
    latent: int = 64  # channels of the shared latent space
    mask_ratio: float = 0.5  # probability that a latent entry comes from the teacher
    block_level: bool = True  # the block prior mixer (one extra forward of the teacher or the student per step)
    seed: int | None = None  # the masks, tap and switch streams; None: drawn from the run's seed


def _codec(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(c_out, c_out, 3, padding=1))


def _replace_output(output, value: Tensor):
    """`value` in the form of a module's output: the same map, tokens (B, N, C), or the first item of a tuple."""
    if isinstance(output, (tuple, list)):
        return type(output)([_replace_output(output[0], value), *output[1:]])
    if output.dim() == 3:  # SwinIR layers hand out (B, h*w, C) tokens
        return value.flatten(2).transpose(1, 2)
    return value


@contextmanager
def injected(model: nn.Module, tap: str, value: Tensor):
    """Run `model` with the output of module `tap` replaced by `value` (the rest of the network runs on it)."""
    module = dict(model.named_modules())[tap]
    handle = module.register_forward_hook(lambda _m, _inputs, output: _replace_output(output, value))
    try:
        yield
    finally:
        handle.remove()


def with_area(full: Tensor, area: Tensor) -> Tensor:
    """`full` (detached) with its top-left area replaced by `area` (padded networks have larger maps)."""
    h, w = area.shape[-2:]
    if full.shape[-2:] == (h, w):
        return area
    out = full.detach().clone()
    out[..., :h, :w] = area
    return out


@register_method
class MiPKD(Distiller):
    name = "mipkd"
    reconstructed = "MiPKD (from the paper's description; no public code)"
    description = "MiPKD-like (reconstructed): feature prior mixer (masked latent mixing) + block prior mixer"
    default_weights = {"rec": 1.0, "kd": 1.0, "feat": 1.0, "block": 0.1}
    Options = MipkdOptions
    version = 3  # the streams follow the run seed unless `seed` is set (version 2 used seed 0 for every run)

    def __init__(self, student: nn.Module, teacher: nn.Module | None, options: MipkdOptions) -> None:
        super().__init__(student, teacher, options)
        if not 0 <= options.mask_ratio <= 1:
            raise KdError(f"method.options.mask_ratio must be in [0, 1], got {options.mask_ratio}.")
        if options.latent < 1:
            raise KdError(f"method.options.latent must be >= 1, got {options.latent}.")
        self.student_taps, self.teacher_taps, s_channels, t_channels = paired_feature_taps(
            self.name, student, teacher, options.count, options.student_taps, options.teacher_taps
        )
        pairs = list(zip(self.student_taps, self.teacher_taps))
        self.student_encoders = nn.ModuleDict({tap_key(s): _codec(s_channels[s], options.latent) for s, _ in pairs})
        self.teacher_encoders = nn.ModuleDict({tap_key(s): _codec(t_channels[t], options.latent) for s, t in pairs})
        self.teacher_decoders = nn.ModuleDict({tap_key(s): _codec(options.latent, t_channels[t]) for s, t in pairs})
        self.student_decoders = nn.ModuleDict({tap_key(s): _codec(options.latent, s_channels[s]) for s, _ in pairs})
        self._networks = (student, teacher)  # a tuple: not registered, so never saved or exported with the method
        # The trainer seeds the global generator from the run seed before building the method (as for the codecs'
        # weights), so paired seeds vary the mask and switch streams too, not only the student's weights and data.
        seed = options.seed if options.seed is not None else int(torch.randint(2**31 - 1, ()).item())
        self._random = random.Random(seed)
        self._generator = torch.Generator().manual_seed(seed)

    def get_extra_state(self) -> dict:
        """The mask and switch streams, so that a resumed run draws what the uninterrupted one would have."""
        version, internal, gauss = self._random.getstate()
        return {"random": [version, list(internal), gauss], "generator": self._generator.get_state()}

    def set_extra_state(self, state: dict) -> None:
        version, internal, gauss = state["random"]
        self._random.setstate((version, tuple(internal), gauss))
        self._generator.set_state(state["generator"])

    def mix(self, inputs: StepInputs, s_tap: str, t_tap: str):
        """(L_feat of this pair, z_mix, the cropped raw maps) for one tap pair."""
        key = tap_key(s_tap)
        student_feat, teacher_feat = common_area(inputs.student_feats[s_tap], inputs.teacher_feats[t_tap],
                                                 tuple(inputs.lr.shape[-2:]))
        s, t = standardize_pair(student_feat, teacher_feat, inputs.average)
        z_s, z_t = self.student_encoders[key](s), self.teacher_encoders[key](t)
        mask = (torch.rand(z_s.shape, generator=self._generator) < self.options.mask_ratio).to(z_s)
        z_mix = mask * z_t + (1 - mask) * z_s
        decoder = self.teacher_decoders[key]
        loss = (F.l1_loss(decoder(z_mix), t) + F.l1_loss(decoder(z_t), t)
                + F.l1_loss(self.student_decoders[key](z_s), s.detach()))
        return loss, z_mix, student_feat, teacher_feat

    def block_loss(self, inputs: StepInputs, k: int, z_mix: Tensor, student_feat: Tensor, teacher_feat: Tensor):
        student, teacher = self._networks
        s_tap, t_tap = self.student_taps[k], self.teacher_taps[k]
        key = tap_key(s_tap)
        if self._random.random() < 0.5:  # R = 0: the teacher's remaining blocks
            mean, scale = map_stats(teacher_feat.detach(), inputs.average)
            value = with_area(inputs.teacher_feats[t_tap], self.teacher_decoders[key](z_mix) * scale + mean)
            dtype = next(teacher.parameters()).dtype  # a half-precision teacher (accel) runs in its own dtype
            with injected(teacher, t_tap, value.to(dtype)):
                output = teacher(inputs.lr.to(dtype)).float()
        else:  # R = 1: the student's remaining blocks
            mean, scale = map_stats(student_feat.detach(), inputs.average)
            value = with_area(inputs.student_feats[s_tap], self.student_decoders[key](z_mix) * scale + mean)
            with injected(student, s_tap, value):
                output = student(inputs.lr)
        return F.l1_loss(output, inputs.teacher_out)

    def losses(self, inputs: StepInputs) -> dict[str, Tensor]:
        mixed = [self.mix(inputs, s, t) for s, t in zip(self.student_taps, self.teacher_taps)]
        terms = {
            "rec": reconstruction(inputs),
            "kd": output_kd_l1(inputs),
            "feat": torch.stack([loss for loss, *_ in mixed]).mean(),
        }
        if self.options.block_level:
            k = self._random.randrange(len(mixed))
            terms["block"] = self.block_loss(inputs, k, *mixed[k][1:])
        return terms
