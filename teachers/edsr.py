"""EDSR: enhanced deep residual network (Lim et al., CVPRW 2017; official code `sanghyun-son/EDSR-PyTorch`).

Re-implemented from the paper and the official model's structure; module names, and therefore `state_dict()` keys,
are the official ones (`sub_mean`, `head.0`, `body.{i}.body.{0,2}`, `body.{B}`, `tail.0.*`, `tail.1`, `add_mean`),
so the released `edsr_x{s}-*.pt` / `edsr_baseline_x{s}-*.pt` files load strictly without a key map.

    sub_mean -> head.0 -> body.0..body.{B-1} (ResBlocks) -> body.{B} (conv) -> + head -> tail -> add_mean

A ResBlock is conv -> ReLU -> conv, scaled by `res_scale`, plus the skip; no batch norm, no attention. The official
network works on [0, 255] RGB with the DIV2K mean removed and added back by 1x1 convs stored in the checkpoints;
kdbench's interface is [0, 1], so `forward` scales by `rgb_range` on the way in and out (as RCAN does). The trunk
pieces are shared with RCAN (`teachers/rcan.py`), whose EDSR-family upsampler is the same module.

Presets (plain data, below): `paper` = EDSR (c256 b32, res_scale 0.1, the FAKD/DUKD teacher); `c64b32` = the
DUKD/MiPKD student (c64 b32, res_scale 0.1, METHODS.md section 1); `baseline` = EDSR-baseline (c64 b16,
res_scale 1, the FAKD student and the official `edsr_baseline` release); `mini` / `tiny` for CPU runs and tests;
`ghost` = GhostSR-EDSR, a **reconstruction** (`teachers/ghostsr.py`): `paper` with `ghost_ratio` 0.5, i.e. both
convs of every ResBlock are ghost convs (half of the outputs an ordinary conv, half their learned one-pixel
shifts), as in the authors' MindSpore release; 24,207,963 parameters at x4 against 43,089,947 (-43.8%), and -46.4%
at x2 where the paper reports -46%. Its ResBlock keys are `body.{i}.body.{0,2}.primary_conv.*` and
`body.{i}.body.{0,2}.cheap_conv.weight`; `ghost_ratio` 0, the default, is the official network.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from kd.errors import KdError
from kd.models.registry import ModelEntry, register_model
from teachers.ghostsr import body_conv, check_ghost_ratio
from teachers.rcan import MeanShift, Upsampler, check_rgb_batch, conv3x3

_BLOCK_KEY = re.compile(r"body\.(\d+)\.body\.0\.(primary_conv\.)?weight$")  # `primary_conv.`: ghost preset
_UPSAMPLE_KEY = re.compile(r"tail\.0\.(\d+)\.weight$")


class ResBlock(nn.Module):
    """conv -> ReLU -> conv, times `res_scale`, plus the skip (`body.0` / `body.2` as in the official block)."""

    def __init__(self, n_feats: int, res_scale: float, ghost_ratio: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(body_conv(n_feats, ghost_ratio), nn.ReLU(), body_conv(n_feats, ghost_ratio))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Out of place (the official code adds in place): a hooked tap must not change after it was captured.
        return self.body(x) * self.res_scale + x


class EDSR(nn.Module):
    TAPS = {
        "head.0": "shallow features (B, n_feats, h, w)",
        "body.[0-9]*": "body.0..body.{n_resblocks-1}: ResBlock outputs; body.{n_resblocks}: body-tail conv, before "
                       "the long skip (B, n_feats, h, w)",
    }

    def __init__(self, scale: int, n_resblocks: int, n_feats: int, res_scale: float, rgb_range: float,
                 ghost_ratio: float = 0.0):
        super().__init__()
        for name, value in (("n_resblocks", n_resblocks), ("n_feats", n_feats)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise KdError(f"EDSR field '{name}' must be a positive integer, got {value!r}")
        check_ghost_ratio("EDSR", ghost_ratio)
        self.rgb_range = rgb_range
        self.sub_mean = MeanShift(rgb_range, sign=-1)
        self.head = nn.Sequential(conv3x3(3, n_feats))
        self.body = nn.Sequential(*(ResBlock(n_feats, res_scale, ghost_ratio) for _ in range(n_resblocks)),
                                  conv3x3(n_feats, n_feats))
        self.tail = nn.Sequential(Upsampler(scale, n_feats), conv3x3(n_feats, 3))
        self.add_mean = MeanShift(rgb_range, sign=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_rgb_batch(x, "EDSR")
        shallow = self.head(self.sub_mean(x * self.rgb_range))
        deep = self.body(shallow) + shallow
        return self.add_mean(self.tail(deep)) / self.rgb_range


def describe_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """What an EDSR state dict is: scale (read off the upsampler), n_resblocks, n_feats and `evidence`."""
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    missing = [k for k in ("head.0.weight", "tail.0.0.weight", "tail.1.weight") if k not in sd]
    missing += [] if any(_BLOCK_KEY.match(k) for k in sd) else ["body.0.body.0.weight"]
    if missing:
        raise KdError(f"not an EDSR state dict: missing {', '.join(missing)}")
    n_feats = int(sd["head.0.weight"].shape[0])
    stages = sorted(int(m.group(1)) for k in sd if (m := _UPSAMPLE_KEY.match(k)))
    out_channels = [int(sd[f"tail.0.{i}.weight"].shape[0]) for i in stages]
    factors = [math.isqrt(c // n_feats) for c in out_channels]
    return {
        "arch": "edsr",
        "scale": math.prod(factors),
        "n_resblocks": sum(1 for k in sd if _BLOCK_KEY.match(k)),
        "n_feats": n_feats,
        "evidence": f"upsampler has {out_channels[0]} output channels ({n_feats} features, {len(stages)} stage(s))",
    }


def build_edsr(scale: int, n_resblocks: int = 32, n_feats: int = 256, res_scale: float = 0.1,
               rgb_range: float = 255.0, ghost_ratio: float = 0.0) -> EDSR:
    return EDSR(scale=scale, n_resblocks=n_resblocks, n_feats=n_feats, res_scale=res_scale, rgb_range=rgb_range,
                ghost_ratio=ghost_ratio)


EDSR.describe_state_dict = staticmethod(describe_state_dict)

register_model(ModelEntry(
    arch="edsr",
    builder=build_edsr,
    role="teacher",
    family="cnn",
    presets={
        "paper": {"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1},  # EDSR (43M at x4)
        "c64b32": {"n_resblocks": 32, "n_feats": 64, "res_scale": 0.1},  # DUKD / MiPKD student
        "baseline": {"n_resblocks": 16, "n_feats": 64, "res_scale": 1.0},  # EDSR-baseline (1.5M at x4)
        "mini": {"n_resblocks": 8, "n_feats": 32, "res_scale": 1.0},
        "tiny": {"n_resblocks": 2, "n_feats": 8, "res_scale": 1.0},
        "ghost": {"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1, "ghost_ratio": 0.5},  # GhostSR-EDSR
    },
    description="EDSR (Lim et al., CVPRW 2017): ResBlocks without batch norm; official keys; presets for the "
                "teacher (paper), the DUKD student (c64b32) and EDSR-baseline; ghost = GhostSR shift-ghost "
                "ResBlock convs (reconstruction)",
))
