"""A2N: attention in attention network (Chen, Gu, Zhang, arXiv 2104.09497, 2021).

Re-implemented from the official code `haoyuc/A2N` @ 210b38cbe721f0283aa5ad20c98373c5822f917a (`code/model/aan.py`,
EDSR code base; SEED_NETWORKS.md section 3). Module names, and therefore `state_dict()` keys, are the official
ones, so the released `aan_x2.pt` / `aan_x3.pt` (plain state dicts) load strictly without a key map (checked: both
reproduce the official code's output on a Set5 image exactly; the x4 release is not in the repository snapshot).

    conv_first -> AAB_trunk.0..{nb-1} -> trunk_conv -> + conv_first (long skip)
    -> [nearest x2 (x3) -> upconv -> pixel attention -> LReLU -> HRconv -> LReLU] once (x2, x3) or twice (x4)
    -> conv_last -> + bilinear upsampling of the input (align_corners=False)

An attention-in-attention block (AAB): 1x1 -> LReLU(0.2); the attention dropout module (global average -> Linear
nf -> nf/4 -> ReLU -> Linear -> 2) gives two logits whose softmax *at temperature 30* weighs the attention branch
(3x3 -> LReLU -> 1x1 -> sigmoid gate on a second 3x3, then a 3x3) against the non-attention 3x3; LReLU -> 1x1 ->
+ block input. The temperature is easy to miss: with temperature 1 the parity fixture is off by 1.6e-3.

Range: the official network works on [0, 255] RGB (`--rgb_range 255`) with no mean shift; kdbench's interface is
[0, 1], so `forward` multiplies by 255 on the way in and divides on the way out (unclamped). Any LR size works.

Fields: the official widths are hard-coded locals of `AAN.__init__` (`nf = 40`, `unf = 24`, `nb = 16`); kdbench
makes them fields under the same names (the parity fixture's `config` uses them). AAB's `reduction=4`, `K=2` and
`t=30` stay constants, as officially (the forward indexes exactly two branches). Scales 2, 3 (one upsampling stage)
and 4 (two x2 stages) only. x2 and x3 checkpoints have identical shapes: nothing in the keys tells them apart.

Speed (same outputs within float rounding): the network runs in `torch.channels_last` memory format (the input
is converted on the way in, the output returned contiguous); oneDNN's 3x3 convolutions on these narrow maps are
markedly faster in NHWC than in the official NCHW, and the 1x1 convolutions run as matmuls over the channels-last
view (ASID's `Conv1x1`, same parameters).
"""

from __future__ import annotations

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
from teachers.rcan import check_rgb_batch

RGB_RANGE = 255.0
TEMPERATURE = 30.0  # AAB `t`: softmax temperature of the attention dropout module
REDUCTION = 4  # AAB `reduction`
SLOPE = 0.2  # LeakyReLU negative slope everywhere


def conv3x3(in_channels: int, out_channels: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)


