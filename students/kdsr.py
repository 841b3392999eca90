"""KDSR: knowledge-distillation-based degradation estimation for blind SR (Xia et al., ICLR 2023; arXiv 2211.16928).

Re-implemented from the official code `Zj-BinXia/KDSR` @ c7c9e81 (`KDSR-classic/model_ST/blindsr.py`, the student;
`model_TA/blindsr.py`, the teacher; both build on `KDSR-classic/model/common.py`). Module names, and therefore
`state_dict()` keys, are the official ones (`G.*`, `E_st.*` / `E.*`), so official checkpoints load strictly.

Two networks share one SR trunk `G` and differ only in what their degradation encoder sees:

* `kdsr` (student, KDSR_S): `model(lr)`; encoder `E_st` on the LR image (3 channels).
* `kdsr_teacher` (KDSR_T): `model(lr, hr)`; encoder `E` on `cat([lr, pixel_unshuffle(hr, s)], dim=1)`
  (3 + 3 s^2 channels, LR first, torch `PixelUnshuffle` channel order c * s^2 + i * s + j). Calling it without the
  HR is a `KdError`. It declares `needs_hr = True`: kdbench's trainer (teacher zoo and distillation) and evaluator
  feed it the HR of each pair (`kd.models.sr_inputs`; its test scores see the HR, as the official test of the
  teacher does), and the code that measures every network a zero HR (`probe_inputs`). Method `kdsr`
  (`kd/methods/kdsr.py`) distils it into `kdsr` on the blind-SR track (`data.degradation`).

Structure (C = n_feats):
    G: sub_mean -> head.0 -> body.0 = n_blocks IDR_DCRB -> body.1 (conv) -> + head -> tail -> add_mean
       IDR_DCRB: per-sample depthwise 3x3 kernels from the degradation vector (Linear C->C, LReLU 0.1, Linear
       C->9C, no biases; run as one grouped conv with groups = B*C) -> LReLU 0.1 -> conv 3x3 -> + input
    encoder (KD_IDE): conv -> LReLU -> n_resblocks ResBlocks (conv, LReLU, conv, + input) -> convs C->2C->2C->4C
       with LReLUs -> global average -> mlp (4C->4C->4C, LReLU each) = the KD feature -> compress (4C->C, LReLU)
       = the degradation vector fed to every IDR_DCRB of G.

Range: RGB [0, 1] in and out, unclamped; the official default `rgb_range` is 1 (forward scales by `rgb_range` on
the way in and out, as RCAN does, so another range works too). `sub_mean` / `add_mean` are 1x1 convs holding the
DIV2K mean, stored in the checkpoints and **frozen** (`requires_grad=False`, as the official `MeanShift` sets them);
a checkpoint whose MeanShift was made for another `rgb_range` is refused when loaded, since its keys and shapes
would load silently.

Distillation. The KDSR loss is KL(log_softmax(S/T) || softmax(T_teacher/T)), batchmean, T = 0.15, on the encoders'
4C MLP features (`kdsr_kd_loss`); the features are the taps `E_st.mlp` (student) and `E.mlp` (teacher), which are
(B, 4C) vectors, not (B, C, h, w) maps: feature methods (fitnet, fakd, ...) must not pair them, and depth pairing
never does (the body is `G.body.0.body.*`, the body tail `G.body.1`). Official stage 4 starts the student from the
teacher checkpoint by a non-strict load, which transfers exactly the SR trunk `G.*` (the student encoder starts
from scratch): `transfer_sr_trunk`.

Quirks (official, kept): every LeakyReLU has slope 0.1; the encoder's ResBlocks share one activation object
(stateless, so irrelevant here); IDR_DDC's `reduction` argument is unused. Deliberately different (same outputs
within float rounding): activations and residual additions are out of place (the official code works in place), so
a hooked tap never changes after it is captured; a single image runs in channels-last memory format, where CPU
depthwise convs are much faster (`one_image_layout`). `forward_chop` of the official wrapper is test-time tiling,
not part of the network. Classes are named for what they do; their docstrings give the official names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from os import PathLike
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kd.errors import KdError
from kd.models.fields import check_positive_ints
from kd.models.loading import format_diff, read_checkpoint, state_dict_diff, unwrap_state_dict
from kd.models.registry import ModelEntry, register_model
from teachers.rcan import DIV2K_RGB_MEAN, MeanShift, Upsampler, check_rgb_batch, conv3x3

KD_TEMPERATURE = 0.15  # official `--temperature` of stage 4
SLOPE = 0.1  # every LeakyReLU of KDSR


def _leaky(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, SLOPE)


def one_image_layout(x: torch.Tensor) -> torch.Tensor:
    """A single image runs channels-last: CPU convolutions, the depthwise ones above all, are faster so (0.78x the
    official CPU time at 320x180, `benchmarks/bench_seed_official.py`). A batch stays channels-first: folding it
    into the depthwise conv's channels would need copies that cost more than the layout saves (1.08x against 0.99x
    the official CPU time at batch 8, 48x48, forward and backward)."""
    return x.contiguous(memory_format=torch.channels_last) if x.shape[0] == 1 else x


class DegradationAwareConv(nn.Module):
    """Official `IDR_DDC`: per-sample depthwise 3x3 kernels `kernel(degradation)` applied channel by channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.kernel = nn.Sequential(nn.Linear(channels, channels, bias=False), nn.LeakyReLU(SLOPE),
                                    nn.Linear(channels, channels * 9, bias=False))

    def forward(self, x: torch.Tensor, degradation: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # One grouped conv over the batch folded into channels: sample b, channel c gets its own kernel.
        kernels = self.kernel(degradation).reshape(b * c, 1, 3, 3)
        if b == 1:  # nothing to fold: a channels-last image (`one_image_layout`) stays channels-last
            return F.conv2d(x, kernels, padding=1, groups=c)
        return F.conv2d(x.reshape(1, b * c, h, w), kernels, padding=1, groups=b * c).reshape(b, c, h, w)


class DegradationAwareBlock(nn.Module):
    """Official `IDR_DCRB`: DegradationAwareConv -> LReLU -> conv 3x3 -> + input."""

    def __init__(self, channels: int):
        super().__init__()
        self.da_conv1 = DegradationAwareConv(channels)
        self.conv1 = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor, degradation: torch.Tensor) -> torch.Tensor:
        return self.conv1(_leaky(self.da_conv1(x, degradation))) + x


