"""NCNet: fast nearest convolution network (Luo et al., ECCV 2022 Workshops (AIM), arXiv 2208.11609).

Re-implemented from the official PyTorch port `Algolzw/NCNet` @ 048486534a209c72ef6bbe991a4a926e61c18345
(`torch_code/ncnet.py`; the reference model is TensorFlow/Keras, `model/basenet.py`; SEED_NETWORKS.md section 4).
Module names, and therefore `state_dict()` keys, are the official ones (`body.{0,2,...,12}.{weight,bias}`).

    x -> body: 7 plain 3x3 convs (3 -> f, 4x f -> f, f -> 3s^2, 3s^2 -> 3s^2), ReLU after all but the last
      -> + nearest(x): a fixed 1x1 conv repeating each colour s^2 times -> PixelShuffle (x4: two PixelShuffle(2))

Range: the official network works on [0, 255] RGB (README: "input image range is [0, 255]"); kdbench's interface is
[0, 1], so `forward` multiplies by 255 on the way in and divides on the way out. Unclamped, like the PyTorch port
(the Keras model clips to [0, 255]).

Quirks and how kdbench handles them:
  * the port's fixed "nearest" weight is a plain tensor attribute, so it is not moved by `.to(device)` and the port
    fails on a GPU; here it is a *non-persistent buffer*: absent from the state dict (key set unchanged) and moved
    with the network;
  * the port uses `math.log` without importing `math` (it cannot build x2/x4 as published); not applicable here;
  * x4 upsamples with two `PixelShuffle(2)`, not one `PixelShuffle(4)` (different pixels: 0.93 on the fixture); the
    nearest weight's channel order is nearest upsampling under both;
  * the Keras weights (the only released ones, x3) are not loadable as-is: Keras `depth_to_space` orders sub-pixel
    channels differently from `PixelShuffle`, so a conversion would permute the last conv's output channels. Not
    provided.

Fields: the port's constructor `NCNet(n_feats=32, out_c=3, scale_factor=3)`; kdbench's `scale` is `scale_factor`.
`out_c` (colour channels in and out) must be 3 (RGB). The body is held as a module whose children are the seven
convs under their official indices, the first six applying their ReLU in place, so the body stages a feature
method taps are the seven convolutions (post-activation but the last) and nothing else. The network runs in
`torch.channels_last` memory format (faster convolutions on the CPU; same outputs within float rounding).
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

RGB_RANGE = 255.0
N_CONVS = 7


class ConvReLU(nn.Conv2d):
    """A 3x3 conv whose output goes through ReLU in place: one module, so its output (the tap) is post-ReLU and no
    hook ever sees the tensor before the in-place ReLU changes it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu_(super().forward(x))


class PlainBody(nn.Module):
    """Seven 3x3 convs under the official `nn.Sequential` indices 0, 2, ..., 12 (the ReLUs at the odd indices hold
    no weights), ReLU after all but the last."""

    def __init__(self, channels: list[int]):
        super().__init__()
        last = len(channels) - 2
        for i, (c_in, c_out) in enumerate(zip(channels, channels[1:])):
            self.add_module(str(2 * i), (nn.Conv2d if i == last else ConvReLU)(c_in, c_out, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.children():
            x = conv(x)
        return x


def nearest_weight(colours: int, scale: int) -> torch.Tensor:
    """(colours*s^2, colours, 1, 1): output channel c*s^2 + k copies input colour c (the port's construction)."""
    return torch.eye(colours).repeat(1, scale**2).reshape(colours * scale**2, colours, 1, 1)


def pixel_shuffles(scale: int) -> nn.Sequential:
    """The port's `UpOnly`: one PixelShuffle(2) per factor 2, or PixelShuffle(3)."""
    if scale >= 2 and scale & (scale - 1) == 0:
        return nn.Sequential(*(nn.PixelShuffle(2) for _ in range(int(math.log2(scale)))))
    if scale == 3:
        return nn.Sequential(nn.PixelShuffle(3))
    raise KdError(f"NCNet supports scales 2^n and 3; got x{scale}")


class NCNet(nn.Module):
    """NCNet with the official module names; [0, 1] RGB in and out (unclamped)."""

    body_prefix = "body."
    TAPS = {
        "body.[0-9]": "body.0..body.8: the first five plain convs' outputs after their ReLU (B, n_feats, h, w)",
        "body.1[02]": "body.10: the sixth conv after its ReLU (B, 3*s^2, h, w); body.12: body tail, the last conv "
                      "(no ReLU) before the nearest skip (B, 3*s^2, h, w)",
    }

    def __init__(self, scale: int = 4, n_feats: int = 32, out_c: int = 3):
        super().__init__()
        check_rgb("NCNet", out_c, "out_c")
        check_positive_ints("NCNet", n_feats=n_feats)
        self.upsample = pixel_shuffles(scale)
        self.scale = scale
        shuffled = out_c * scale**2
        self.body = PlainBody([out_c] + [n_feats] * 5 + [shuffled] * 2)
        self.register_buffer("nearest_weight", nearest_weight(out_c, scale), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_rgb_batch(x, "NCNet")
        x = (x * RGB_RANGE).contiguous(memory_format=torch.channels_last)
        # In place on the skip's fresh tensor (no module returned it, so no tap holds it): one LR map, no HR copies.
        out = F.conv2d(x, self.nearest_weight).add_(self.body(x)).div_(RGB_RANGE)
        return self.upsample(out).contiguous()


# --- official checkpoint knowledge ------------------------------------------------------------------------------

_CONV_KEY = re.compile(r"^body\.(\d+)\.weight$")


def describe_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """What an NCNet state dict is: scale (from the last conv's 3*s^2 channels) and n_feats."""
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    indices = sorted(int(m.group(1)) for k in sd if (m := _CONV_KEY.match(k)))
    if len(indices) != N_CONVS or "body.0.weight" not in sd:
        raise KdError(f"not an NCNet state dict: expected {N_CONVS} convs body.0..body.12, found {len(indices)}")
    colours = int(sd["body.0.weight"].shape[1])
    channels = int(sd[f"body.{indices[-1]}.weight"].shape[0])
    scale = math.isqrt(channels // colours)
    return {
        "scale": scale,
        "n_feats": int(sd["body.0.weight"].shape[0]),
        "evidence": f"its last conv body.{indices[-1]} has {channels} output channels ({colours} x {scale}^2)",
    }


def build_ncnet(scale: int, n_feats: int = 32, out_c: int = 3) -> NCNet:
    return NCNet(scale=scale, n_feats=n_feats, out_c=out_c)


register_model(ModelEntry(
    arch="ncnet",
    builder=build_ncnet,
    role="student",
    presets={
        "paper": {"n_feats": 32, "out_c": 3},  # the released model is x3 (52,279 parameters); x4: 72,544
        "mini": {"n_feats": 32, "out_c": 3},  # already CPU-sized
        "tiny": {"n_feats": 8, "out_c": 3},
    },
    description="NCNet (ECCV 2022 W): 7 plain convs plus a fixed nearest-upsampling skip; official keys",
))
