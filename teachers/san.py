"""SAN: second-order attention network (Dai et al., "Second-order Attention Network for Single Image
Super-Resolution", CVPR 2019; official code `daitao/SAN` @ 7c1e61f0d17b58e3400a14e631d9185dde1881b6,
`TrainCode/model/san.py` + `MPNCOV.py`; no license file, so nothing is copied: written from the paper and the
facts of SEED_NETWORKS.md section 1, module names = official key names, so `SAN_BIX{2,3,4,8}.pt` load strictly).

    sub_mean -> head.0 -> region non-local -> RG.0 .. RG.{G-1} (share-source: xx = RG.g(xx) + gamma * first)
             -> region non-local (the same module again) -> + head -> tail (upsampler, conv) -> add_mean

An LSRAG (`RG.g`) is `n_resblocks` plain residual blocks (conv-ReLU-conv + skip; the official list is called
`rcab` but holds no attention), then SOCA, then a conv, plus the group skip. SOCA (second-order channel
attention) pools each channel pair's covariance over the map, takes the matrix square root by 5 Newton-Schulz
iterations (input divided by its trace, result multiplied by the trace's square root), averages over rows, and
gates the channels through a 1x1-ReLU-1x1-sigmoid bottleneck (`conv_du`).

How kdbench handles the official code's quirks (all checked against the parity fixture):

* Covariance pooling: the official `Covpool` forms x I^ x^T with the (hw x hw) centring matrix I^ = I/M - 1/M^2,
  which needs (hw)^2 memory (13 GB for one 320x180 map), hence the official `--chop` test path. Here the same
  covariance is computed as (x - mean)(x - mean)^T / M in O(hw C^2); it reproduces the official output within
  float32 rounding (fixture: <= 1e-4; tests/test_san.py also checks a 40x36 map against the official formula).
  The covariance and square root always run in float32, as the official square root's work buffers do.
* SOCA centre-crops its covariance input to 1000 px when a side exceeds 1000, with the official branches taken
  literally (strict `<` / `>`): a side of exactly 1000 falls into the two-sided crop, whose start index on a
  shorter other side is negative, so Python slicing keeps only a tail of it (500x1000 -> rows 250..499 of all
  1000 columns; 1000x999 -> column 998 alone).
* The non-local block (`non_local.non_local`) is embedded-Gaussian with a 2x2 max-pool on `g` and `phi`: the
  official 2-D block rebinds its `sub_sample` argument to `nn.Upsample` (truthy), so it always sub-samples. It runs
  on the four quadrants split at h // 2, w // 2 (odd sizes: bottom/right quadrants one larger); a quadrant must
  be at least 2x2, so the LR input must be at least 4x4. Equal quadrants go through it as one batch.
* Built but unused in the official forward, created here for strict loading and frozen (requires_grad False, so
  data-parallel training does not wait for their gradients): every `RG.g.gamma`, the top-level `conv_last` and
  `non_local.soca` (20 + 36,928 + 1,096 parameters in the paper configuration).
* `sub_mean` / `add_mean` are loaded 1x1 convs (DIV2K mean x 255) and stay trainable, as in the official code.

Range: the official network works on [0, 255]; `forward` multiplies by `rgb_range` and divides the output, so
the interface is [0, 1] RGB in and out, unclamped. `res_scale` and `n_colors` are the official fields; the first
is read but unused there, the second must be 3.

Taps: `share_source.{g}` (a `TapPoint` after each share-source sum: what the next group receives) and `body_end`
(the second non-local output, before the long skip) are the body stages and body tail for depth pairing; with
`head.0` they are FAKD's four feature maps (`teachers/san_fakd.py`). SOCA's pre-sigmoid logits
`RG.*.soca.conv_du.2` serve the channel mode of `attention`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from kd.errors import KdError
from kd.models.fields import check_rgb
from kd.models.registry import ModelEntry, register_model
from kd.models.taps import TapPoint
from teachers.rcan import MeanShift, Upsampler, check_rgb_batch, check_trunk_fields, conv3x3

SOCA_CROP = 1000  # SOCA's covariance sees at most the central 1000 x 1000 (official h1 = w1 = 1000)
SQRT_ITERATIONS = 5
NON_LOCAL_SOCA_REDUCTION = 8  # the unused SOCA inside the official Nonlocal_CA
MIN_SIDE = 4  # the non-local block max-pools each quadrant by 2


def soca_region(x: torch.Tensor) -> torch.Tensor:
    """The part of the map SOCA pools, with the official branch conditions taken literally (see module doc)."""
    h, w = x.shape[-2:]
    if h < SOCA_CROP and w < SOCA_CROP:
        return x
    if h < SOCA_CROP and w > SOCA_CROP:
        left = (w - SOCA_CROP) // 2
        return x[..., left:left + SOCA_CROP]
    if w < SOCA_CROP and h > SOCA_CROP:
        top = (h - SOCA_CROP) // 2
        return x[..., top:top + SOCA_CROP, :]
    top, left = (h - SOCA_CROP) // 2, (w - SOCA_CROP) // 2  # may be negative: Python slicing as the official
    return x[..., top:top + SOCA_CROP, left:left + SOCA_CROP]


def covariance(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, C) covariance over positions (divided by hw), equal to the official x I^ x^T."""
    flat = x.flatten(2)
    centred = flat - flat.mean(dim=2, keepdim=True)
    return centred @ centred.transpose(1, 2) / flat.shape[2]