class DegradationAwareGroup(nn.Module):
    """Official `DAG`: `n_blocks` blocks in `body`, each conditioned on the same degradation vector."""

    def __init__(self, channels: int, n_blocks: int):
        super().__init__()
        self.body = nn.Sequential(*(DegradationAwareBlock(channels) for _ in range(n_blocks)))

    def forward(self, x: torch.Tensor, degradation: torch.Tensor) -> torch.Tensor:
        for block in self.body:
            x = block(x, degradation)
        return x


class KDSRGenerator(nn.Module):
    """The SR trunk `G` (official class `KDSR`): works on [0, rgb_range] RGB, conditioned on a degradation vector."""

    def __init__(self, scale: int, n_feats: int, n_blocks: int, rgb_range: float):
        super().__init__()
        self.sub_mean = MeanShift(rgb_range, -1, DIV2K_RGB_MEAN).requires_grad_(False)
        self.add_mean = MeanShift(rgb_range, +1, DIV2K_RGB_MEAN).requires_grad_(False)
        self.head = nn.Sequential(conv3x3(3, n_feats))
        self.body = nn.Sequential(DegradationAwareGroup(n_feats, n_blocks), conv3x3(n_feats, n_feats))
        self.tail = nn.Sequential(Upsampler(scale, n_feats), conv3x3(n_feats, 3))

    def forward(self, x: torch.Tensor, degradation: torch.Tensor) -> torch.Tensor:
        shallow = self.head(self.sub_mean(x))
        deep = self.body[1](self.body[0](shallow, degradation)) + shallow
        return self.add_mean(self.tail(deep))