class PixelAttention(nn.Module):
    """`x * sigmoid(conv1x1(x))` (official `PA`, key `conv`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv1x1(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv(x))


class AttentionBranch(nn.Module):
    """k4(k3(x) * sigmoid(k2(LReLU(k1(x))))); k1, k3, k4: 3x3 without bias, k2: 1x1 with bias."""

    def __init__(self, nf: int):
        super().__init__()
        self.k1 = conv3x3(nf, nf, bias=False)
        self.k2 = Conv1x1(nf, nf)
        self.k3 = conv3x3(nf, nf, bias=False)
        self.k4 = conv3x3(nf, nf, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.k2(F.leaky_relu(self.k1(x), SLOPE)))
        return self.k4(self.k3(x) * gate)


class AAB(nn.Module):
    """Attention-in-attention block; returns `conv_last(LReLU(w0 * attention + w1 * non_attention)) + x`."""

    def __init__(self, nf: int):
        super().__init__()
        self.conv_first = Conv1x1(nf, nf, bias=False)
        self.conv_last = Conv1x1(nf, nf, bias=False)
        # Attention dropout module: indices 0 and 2 are the official keys (ADM.0, ADM.2).
        self.ADM = nn.Sequential(nn.Linear(nf, nf // REDUCTION, bias=False), nn.ReLU(),
                                 nn.Linear(nf // REDUCTION, 2, bias=False))
        self.attention = AttentionBranch(nf)
        self.non_attention = conv3x3(nf, nf, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.conv_first(x), SLOPE)
        weights = F.softmax(self.ADM(y.mean(dim=(2, 3))) / TEMPERATURE, dim=1)
        mixed = (self.attention(y) * weights[:, 0, None, None, None]
                 + self.non_attention(y) * weights[:, 1, None, None, None])
        # Out of place (the official code adds in place): a hooked tap must not change after it was captured.
        return self.conv_last(F.leaky_relu(mixed, SLOPE)) + x


def check_a2n_fields(scale: int, nf: int, unf: int, nb: int) -> None:
    check_positive_ints("A2N", nf=nf, unf=unf, nb=nb)
    if nf < REDUCTION:
        raise KdError(f"A2N: field 'nf' must be at least {REDUCTION} (the attention dropout module's hidden layer "
                      f"has nf // {REDUCTION} units); got {nf}")
    if scale not in (2, 3, 4):
        raise KdError(f"A2N supports scales x2, x3 and x4 only (official upsampler); got x{scale}")


class A2N(nn.Module):
    """A2N with the official module names; [0, 1] RGB in and out (unclamped)."""

    body_prefix = "AAB_trunk."  # the body's numbered family (`upconv1/2`, `att1/2`, `HRconv1/2` are upsampler)
    body_tail = "trunk_conv"  # the body's last map before the long skip (kd.methods.pairing)
    TAPS = {
        "conv_first": "shallow features, also the long-skip residual (B, nf, h, w), [0, 255] units",
        "AAB_trunk.[0-9]": "outputs of the attention-in-attention blocks (B, nf, h, w)",
        "AAB_trunk.[0-9][0-9]": "the same for two-digit indices (paper: AAB_trunk.10..15)",
        "trunk_conv": "body tail: the trunk conv before the long skip (B, nf, h, w)",
        "AAB_trunk.*.attention.k2": "pre-sigmoid spatial attention logits of every AAB (B, nf, h, w)",
    }

    def __init__(self, scale: int = 4, nf: int = 40, unf: int = 24, nb: int = 16):
        super().__init__()
        check_a2n_fields(scale, nf, unf, nb)
        self.scale = scale
        self.conv_first = conv3x3(3, nf)
        self.AAB_trunk = nn.Sequential(*(AAB(nf) for _ in range(nb)))
        self.trunk_conv = conv3x3(nf, nf)
        self.upconv1 = conv3x3(nf, unf)
        self.att1 = PixelAttention(unf)
        self.HRconv1 = conv3x3(unf, unf)
        if scale == 4:
            self.upconv2 = conv3x3(unf, unf)
            self.att2 = PixelAttention(unf)
            self.HRconv2 = conv3x3(unf, unf)
        self.conv_last = conv3x3(unf, 3)

    def _upsample_stage(self, x: torch.Tensor, factor: int, stage: int) -> torch.Tensor:
        x = getattr(self, f"upconv{stage}")(F.interpolate(x, scale_factor=factor, mode="nearest"))
        x = F.leaky_relu(getattr(self, f"att{stage}")(x), SLOPE)
        return F.leaky_relu(getattr(self, f"HRconv{stage}")(x), SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_rgb_batch(x, "A2N")
        x = (x * RGB_RANGE).contiguous(memory_format=torch.channels_last)
        shallow = self.conv_first(x)
        feat = shallow + self.trunk_conv(self.AAB_trunk(shallow))
        if self.scale == 4:
            feat = self._upsample_stage(self._upsample_stage(feat, 2, 1), 2, 2)
        else:
            feat = self._upsample_stage(feat, self.scale, 1)
        out = self.conv_last(feat) + F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return (out / RGB_RANGE).contiguous()


# --- official checkpoint knowledge ------------------------------------------------------------------------------

_BLOCK_KEY = re.compile(r"^AAB_trunk\.(\d+)\.conv_first\.weight$")


def describe_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """What an A2N state dict is: its upsampling (x4, or x2/x3: their weights have the same shapes), nf, unf, nb."""
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    missing = [k for k in ("conv_first.weight", "upconv1.weight", "conv_last.weight") if k not in sd]
    if missing:
        raise KdError(f"not an A2N state dict: missing {', '.join(missing)}")
    two_stages = "upconv2.weight" in sd
    return {
        "upsampling": "x4 (two x2 stages: upconv2, att2, HRconv2)" if two_stages else "x2 or x3 (one stage)",
        "nf": int(sd["conv_first.weight"].shape[0]),
        "unf": int(sd["upconv1.weight"].shape[0]),
        "nb": sum(1 for k in sd if _BLOCK_KEY.match(k)),
    }


def build_a2n(scale: int, nf: int = 40, unf: int = 24, nb: int = 16) -> A2N:
    return A2N(scale=scale, nf=nf, unf=unf, nb=nb)


register_model(ModelEntry(
    arch="a2n",
    builder=build_a2n,
    role="student",
    presets={
        "paper": {"nf": 40, "unf": 24, "nb": 16},
        "mini": {"nf": 40, "unf": 24, "nb": 8},
        "tiny": {"nf": 8, "unf": 8, "nb": 2},
    },
    description="A2N (arXiv 2021): attention-in-attention blocks weigh an attention and a plain branch; "
                "official keys",
))