def sqrtm_newton_schulz(matrix: torch.Tensor, iterations: int = SQRT_ITERATIONS) -> torch.Tensor:
    """Square root of a batch of SPD matrices: coupled Newton-Schulz on matrix / trace, times sqrt(trace).

    The official iteration order: Y0 = A Z0 with Z0 = (3I - A) / 2, then `iterations - 2` coupled updates, then a
    last half step on Y alone."""
    n = matrix.shape[-1]
    three = 3.0 * torch.eye(n, dtype=matrix.dtype, device=matrix.device)
    trace = matrix.diagonal(dim1=-2, dim2=-1).sum(-1).view(-1, 1, 1)
    a = matrix / trace
    z = 0.5 * (three - a)
    y = a @ z
    for _ in range(iterations - 2):
        step = 0.5 * (three - z @ y)
        y, z = y @ step, step @ z
    return 0.5 * y @ (three - z @ y) * trace.sqrt()


class SOCA(nn.Module):
    """Second-order channel attention: covariance pooling -> matrix square root -> row mean -> `conv_du` gate.

    `conv_du.2`'s output is the pre-sigmoid logit vector (B, C, 1, 1), `conv_du.3`'s the attention weights."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        root = sqrtm_newton_schulz(covariance(soca_region(x).float()))
        pooled = root.mean(dim=1).to(x.dtype).view(x.shape[0], x.shape[1], 1, 1)
        return x * self.conv_du(pooled)


def tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, c, h, w) -> (B, 1, hw, c) with unit stride on c, which the CPU's fused attention kernel needs (else it
    falls back to an explicit softmax, 10x slower); `contiguous()` would keep a stride of hw when c is 1."""
    return x.flatten(2).transpose(1, 2).unsqueeze(1).clone(memory_format=torch.contiguous_format)


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block (official `NONLocalBlock2D`, bn_layer=False) with 2x2 max-pooled keys and
    values; `W` is a plain 1x1 conv, zero at initialisation, so a fresh block is the identity."""

    def __init__(self, channels: int, inter_channels: int):
        super().__init__()
        self.inter_channels = inter_channels
        self.g = nn.Sequential(nn.Conv2d(channels, inter_channels, 1), nn.MaxPool2d(2))
        self.W = nn.Conv2d(inter_channels, channels, 1)
        self.theta = nn.Conv2d(channels, inter_channels, 1)
        self.phi = nn.Sequential(nn.Conv2d(channels, inter_channels, 1), nn.MaxPool2d(2))
        nn.init.zeros_(self.W.weight)
        nn.init.zeros_(self.W.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        query, key, value = (tokens(conv(x)) for conv in (self.theta, self.phi, self.g))  # key, value: hw / 4
        # softmax(theta phi^T) g without the 1/sqrt(c) scaling, as the official matmul-softmax-matmul
        attended = F.scaled_dot_product_attention(query, key, value, scale=1.0)
        y = attended.squeeze(1).transpose(1, 2).reshape(b, self.inter_channels, h, w)
        return self.W(y) + x


class RegionNonLocal(nn.Module):
    """The official `Nonlocal_CA`: the non-local block applied to each of the four quadrants of the map.

    Its `soca` is built by the official code and never used (kept for strict loading, frozen)."""

    def __init__(self, channels: int, inter_channels: int):
        super().__init__()
        self.soca = SOCA(channels, NON_LOCAL_SOCA_REDUCTION)
        self.non_local = NonLocalBlock(channels, inter_channels)
        self.soca.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h2, w2 = x.shape[-2] // 2, x.shape[-1] // 2
        quadrants = [x[..., :h2, :w2], x[..., :h2, w2:], x[..., h2:, :w2], x[..., h2:, w2:]]
        if all(q.shape == quadrants[0].shape for q in quadrants):  # even sizes: one batched call
            quadrants = self.non_local(torch.cat(quadrants)).chunk(4)
        else:
            quadrants = [self.non_local(q) for q in quadrants]
        top = torch.cat(quadrants[:2], dim=-1)
        bottom = torch.cat(quadrants[2:], dim=-1)
        return torch.cat([top, bottom], dim=-2)


class ResidualBlock(nn.Module):
    """conv -> ReLU -> conv plus the skip (official `RB`; its `gamma1` and `res_scale` are unused constants)."""

    def __init__(self, n_feats: int):
        super().__init__()
        self.conv_first = nn.Sequential(conv3x3(n_feats, n_feats), nn.ReLU(), conv3x3(n_feats, n_feats))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_first(x) + x


class LSRAG(nn.Module):
    """Local-source residual attention group: residual blocks -> SOCA -> conv, plus the group skip.

    `gamma` exists in the official state dict but is never used (frozen here)."""

    def __init__(self, n_feats: int, reduction: int, n_resblocks: int):
        super().__init__()
        self.rcab = nn.ModuleList(ResidualBlock(n_feats) for _ in range(n_resblocks))
        self.soca = SOCA(n_feats, reduction)
        self.conv_last = conv3x3(n_feats, n_feats)
        self.gamma = nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for block in self.rcab:
            y = block(y)
        return self.conv_last(self.soca(y)) + x


# --- official checkpoint knowledge ------------------------------------------------------------------------------

_GROUP_KEY = re.compile(r"^RG\.(\d+)\.conv_last\.weight$")
_BLOCK_KEY = re.compile(r"^RG\.0\.rcab\.(\d+)\.conv_first\.0\.weight$")
_UPSAMPLE_KEY = re.compile(r"^tail\.0\.(\d+)\.weight$")


def non_local_variant(n_feats: int, inter_channels: int) -> str:
    """Which SAN a non-local width belongs to: the official (n_feats // 8) or FAKD's copy (n_feats // 4)."""
    if inter_channels == n_feats // 4 != n_feats // 8:
        return "n_feats//4 (FAKD's SAN copy, arch san_fakd)"
    return "n_feats//8 (official SAN, arch san)" if inter_channels == n_feats // 8 else f"{inter_channels} channels"


def describe_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """What a SAN state dict is: scale (read off the upsampler), trunk fields, non-local width and `evidence`."""
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    required = ("head.0.weight", "tail.0.0.weight", "RG.0.soca.conv_du.0.weight", "non_local.non_local.g.0.weight")
    missing = [k for k in required if k not in sd]
    if missing:
        raise KdError(f"not a SAN state dict: missing {', '.join(missing)}")
    n_feats = int(sd["head.0.weight"].shape[0])
    stages = sorted(int(m.group(1)) for k in sd if (m := _UPSAMPLE_KEY.match(k)))
    out_channels = [int(sd[f"tail.0.{i}.weight"].shape[0]) for i in stages]
    factors = [math.isqrt(c // n_feats) for c in out_channels]
    inter = int(sd["non_local.non_local.g.0.weight"].shape[0])
    return {
        "arch": "san_fakd" if inter == n_feats // 4 != n_feats // 8 else "san",
        "scale": math.prod(factors),
        "n_resgroups": sum(1 for k in sd if _GROUP_KEY.match(k)),
        "n_resblocks": sum(1 for k in sd if _BLOCK_KEY.match(k)),
        "n_feats": n_feats,
        "reduction": n_feats // int(sd["RG.0.soca.conv_du.0.weight"].shape[0]),
        "non_local": non_local_variant(n_feats, inter),
        "evidence": f"upsampler {', '.join(f'tail.0.{i}' for i in stages)} {'has' if len(stages) == 1 else 'have'} "
                    f"{out_channels[0]} output channels ({n_feats} features -> "
                    f"{' + '.join(f'PixelShuffle({f})' for f in factors)}); the non-local block has {inter} inter "
                    "channels",
    }


class SAN(nn.Module):
    """SAN with the official module names; [0, 1] RGB in and out (unclamped)."""

    NON_LOCAL_DIVISOR = 8  # non-local inter channels = n_feats // 8 (FAKD's copy: 4)
    FROZEN_MEAN_SHIFT = False  # the official MeanShift stays trainable (FAKD's copy freezes it)
    body_prefix = "share_source."
    body_tail = "body_end"
    TAPS = {
        "head.0": "shallow features, the long skip's source (B, n_feats, h, w)",
        "share_source.*": "share-source group outputs RG.g(x) + gamma * first non-local output, what group g+1 "
                          "receives (B, n_feats, h, w)",
        "body_end": "second region non-local output, before the long skip (B, n_feats, h, w)",
        "RG.*.soca.conv_du.2": "pre-sigmoid second-order channel-attention logits of every group (B, n_feats, 1, 1)",
        "RG.*.soca.conv_du.3": "second-order channel-attention weights after the sigmoid (B, n_feats, 1, 1)",
    }

    def __init__(self, scale: int, n_resgroups: int, n_resblocks: int, n_feats: int, reduction: int,
                 rgb_range: float, n_colors: int, res_scale: float):
        super().__init__()
        name = type(self).__name__
        check_trunk_fields(name, n_resgroups, n_resblocks, n_feats, reduction)
        check_rgb(name, n_colors)
        if n_feats < max(self.NON_LOCAL_DIVISOR, NON_LOCAL_SOCA_REDUCTION):
            raise KdError(f"{name}: field 'n_feats' must be at least {self.NON_LOCAL_DIVISOR} (the non-local block "
                          f"has n_feats // {self.NON_LOCAL_DIVISOR} channels); got {n_feats}")
        self.scale, self.rgb_range, self.res_scale = scale, float(rgb_range), res_scale
        self.n_resgroups, self.n_resblocks, self.n_feats, self.reduction = n_resgroups, n_resblocks, n_feats, reduction
        self.gamma = nn.Parameter(torch.zeros(1))
        self.sub_mean = MeanShift(rgb_range, -1)
        self.head = nn.Sequential(conv3x3(3, n_feats))
        self.non_local = RegionNonLocal(n_feats, n_feats // self.NON_LOCAL_DIVISOR)
        self.RG = nn.ModuleList(LSRAG(n_feats, reduction, n_resblocks) for _ in range(n_resgroups))
        self.share_source = nn.ModuleList(TapPoint() for _ in range(n_resgroups))
        self.body_end = TapPoint()
        self.conv_last = conv3x3(n_feats, n_feats).requires_grad_(False)  # built, never used (official)
        self.tail = nn.Sequential(Upsampler(scale, n_feats), conv3x3(n_feats, 3))
        self.add_mean = MeanShift(rgb_range, +1)
        if self.FROZEN_MEAN_SHIFT:
            self.sub_mean.requires_grad_(False)
            self.add_mean.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        name = type(self).__name__
        check_rgb_batch(x, name)
        if min(x.shape[-2:]) < MIN_SIDE:
            raise KdError(f"{name} needs an LR input of at least {MIN_SIDE}x{MIN_SIDE} (its non-local block "
                          f"max-pools each quadrant by 2); got {x.shape[-2]}x{x.shape[-1]}")
        shallow = self.head(self.sub_mean(x * self.rgb_range))
        first = self.non_local(shallow)
        feat = first
        for group, tap in zip(self.RG, self.share_source):
            feat = tap(group(feat) + self.gamma * first)
        deep = self.body_end(self.non_local(feat))
        return self.add_mean(self.tail(deep + shallow)) / self.rgb_range

    describe_state_dict = staticmethod(describe_state_dict)


def build_san(scale: int, n_resgroups: int = 20, n_resblocks: int = 10, n_feats: int = 64, reduction: int = 16,
              rgb_range: float = 255.0, n_colors: int = 3, res_scale: float = 1.0) -> SAN:
    return SAN(scale=scale, n_resgroups=n_resgroups, n_resblocks=n_resblocks, n_feats=n_feats, reduction=reduction,
               rgb_range=rgb_range, n_colors=n_colors, res_scale=res_scale)


# Shared with FAKD's copy (teachers/san_fakd.py): the same trunks at the same sizes.
PRESETS = {
    "paper": {"n_resgroups": 20, "n_resblocks": 10, "n_feats": 64, "reduction": 16},
    # FAKD's SAN student (FAKD Table 3: 6 groups x 10 blocks).
    "6x10": {"n_resgroups": 6, "n_resblocks": 10, "n_feats": 64, "reduction": 16},
    # RCAN mini's groups, blocks and width, for CPU runs on 32-48 px LR patches.
    "mini": {"n_resgroups": 3, "n_resblocks": 4, "n_feats": 48, "reduction": 16},
    # The miniature of FAKD's SAN pair (kd/report/miniature.py, the `miniature` profile): the published pair keeps
    # blocks per group and width and takes 6 of 20 groups; here 10 x 6 -> 3 x 6 at 24 channels, parameters 727,769 ->
    # 252,637 with san_fakd (0.347; published 4,995,546 / 15,860,512 = 0.315).
    "miniature_teacher": {"n_resgroups": 10, "n_resblocks": 6, "n_feats": 24, "reduction": 8},
    "miniature_student": {"n_resgroups": 3, "n_resblocks": 6, "n_feats": 24, "reduction": 8},
    "tiny": {"n_resgroups": 2, "n_resblocks": 1, "n_feats": 8, "reduction": 4},
}

register_model(ModelEntry(
    arch="san",
    builder=build_san,
    role="teacher",
    family="cnn",
    presets=PRESETS,
    scales=(2, 3, 4, 8),
    description="SAN (Dai et al., CVPR 2019): share-source groups with second-order channel attention and region "
                "non-local blocks; official keys",
))
