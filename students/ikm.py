"""U-HDN + IKM: image-specific convolutional kernel modulation (Huang, Li, Hu, Huang, Gao, arXiv 2111.08362, 2021).

Re-implemented from the official code `YuanfeiHuang/CoMoNet` @ cf723d44770ee3046b0cd7a92299012a64ef5543 (`model.py`,
`src/basic_module.py`, `main.py`; SEED_NETWORKS.md section 8). Module names, and therefore `state_dict()` keys, are
the official ones, so official state dicts load strictly (checked on the parity fixtures; the x2 checkpoint the
repository held at that commit, `models/IKM+UHDN_x2.pth`, is not available to test).

    input (3x3) -> body: n_blocks U-hourglass dense blocks (UHDB) + 3x3 conv -> + input -> tail (grouped 3x3 conv
    + PixelShuffle per x2, or x3; then a 3x3 conv with bias)

A UHDB holds six dense blocks with [6, 5, 4, 4, 5, 6] dense layers (3x3, `growth_rate` channels each, ReLU, concat)
and a 1x1 gate back to `n_channels`, wired as an hourglass: x4 = b3(x3) + x2, x5 = b4(x4) + x1, y = b5(x5) + x.
`net_type='ResNet'` builds residual blocks instead (3x3 -> ReLU -> 3x3, + input; `n_units` per block, + input).

Kernel modulation (IKM, on every dense / residual 3x3 conv, not on the 1x1 gates), per sample, as the official
code: a binary mask `x >= 0` of the conv's input is average-pooled to the kernel size (adaptive, 3x3), softmaxed
over the 9 positions of each input channel (p), mapped to `1 + sigmoid(9 p - 1)` and multiplied into the kernel
(broadcast over output channels); the batch runs as one grouped convolution with groups = batch. Channels that come
out of a ReLU are never negative, so their factor is uniformly 1.5; only channels carrying a block's signed input
are modulated unevenly. The modulation reads no gradient (the official code computes it from `.data`).

Training (kdbench's choice): the official training path swaps the parameter's `.data` to the batch-repeated
modulated kernel around the convolution and, in main.py, averages the resulting (B * Cout, ...) weight gradient
over the batch before the optimiser step. In torch 2.14 that path fails (CPU: oneDNN primitive error; with mkldnn
off a shape error in backward), so kdbench computes what it intends: a functional per-sample convolution whose
kernels are `weight * modulation` with the modulation computed without gradient, whose input gradient is the
ordinary one through the modulated kernels, and whose *weight gradient is the per-sample modulated-kernel gradients
averaged over the batch* (`StraightThroughModulation`): the official update, a straight-through gradient that
ignores the modulation factor and is 1/B of what a sum over the batch gives (Adam is insensitive to that scale; a
gradient-norm clip sees it). Under data parallelism each process averages over its share and the processes
average, i.e. the global batch mean. Training in main.py also drops incomplete batches and makes LR on the fly with
its own bicubic; kdbench uses its own data pipeline.

Range: the network sees DF2K-normalised RGB: main.py scales to [0, 1] and feeds `(x - mean) / std` with mean
(0.466, 0.448, 0.403), std (0.242, 0.234, 0.246), mapping the output back with `* std + mean`, outside the network.
kdbench's interface is [0, 1] RGB, so `forward` does both (unclamped).

Fields: the official `Generator(n_colors, net_type, n_channels, n_blocks, n_units, growth_rate, groups, act,
use_IKM=False, scale=4)`; `act` is always ReLU (option.py) and not a field; `n_colors` must be 3. The official code
cannot build `net_type='CNN'` (its `CNN` block is called with arguments in the wrong places), nor 'UHDN' with
`n_units` other than 6 (the hourglass indexes six dense blocks); both are refused with a KdError. main.py at this
commit calls `Generator` without `net_type` (it cannot build the model); model.py's signature is the one used.
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
from kd.models.fields import check_positive_ints, check_rgb
from kd.models.registry import ModelEntry, register_model
from teachers.rcan import check_rgb_batch

DF2K_MEAN = (0.466, 0.448, 0.403)
DF2K_STD = (0.242, 0.234, 0.246)
NET_TYPES = ("UHDN", "ResNet")
DENSE_LAYERS = (6, 5, 4, 4, 5, 6)  # dense layers of the six dense blocks of a UHDB


def kernel_modulation(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """(B, Cin, k, k) factors in (1, 2): 1 + sigmoid(k^2 softmax(avgpool_k(x >= 0)) - 1), without gradient."""
    with torch.no_grad():
        active = (x < 0).logical_not_().to(x.dtype)  # the official where(x < 0, 0, 1), NaN -> 1 included
        share = F.adaptive_avg_pool2d(active, kernel_size).flatten(2)
        proportion = kernel_size * kernel_size * F.softmax(share, dim=2) - 1
        return (1 + torch.sigmoid(proportion)).unflatten(2, (kernel_size, kernel_size))


class StraightThroughModulation(torch.autograd.Function):
    """Per-sample kernels `weight * modulation[b]`, stacked as (B * Cout, Cin, k, k) for a grouped convolution.

    Backward: the weight gets the mean over samples of the per-sample kernels' gradients (the official update,
    main.py's batch average of the batch-repeated weight gradient); the modulation gets none.
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, modulation: torch.Tensor) -> torch.Tensor:
        ctx.batch = modulation.shape[0]
        return (weight.unsqueeze(0) * modulation.unsqueeze(1)).flatten(0, 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.unflatten(0, (ctx.batch, -1)).mean(dim=0), None


class IKM(nn.Module):
    """A bias-free convolution (official key `Conv2d`), kernel-modulated per sample when `KA` (see the module doc)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, KA: bool):
        super().__init__()
        self.Conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.KA = KA

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.KA:
            return self.Conv2d(x)
        b, _, h, w = x.shape
        weight = self.Conv2d.weight
        kernels = StraightThroughModulation.apply(weight, kernel_modulation(x, weight.shape[-1]))
        y = F.conv2d(x.reshape(1, -1, h, w), kernels, padding=self.Conv2d.padding, groups=b)
        return y.reshape(b, -1, h, w)


class DenseLayer(nn.Module):
    """cat(x, ReLU(IKM 3x3(x))) (official `dense_conv`, keys `layer.0`)."""

    def __init__(self, in_channels: int, growth_rate: int, modulate: bool):
        super().__init__()
        self.layer = nn.Sequential(IKM(in_channels, growth_rate, 3, KA=modulate), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.layer(x)), 1)


class DenseBlock(nn.Module):
    """`layers` dense layers, then a 1x1 gate (never modulated) back to n_channels (official `dense_block`)."""

    def __init__(self, n_channels: int, growth_rate: int, layers: int, modulate: bool):
        super().__init__()
        self.body = nn.Sequential(*(DenseLayer(n_channels + i * growth_rate, growth_rate, modulate)
                                    for i in range(layers)))
        self.gate = nn.Sequential(IKM(n_channels + layers * growth_rate, n_channels, 1, KA=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.body(x))


class UHDB(nn.Module):
    """Six dense blocks wired as a U-hourglass: x4 = b3(x3) + x2, x5 = b4(x4) + x1, y = b5(x5) + x."""

    def __init__(self, n_channels: int, growth_rate: int, modulate: bool):
        super().__init__()
        self.body = nn.Sequential(*(DenseBlock(n_channels, growth_rate, layers, modulate) for layers in DENSE_LAYERS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.body
        x1 = b[0](x)
        x2 = b[1](x1)
        x4 = b[3](b[2](x2)) + x2
        x5 = b[4](x4) + x1
        return b[5](x5) + x


class ResidualUnit(nn.Module):
    """IKM 3x3 -> ReLU -> IKM 3x3, + input (official `res_block`, keys `block.0`, `block.2`)."""

    def __init__(self, n_channels: int, modulate: bool):
        super().__init__()
        self.block = nn.Sequential(IKM(n_channels, n_channels, 3, KA=modulate), nn.ReLU(),
                                   IKM(n_channels, n_channels, 3, KA=modulate))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) + x


class ResidualBlock(nn.Module):
    """`n_units` residual units, + input (official `ResNet`)."""

    def __init__(self, n_channels: int, n_units: int, modulate: bool):
        super().__init__()
        self.body = nn.Sequential(*(ResidualUnit(n_channels, modulate) for _ in range(n_units)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


def sub_pixel_upscale(n_channels: int, scale: int, groups: int) -> nn.Sequential:
    """Official `UpScale('SubPixel', bias=False, act=False)`: a grouped 3x3 conv + PixelShuffle per x2, or x3."""
    def stage(factor: int) -> list[nn.Module]:
        return [nn.Conv2d(n_channels, factor * factor * n_channels, 3, padding=1, groups=groups, bias=False),
                nn.PixelShuffle(factor)]

    if scale >= 2 and scale & (scale - 1) == 0:
        return nn.Sequential(*(layer for _ in range(int(math.log2(scale))) for layer in stage(2)))
    if scale == 3:
        return nn.Sequential(*stage(3))
    raise KdError(f"U-HDN+IKM supports scales 2^n and 3; got x{scale}")


def check_ikm_fields(n_colors: int, net_type: str, n_channels: int, n_blocks: int, n_units: int, growth_rate: int,
                     groups: int, use_IKM: bool) -> None:
    check_rgb("U-HDN+IKM", n_colors)
    check_positive_ints("U-HDN+IKM", n_channels=n_channels, n_blocks=n_blocks, n_units=n_units,
                        growth_rate=growth_rate, groups=groups)
    if net_type == "CNN":
        raise KdError("U-HDN+IKM: field 'net_type' 'CNN' cannot be built by the official code (its CNN block is "
                      "called with arguments in the wrong places); use 'UHDN' (the paper's) or 'ResNet'")
    if net_type not in NET_TYPES:
        raise KdError(f"U-HDN+IKM: field 'net_type' must be one of {', '.join(NET_TYPES)}; got {net_type!r}")
    if net_type == "UHDN" and n_units != len(DENSE_LAYERS):
        raise KdError(f"U-HDN+IKM: field 'n_units' must be {len(DENSE_LAYERS)} with net_type 'UHDN' (the official "
                      f"hourglass wires exactly six dense blocks); got {n_units}")
    if n_channels % groups:
        raise KdError(f"U-HDN+IKM: field 'groups' ({groups}) must divide 'n_channels' ({n_channels}) (grouped "
                      "upsampling conv)")
    if not isinstance(use_IKM, bool):
        raise KdError(f"U-HDN+IKM: field 'use_IKM' must be true or false; got {use_IKM!r}")


class Generator(nn.Module):
    """U-HDN (+IKM) with the official module names; [0, 1] RGB in and out (unclamped)."""

    body_prefix = "body."
    TAPS = {
        "input": "shallow features, also the long-skip residual (B, n_channels, h, w), DF2K-normalised units",
        "body.[0-9]": "body.0..body.{n_blocks-1}: UHDB (or residual block) outputs; body.{n_blocks}: body tail, "
                      "the conv before the long skip (B, n_channels, h, w)",
    }

    def __init__(self, scale: int = 4, n_colors: int = 3, net_type: str = "UHDN", n_channels: int = 64,
                 n_blocks: int = 4, n_units: int = 6, growth_rate: int = 12, groups: int = 16, use_IKM: bool = True):
        super().__init__()
        check_ikm_fields(n_colors, net_type, n_channels, n_blocks, n_units, growth_rate, groups, use_IKM)
        self.scale = scale
        self.input = nn.Conv2d(n_colors, n_channels, 3, padding=1)
        if net_type == "UHDN":
            blocks = [UHDB(n_channels, growth_rate, use_IKM) for _ in range(n_blocks)]
        else:
            blocks = [ResidualBlock(n_channels, n_units, use_IKM) for _ in range(n_blocks)]
        self.body = nn.Sequential(*blocks, nn.Conv2d(n_channels, n_channels, 3, padding=1, bias=False))
        self.tail = nn.Sequential(sub_pixel_upscale(n_channels, scale, groups),
                                  nn.Conv2d(n_channels, n_colors, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_rgb_batch(x, "U-HDN+IKM")
        mean = x.new_tensor(DF2K_MEAN).view(1, 3, 1, 1)
        std = x.new_tensor(DF2K_STD).view(1, 3, 1, 1)
        shallow = self.input((x - mean) / std)
        return self.tail(self.body(shallow) + shallow) * std + mean


# --- official checkpoint knowledge ------------------------------------------------------------------------------

_BLOCK_KEY = re.compile(r"^body\.(\d+)\.body\.0\.")
_UPSAMPLE_KEY = re.compile(r"^tail\.0\.(\d+)\.weight$")


def describe_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """What a U-HDN+IKM state dict is: scale (from the grouped upsampling convs), n_channels, n_blocks, net_type."""
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    if "input.weight" not in sd or "tail.0.0.weight" not in sd:
        raise KdError("not a U-HDN+IKM state dict: missing input.weight or tail.0.0.weight")
    n_channels = int(sd["input.weight"].shape[0])
    stages = sorted(int(m.group(1)) for k in sd if (m := _UPSAMPLE_KEY.match(k)))
    factors = [math.isqrt(int(sd[f"tail.0.{i}.weight"].shape[0]) // n_channels) for i in stages]
    convs = ", ".join(f"tail.0.{i}" for i in stages)
    return {
        "scale": math.prod(factors),
        "net_type": "UHDN" if any(".layer.0.Conv2d." in k for k in sd) else "ResNet",
        "n_channels": n_channels,
        "n_blocks": len({m.group(1) for k in sd if (m := _BLOCK_KEY.match(k))}),
        "evidence": f"its upsampling conv{'s' if len(stages) > 1 else ''} {convs} "
                    f"{'have' if len(stages) > 1 else 'has'} {factors[0] ** 2 * n_channels} output channels "
                    f"({' + '.join(f'PixelShuffle({f})' for f in factors)})",
    }


def build_ikm(scale: int, n_colors: int = 3, net_type: str = "UHDN", n_channels: int = 64, n_blocks: int = 4,
              n_units: int = 6, growth_rate: int = 12, groups: int = 16, use_IKM: bool = True) -> Generator:
    return Generator(scale=scale, n_colors=n_colors, net_type=net_type, n_channels=n_channels, n_blocks=n_blocks,
                     n_units=n_units, growth_rate=growth_rate, groups=groups, use_IKM=use_IKM)


_PAPER = {"n_colors": 3, "net_type": "UHDN", "n_channels": 64, "n_blocks": 4, "n_units": 6, "growth_rate": 12,
          "groups": 16, "use_IKM": True}

register_model(ModelEntry(
    arch="ikm",
    builder=build_ikm,
    role="student",
    presets={
        "paper": _PAPER,
        "mini": {**_PAPER, "n_channels": 48, "n_blocks": 2, "growth_rate": 8},
        "tiny": {**_PAPER, "n_channels": 8, "n_blocks": 1, "growth_rate": 4, "groups": 4},
    },
    description="U-HDN+IKM (arXiv 2021): hourglass dense blocks whose 3x3 kernels are modulated per image; "
                "official keys",
))
