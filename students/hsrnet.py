"""HSRNet: hierarchical similarity learning for aliasing suppression SR (Liu et al., IEEE TNNLS 35(2), 2024;
arXiv 2206.03361).

Re-implemented from the official code `yuqing-liu-dut/HSRNet` @ 04da000b105f14235e0abd7deb4a9908a554d334
(`hsrnet.py`, "train and test with MSRN architecture"; SEED_NETWORKS.md section 7). Module names, and therefore
`state_dict()` keys, are the official ones. No official weights or training configuration are released.

    sub_mean -> head.0 -> y = Trans(y) + y; u = y
    -> n_iters times (half-quadratic splitting): u = SolverLS(cat[u, y]) + u; u = body(u) + u
    -> tail (3x3 conv, conv to 3 s^2 + PixelShuffle(s)) -> add_mean

`body` is n_stage BasicBlocks and a 3x3 conv, *shared by all iterations*. A BasicBlock is a HierarchicalConv (3x3,
split into four C/4-channel groups refined in a cascade of 1, 2 and 3 convs with 1x1 fusions, 3x3, + input) and a
UNetAttention (1x1 to 3C/4, three C/4-channel branches at full, half (2x2 max-pool, floor) and full resolution,
bilinear back, 1x1 to C, sigmoid gate on the input). C = 64 officially; LeakyReLU slope 0.01.

Range: [0, 255] RGB with MeanShift convs (DIV2K mean, std 1); kdbench's interface is [0, 1], so `forward`
multiplies by 255 on the way in and divides on the way out (unclamped).

Quirks and how kdbench handles them:
  * the official code assigns `self.Denoiser = self.body`, so every checkpoint holds the body twice (`body.*` and
    `Denoiser.*`, the same tensors): here too, one module under both names, so official checkpoints load strictly;
    parameters (and `kdbench list models`) count the shared tensors once (x4 paper: 1,285,096 parameters, 2,347,784
    numbers in the state dict);
  * MeanShift sets `self.requires_grad = False`, a plain module attribute that freezes nothing: the official
    optimiser trains `sub_mean` / `add_mean` like every other weight. kdbench loads them from the checkpoint and
    trains them the same way (ordinary parameters);
  * the official `load_state_dict` is overridden to skip mismatched `tail` keys silently; kdbench loads strictly
    (a checkpoint of another scale is an error that says so);
  * the hard-coded `n_stage = 10` and `n_iters = 3` are fields under the official attribute names; the width C,
    a literal 64 (and its quarters 16, 32, 48) in the official code, is kdbench's field `n_feats` (default 64, a
    multiple of 4), so that a `tiny` preset exists for the tests;
  * UNetAttention resizes its third branch bilinearly to its own size, an exact identity, so it is skipped here;
    odd LR sizes exercise the max-pool floor (the half-resolution branch is resized back to the full size).

Taps: `body` runs n_iters times with shared weights; a tap on `body.*` holds its *last* iteration's map.

Speed (same outputs within float rounding): the network runs in `torch.channels_last` memory format (faster 3x3
convolutions on the CPU) and its 1x1 convolutions run as matmuls over the channels-last view (ASID's `Conv1x1`,
same parameters).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kd.errors import KdError
from kd.models.fields import check_positive_ints
from kd.models.registry import ModelEntry, register_model
from students.asid import Conv1x1
from teachers.rcan import MeanShift, check_rgb_batch

RGB_RANGE = 255.0


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


class ConvLReLU(nn.Module):
    """3x3 conv -> LeakyReLU(0.01) (official `ConvReLU`, keys `conv.0`)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Sequential(conv3x3(in_channels, out_channels), nn.LeakyReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class HierarchicalConv(nn.Module):
    """conv_in, four C/4-channel groups: group k > 1 is refined by k-1 convs and fused with group k-1 by a 1x1."""

    def __init__(self, channels: int):
        super().__init__()
        q = channels // 4
        self.conv_in = ConvLReLU(channels, channels)
        self.convA_0 = nn.Sequential(ConvLReLU(q, q))
        self.convA_1 = Conv1x1(2 * q, q)
        self.convB_0 = nn.Sequential(ConvLReLU(q, q), ConvLReLU(q, q))
        self.convB_1 = Conv1x1(2 * q, q)
        self.convC_0 = nn.Sequential(ConvLReLU(q, q), ConvLReLU(q, q), ConvLReLU(q, q))
        self.convC_1 = Conv1x1(2 * q, q)
        self.conv_out = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y1, y2, y3, y4 = self.conv_in(x).chunk(4, dim=1)
        y2 = self.convA_1(torch.cat((self.convA_0(y2), y1), 1))
        y3 = self.convB_1(torch.cat((self.convB_0(y3), y2), 1))
        y4 = self.convC_1(torch.cat((self.convC_0(y4), y3), 1))
        return self.conv_out(torch.cat((y1, y2, y3, y4), 1)) + x


class UNetAttention(nn.Module):
    """Sigmoid gate from three C/4-channel branches: full resolution, half (max-pool 2, floor) and full again."""

    def __init__(self, channels: int):
        super().__init__()
        q = channels // 4
        self.conv_in = Conv1x1(channels, 3 * q)
        self.conv_1x1 = ConvLReLU(q, q)
        self.conv_2x2 = ConvLReLU(q, q)
        self.conv_4x4 = ConvLReLU(q, q)
        self.conv_out = Conv1x1(3 * q, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y1, y2, y4 = self.conv_in(x).chunk(3, dim=1)
        size = y1.shape[2:]
        y2 = F.interpolate(self.conv_2x2(F.max_pool2d(y2, kernel_size=2, stride=2)), size=size, mode="bilinear",
                           align_corners=False)
        # The official code also resizes the third branch to `size`, its own size: an exact identity, skipped.
        gate = self.conv_out(torch.cat((self.conv_1x1(y1), y2, self.conv_4x4(y4)), 1))
        return torch.sigmoid(gate) * x


class BasicBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Sequential(HierarchicalConv(channels), UNetAttention(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upscale(nn.Module):
    """conv C -> 3 s^2 then PixelShuffle(s) (any s; keys `conv`)."""

    def __init__(self, channels: int, scale: int):
        super().__init__()
        self.conv = conv3x3(channels, 3 * scale * scale)
        self.upsample = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.conv(x))


class HSRNet(nn.Module):
    """HSRNet with the official module names (`Denoiser` is `body`); [0, 1] RGB in and out (unclamped)."""

    body_prefix = "body."  # SolverLS.* and Trans.* are numbered too, and outnumber the body in small presets
    TAPS = {
        "head.0": "shallow features y (B, n_feats, h, w), [0, 255] units less the DIV2K mean",
        "body.[0-9]": "body.0..body.{n_stage-1}: BasicBlock outputs; body.{n_stage}: body tail, the conv before "
                      "the body's skip (B, n_feats, h, w). The body runs n_iters times: a tap holds the last iteration",
        "body.[0-9][0-9]": "the same for two-digit indices (paper: body.10 is the body-tail conv)",
        "body.*.conv.1.conv_out": "pre-sigmoid spatial attention logits of every BasicBlock (B, n_feats, h, w), last "
                                  "iteration",
    }

    def __init__(self, scale: int = 4, n_stage: int = 10, n_iters: int = 3, n_feats: int = 64):
        super().__init__()
        check_positive_ints("HSRNet", n_stage=n_stage, n_iters=n_iters, n_feats=n_feats)
        if n_feats % 4:
            raise KdError(f"HSRNet: field 'n_feats' must be a multiple of 4 (four channel groups); got {n_feats}")
        self.scale, self.n_stage, self.n_iters = scale, n_stage, n_iters
        c = n_feats
        self.sub_mean = MeanShift(RGB_RANGE, -1)
        self.add_mean = MeanShift(RGB_RANGE, +1)
        self.head = nn.Sequential(conv3x3(3, c))
        self.Trans = nn.Sequential(conv3x3(c, c), nn.LeakyReLU(), conv3x3(c, c))
        self.SolverLS = nn.Sequential(Conv1x1(2 * c, c), conv3x3(c, c), nn.LeakyReLU(), conv3x3(c, c))
        self.body = nn.Sequential(*(BasicBlock(c) for _ in range(n_stage)), conv3x3(c, c))
        self.Denoiser = self.body  # the official second name of the same module (and its duplicate keys)
        self.tail = nn.Sequential(conv3x3(c, c), Upscale(c, scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_rgb_batch(x, "HSRNet")
        x = self.sub_mean((x * RGB_RANGE).contiguous(memory_format=torch.channels_last))
        y = self.head(x)
        y = self.Trans(y) + y
        u = y
        for _ in range(self.n_iters):
            u = self.SolverLS(torch.cat((u, y), 1)) + u
            u = self.body(u) + u
        return (self.add_mean(self.tail(u)) / RGB_RANGE).contiguous()


# --- official checkpoint knowledge ------------------------------------------------------------------------------

_STAGE_KEY = re.compile(r"^body\.(\d+)\.conv\.0\.conv_in\.conv\.0\.weight$")


def describe_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """What an HSRNet state dict is: scale (from the upscaling conv's 3*s^2 channels), n_stage and n_feats."""
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    if "tail.1.conv.weight" not in sd:
        raise KdError("not an HSRNet state dict: missing tail.1.conv.weight")
    channels = int(sd["tail.1.conv.weight"].shape[0])
    scale = math.isqrt(channels // 3)
    return {
        "scale": scale,
        "n_stage": sum(1 for k in sd if _STAGE_KEY.match(k)),
        "n_feats": int(sd["tail.1.conv.weight"].shape[1]),
        "evidence": f"its upscaling conv tail.1.conv has {channels} output channels (3 x {scale}^2)",
    }


def build_hsrnet(scale: int, n_stage: int = 10, n_iters: int = 3, n_feats: int = 64) -> HSRNet:
    return HSRNet(scale=scale, n_stage=n_stage, n_iters=n_iters, n_feats=n_feats)


register_model(ModelEntry(
    arch="hsrnet",
    builder=build_hsrnet,
    role="student",
    presets={
        "paper": {"n_stage": 10, "n_iters": 3, "n_feats": 64},
        "mini": {"n_stage": 3, "n_iters": 2, "n_feats": 64},
        "tiny": {"n_stage": 1, "n_iters": 2, "n_feats": 8},
    },
    description="HSRNet (TNNLS 2024): hierarchical conv + U-Net attention blocks; one body "
                "iterated n_iters (3) times; official keys",
))