class ResBlock(nn.Module):
    """Encoder ResBlock: conv -> LReLU 0.1 -> conv, + input (official `common.ResBlock`, keys `body.{0,2}`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv3x3(channels, channels), nn.LeakyReLU(SLOPE), conv3x3(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class Pool(nn.Module):
    """Global average pool to a (B, C) vector (the official AdaptiveAvgPool2d(1) then two squeezes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class DegradationEncoder(nn.Module):
    """Official `KD_IDE`: returns the degradation vector (B, C); `mlp`'s output is the KD feature (B, 4C)."""

    def __init__(self, in_channels: int, n_feats: int, n_resblocks: int):
        super().__init__()
        c = n_feats
        self.E = nn.Sequential(
            conv3x3(in_channels, c), nn.LeakyReLU(SLOPE),
            *(ResBlock(c) for _ in range(n_resblocks)),
            conv3x3(c, 2 * c), nn.LeakyReLU(SLOPE),
            conv3x3(2 * c, 2 * c), nn.LeakyReLU(SLOPE),
            conv3x3(2 * c, 4 * c), nn.LeakyReLU(SLOPE),
            Pool(),
        )
        self.mlp = nn.Sequential(nn.Linear(4 * c, 4 * c), nn.LeakyReLU(SLOPE), nn.Linear(4 * c, 4 * c),
                                 nn.LeakyReLU(SLOPE))
        self.compress = nn.Sequential(nn.Linear(4 * c, c), nn.LeakyReLU(SLOPE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.compress(self.mlp(self.E(x)))


def check_fields(network: str, n_feats: int, n_blocks: int, n_resblocks: int, rgb_range: float) -> None:
    check_positive_ints(network, n_feats=n_feats, n_blocks=n_blocks, n_resblocks=n_resblocks)
    if isinstance(rgb_range, bool) or not isinstance(rgb_range, (int, float)) or not rgb_range > 0:
        raise KdError(f"{network}: field 'rgb_range' must be a positive number (official default 1); got {rgb_range!r}")


class _BlindSR(nn.Module):
    """What the student and the teacher share: fields, G, taps, checkpoint checks."""

    arch = ""
    encoder_name = ""  # "E_st" (student) or "E" (teacher)
    body_prefix = "G.body.0.body."  # the IDR_DCRB blocks are the body's numbered stages ...
    body_tail = "G.body.1"  # ... and the conv before the long skip is its tail

    def __init__(self, scale: int, n_feats: int, n_blocks: int, n_resblocks: int, rgb_range: float,
                 encoder_in: int):
        super().__init__()
        check_fields(self.arch, n_feats, n_blocks, n_resblocks, rgb_range)
        self.scale, self.n_feats, self.n_blocks, self.n_resblocks = scale, n_feats, n_blocks, n_resblocks
        self.rgb_range = float(rgb_range)
        self.G = KDSRGenerator(scale, n_feats, n_blocks, rgb_range)
        self.add_module(self.encoder_name, DegradationEncoder(encoder_in, n_feats, n_resblocks))

    def _sr(self, x: torch.Tensor, encoder_input: torch.Tensor) -> torch.Tensor:
        degradation = getattr(self, self.encoder_name)(encoder_input)
        return self.G(x, degradation) / self.rgb_range

    def adapt_official_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
        """Refuse MeanShift constants made for another `rgb_range`: keys and shapes would not tell."""
        bias = state_dict.get("G.sub_mean.bias")
        if isinstance(bias, torch.Tensor) and bias.shape == (3,):
            theirs = float(-bias[0]) / DIV2K_RGB_MEAN[0]
            if not math.isclose(theirs, self.rgb_range, rel_tol=1e-3):
                raise KdError(f"the checkpoint's G.sub_mean was made for rgb_range {theirs:g}, the model has "
                              f"rgb_range {self.rgb_range:g}: build it with rgb_range={round(theirs)}")
        return state_dict


class KDSR(_BlindSR):
    """KDSR student (official `model_ST.BlindSR`): `model(lr)`, encoder `E_st` on the LR."""

    arch, encoder_name = "kdsr", "E_st"
    TAPS = {
        "G.head.0": "shallow features (B, n_feats, h, w)",
        "G.body.0.body.[0-9]": "G.body.0.body.{b}: IDR_DCRB outputs, the body's stages (B, n_feats, h, w)",
        "G.body.0.body.[0-9][0-9]": "the same for two-digit indices (paper preset: 53 blocks)",
        "G.body.1": "body-tail conv, before the long skip (B, n_feats, h, w)",
        "E_st.mlp": "KD feature of the encoder: a (B, 4*n_feats) vector, not a (B, C, h, w) map (KDSR's KL term "
                    "uses it; feature methods must not pair it)",
        "E_st.compress": "degradation vector fed to G: a (B, n_feats) vector",
    }

    def __init__(self, scale: int, n_feats: int, n_blocks: int, n_resblocks: int, rgb_range: float):
        super().__init__(scale, n_feats, n_blocks, n_resblocks, rgb_range, encoder_in=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_rgb_batch(x, "KDSR")
        x = one_image_layout(x * self.rgb_range)
        return self._sr(x, x)


class KDSRTeacher(_BlindSR):
    """KDSR teacher (official `model_TA.BlindSR`): `model(lr, hr)`, encoder `E` on cat(LR, pixel_unshuffle(HR)).
    kdbench's trainer and evaluator feed it the HR (`needs_hr`); a method's own extra teacher passes do not."""

    arch, encoder_name = "kdsr_teacher", "E"
    needs_hr = True
    TAPS = {
        **{k: v for k, v in KDSR.TAPS.items() if k.startswith("G.")},
        "E.mlp": "KD feature of the teacher encoder: a (B, 4*n_feats) vector, not a (B, C, h, w) map (the target "
                 "of KDSR's KL term; feature methods must not pair it)",
        "E.compress": "degradation vector fed to G: a (B, n_feats) vector",
    }

    def __init__(self, scale: int, n_feats: int, n_blocks: int, n_resblocks: int, rgb_range: float):
        super().__init__(scale, n_feats, n_blocks, n_resblocks, rgb_range, encoder_in=3 + 3 * scale * scale)

    def forward(self, x: torch.Tensor, hr: torch.Tensor | None = None) -> torch.Tensor:
        check_rgb_batch(x, "KDSR teacher")
        if hr is None:
            raise KdError("kdsr_teacher needs the HR image beside the LR: call model(lr, hr) (its degradation "
                          "encoder sees the HR). kdbench's trainer and evaluator feed it; a distillation method that "
                          "runs the teacher on inputs of its own (dukd, dckd, ...) or `kdbench sr` (no HR) cannot "
                          "use it: distil it with --method kdsr or one that runs it on the training pairs only")
        check_rgb_batch(hr, "KDSR teacher (hr)")
        b, _, h, w = x.shape
        if tuple(hr.shape) != (b, 3, h * self.scale, w * self.scale):
            raise KdError(f"kdsr_teacher x{self.scale}: hr must be (B, 3, {self.scale}h, {self.scale}w) = "
                          f"{(b, 3, h * self.scale, w * self.scale)} for lr {tuple(x.shape)}; got {tuple(hr.shape)}")
        x = one_image_layout(x * self.rgb_range)
        encoder_input = torch.cat([x, F.pixel_unshuffle(hr * self.rgb_range, self.scale)], dim=1)
        return self._sr(x, one_image_layout(encoder_input))


# --- distillation pieces of the KDSR method ---------------------------------------------------------------------


def kdsr_kd_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor,
                 temperature: float = KD_TEMPERATURE) -> torch.Tensor:
    """KDSR's KD term: KL(log_softmax(S/T) || softmax(T_teacher/T)), batchmean, on the (B, 4C) encoder features
    (`E_st.mlp`, `E.mlp` taps). The teacher side is detached, as in official stage 4."""
    if student_feature.dim() != 2 or student_feature.shape != teacher_feature.shape:
        raise KdError(f"kdsr_kd_loss compares two (B, 4C) encoder features; got {tuple(student_feature.shape)} and "
                      f"{tuple(teacher_feature.shape)} (student and teacher need the same n_feats)")
    return F.kl_div(F.log_softmax(student_feature / temperature, dim=1),
                    F.softmax(teacher_feature.detach() / temperature, dim=1), reduction="batchmean")


def transfer_sr_trunk(teacher: str | PathLike | Mapping[str, Any], student: KDSR) -> KDSR:
    """Official stage 4's start: copy the SR trunk `G.*` of a KDSR teacher checkpoint (file or state dict) into
    `student`, in place; the student encoder `E_st` keeps its weights. Unlike the official non-strict load, which
    silently copies nothing when the trunks differ, every `G.*` key must be present with the student's shape."""
    if isinstance(teacher, Mapping):
        state = unwrap_state_dict(teacher, source="the teacher state dict")
        source = "the teacher state dict"
    else:
        state = read_checkpoint(teacher)
        source = f"'{teacher}'"
    trunk = {k: v for k, v in state.items() if k.startswith("G.")}
    if not trunk:
        raise KdError(f"{source} holds no SR trunk (no 'G.*' keys): not a KDSR checkpoint")
    own = {k: v for k, v in student.state_dict().items() if k.startswith("G.")}
    missing, unexpected, wrong = state_dict_diff(own, trunk)
    if missing or unexpected or wrong:
        raise KdError(f"the SR trunk of {source} does not fit the student:\n{format_diff(missing, unexpected, wrong)}")
    student.adapt_official_state_dict(trunk)
    student.load_state_dict(trunk, strict=False)
    return student


# --- official checkpoint knowledge ------------------------------------------------------------------------------

_BLOCK_KEY = re.compile(r"^G\.body\.0\.body\.(\d+)\.conv1\.weight$")
_UPSAMPLE_KEY = re.compile(r"^G\.tail\.0\.(\d+)\.weight$")


def describe_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """What a KDSR state dict is: student or teacher, scale (read off the upsampler), fields and `evidence`."""
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    encoder = "E_st" if "E_st.E.0.weight" in sd else "E"
    missing = [k for k in ("G.head.0.weight", "G.tail.1.weight", f"{encoder}.E.0.weight") if k not in sd]
    if missing:
        raise KdError(f"not a KDSR state dict: missing {', '.join(missing)}")
    n_feats = int(sd["G.head.0.weight"].shape[0])
    stages = sorted(int(m.group(1)) for k in sd if (m := _UPSAMPLE_KEY.match(k)))
    out_channels = [int(sd[f"G.tail.0.{i}.weight"].shape[0]) for i in stages]
    factors = [math.isqrt(c // n_feats) for c in out_channels]
    resblock = re.compile(rf"^{re.escape(encoder)}\.E\.(\d+)\.body\.0\.weight$")
    return {
        "arch": "kdsr" if encoder == "E_st" else "kdsr_teacher",
        "scale": math.prod(factors),
        "n_feats": n_feats,
        "n_blocks": sum(1 for k in sd if _BLOCK_KEY.match(k)),
        "n_resblocks": sum(1 for k in sd if resblock.match(k)),
        "evidence": f"upsampler G.tail.0 has {len(stages)} stage(s) of {out_channels[0]} output channels "
                    f"({n_feats} features)",
    }


def build_kdsr(scale: int, n_feats: int = 64, n_blocks: int = 53, n_resblocks: int = 9,
               rgb_range: float = 1) -> KDSR:
    return KDSR(scale=scale, n_feats=n_feats, n_blocks=n_blocks, n_resblocks=n_resblocks, rgb_range=rgb_range)


def build_kdsr_teacher(scale: int, n_feats: int = 64, n_blocks: int = 53, n_resblocks: int = 9,
                       rgb_range: float = 1) -> KDSRTeacher:
    return KDSRTeacher(scale=scale, n_feats=n_feats, n_blocks=n_blocks, n_resblocks=n_resblocks, rgb_range=rgb_range)


_BlindSR.describe_state_dict = staticmethod(describe_state_dict)

# KDSR_S-M (`paper`) and KDSR_S-L (`l`) are the stage-4 scripts' configurations; the teacher of each has the same
# fields (the stage-3 scripts).
PRESETS = {
    "paper": {"n_feats": 64, "n_blocks": 53, "n_resblocks": 9},
    "l": {"n_feats": 128, "n_blocks": 28, "n_resblocks": 5},
    "mini": {"n_feats": 32, "n_blocks": 10, "n_resblocks": 2},
    "tiny": {"n_feats": 8, "n_blocks": 2, "n_resblocks": 1},
}

register_model(ModelEntry(
    arch="kdsr",
    builder=build_kdsr,
    role="student",
    presets=PRESETS,
    description="KDSR student (Xia et al., ICLR 2023; blind SR): SR trunk conditioned on a degradation vector "
                "its encoder E_st estimates from the LR; official keys; paper = KDSR_S-M, l = KDSR_S-L",
))

register_model(ModelEntry(
    arch="kdsr_teacher",
    builder=build_kdsr_teacher,
    role="teacher",
    presets=PRESETS,
    description="KDSR teacher: needs the HR, called as model(lr, hr) (its encoder E sees LR + HR; kdbench feeds "
                "it the HR in training and evaluation); official keys",
))
