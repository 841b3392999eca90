"""MDSR: multi-scale deep super-resolution (Lim et al., "Enhanced Deep Residual Networks for Single Image
Super-Resolution", CVPRW 2017; official code `sanghyun-son/EDSR-PyTorch` @ 4f5e2ced93ebb21b42c8568b044c143a4be4a651,
`src/model/mdsr.py` + `common.py`, MIT). Written from the paper and the official model's structure; module names,
and therefore `state_dict()` keys, are the official ones, so MDSR checkpoints load strictly without a key map.

One network serves several scales (`scales`, the official `args.scale` list, one branch per entry in that order):

    sub_mean -> head.0 -> pre_process.{i} (two ResBlocks with 5x5 convs, per scale)
             -> body.0 .. body.{B-1} (shared ResBlocks) -> body.{B} (conv) -> + pre-processed
             -> upsample.{i} (per scale) -> tail.0 (shared conv to RGB) -> add_mean

`create("mdsr", scale=4, scales=[2, 3, 4])` builds the whole multi-branch network with the x4 branch selected,
what the official code does with `set_scale(scales.index(4))`; `scales=None` builds the single branch of `scale`.
kdbench trains one scale per run, so the branches of the other scales get no gradient there: they are frozen
(requires_grad False) to keep data-parallel training from waiting for their gradients, and stay as loaded.

Range: [0, 255] with the DIV2K mean removed and added back by 1x1 convs stored in the checkpoint (trainable at this
commit: the official `self.requires_grad = False` only sets a module attribute); `forward` maps kdbench's [0, 1]
interface in and out, unclamped. The ResBlocks are EDSR's without `res_scale` (MDSR fixes it at 1); the upsampler is
the EDSR-family one of `teachers/rcan.py`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from kd.errors import KdError
from kd.models.fields import check_positive_ints, check_rgb
from kd.models.registry import ModelEntry, register_model
from teachers.rcan import MeanShift, Upsampler, check_rgb_batch, conv3x3

PRE_PROCESS_KERNEL = 5


def check_scales(network: str, scale: int, scales: Sequence[int] | None) -> list[int]:
    """The branch scales (`scales`, or `[scale]` when None), checked: each 2^n or 3, no repeats, `scale` among them."""
    branches = [scale] if scales is None else list(scales)
    if not branches or any(not isinstance(s, int) or isinstance(s, bool) for s in branches):
        raise KdError(f"{network}: field 'scales' must be a non-empty list of integers; got {scales!r}")
    bad = [s for s in branches if not (s == 3 or (s >= 2 and s & (s - 1) == 0))]
    if bad or len(set(branches)) != len(branches):
        raise KdError(f"{network}: field 'scales' takes distinct scales 2^n or 3; got {branches}")
    if scale not in branches:
        raise KdError(f"{network}: field 'scales' {branches} has no branch for x{scale}; add {scale} to it")
    return branches


def branch_scales(state_dict: Mapping[str, Any], prefix: str, n_feats: int) -> list[int]:
    """The scale of each upsampler branch `{prefix}{i}.*` of an EDSR-family multi-scale state dict, in branch order.

    A branch is a list of convs each followed by PixelShuffle(r), with r^2 * n_feats output channels."""
    key = re.compile(rf"^{re.escape(prefix)}(\d+)\.(\d+)\.weight$")
    convs: dict[int, list[tuple[int, int]]] = {}
    for name, value in state_dict.items():
        if m := key.match(name):
            convs.setdefault(int(m.group(1)), []).append((int(m.group(2)), int(value.shape[0])))
    return [math.prod(math.isqrt(c // n_feats) for _, c in sorted(convs[i])) for i in sorted(convs)]


def branch_evidence(scales: list[int], prefix: str) -> str:
    listed = ", ".join(f"{prefix}{i} x{s}" for i, s in enumerate(scales))
    return f"upsampler branches {listed} (build it with scales={scales})"


def freeze_other_branches(branches: Sequence[nn.Module], selected: int) -> None:
    for i, branch in enumerate(branches):
        if i != selected:
            branch.requires_grad_(False)


class ResBlock(nn.Module):
    """conv -> ReLU -> conv plus the skip (`body.0` / `body.2`), k x k: 3 in the body, 5 in the pre-processing.

    EDSR's block (`teachers/edsr.py`) without its `res_scale`, which MDSR fixes at 1 (multiplying by 1 was 3-5% of
    an MDSR forward on the CPU)."""

    def __init__(self, n_feats: int, kernel_size: int = 3):
        super().__init__()
        pad = kernel_size // 2
        self.body = nn.Sequential(nn.Conv2d(n_feats, n_feats, kernel_size, padding=pad), nn.ReLU(),
                                  nn.Conv2d(n_feats, n_feats, kernel_size, padding=pad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The skip is added in place to the second conv's fresh output (as the official code does; 5-15% of a CPU
        # forward): the block's output is that tensor, so a tap on `body.{i}.body.2` would see the sum.
        out = self.body(x)
        out += x
        return out


class MDSR(nn.Module):
    """MDSR with the official module names and the branch of `scale` selected; [0, 1] RGB in and out."""

    body_prefix = "body."  # with one block per branch, `pre_process.` would be as numerous
    TAPS = {
        "head.0": "shallow features, before the scale-specific pre-processing (B, n_feats, h, w)",
        "body.[0-9]": "body.0..body.{n_resblocks-1}: shared ResBlock outputs; body.{n_resblocks}: body-tail conv, "
                      "before the long skip (B, n_feats, h, w)",
        "body.[0-9][0-9]": "the same for two-digit indices (paper config: body.80 is the body-tail conv)",
    }

    def __init__(self, scale: int, scales: Sequence[int] | None, n_resblocks: int, n_feats: int, rgb_range: float,
                 n_colors: int):
        super().__init__()
        check_positive_ints("MDSR", n_resblocks=n_resblocks, n_feats=n_feats)
        check_rgb("MDSR", n_colors)
        self.scales = check_scales("MDSR", scale, scales)
        self.scale, self.branch, self.rgb_range = scale, self.scales.index(scale), float(rgb_range)
        self.sub_mean = MeanShift(rgb_range, -1)
        self.head = nn.Sequential(conv3x3(3, n_feats))
        self.pre_process = nn.ModuleList(
            nn.Sequential(ResBlock(n_feats, PRE_PROCESS_KERNEL), ResBlock(n_feats, PRE_PROCESS_KERNEL))
            for _ in self.scales)
        self.body = nn.Sequential(*(ResBlock(n_feats) for _ in range(n_resblocks)), conv3x3(n_feats, n_feats))
        self.upsample = nn.ModuleList(Upsampler(s, n_feats) for s in self.scales)
        self.tail = nn.Sequential(conv3x3(n_feats, 3))
        self.add_mean = MeanShift(rgb_range, +1)
        freeze_other_branches(self.pre_process, self.branch)
        freeze_other_branches(self.upsample, self.branch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_rgb_batch(x, "MDSR")
        feat = self.pre_process[self.branch](self.head(self.sub_mean(x * self.rgb_range)))
        deep = self.body(feat) + feat
        return self.add_mean(self.tail(self.upsample[self.branch](deep))) / self.rgb_range


_BLOCK_KEY = re.compile(r"^body\.(\d+)\.body\.0\.weight$")


def describe_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """What an MDSR state dict is: branch scales (read off the upsamplers; `scale` too when there is one branch),
    n_resblocks, n_feats and `evidence`."""
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    missing = [k for k in ("head.0.weight", "pre_process.0.0.body.0.weight", "upsample.0.0.weight", "tail.0.weight")
               if k not in sd]
    if missing:
        raise KdError(f"not an MDSR state dict: missing {', '.join(missing)}")
    n_feats = int(sd["head.0.weight"].shape[0])
    scales = branch_scales(sd, "upsample.", n_feats)
    info: dict[str, Any] = {"arch": "mdsr", "scales": scales}
    if len(scales) == 1:
        info["scale"] = scales[0]
    info.update(n_resblocks=sum(1 for k in sd if _BLOCK_KEY.match(k)), n_feats=n_feats,
                evidence=branch_evidence(scales, "upsample."))
    return info


def build_mdsr(scale: int, scales: Sequence[int] | None = (2, 3, 4), n_resblocks: int = 80, n_feats: int = 64,
               rgb_range: float = 255.0, n_colors: int = 3) -> MDSR:
    return MDSR(scale=scale, scales=scales, n_resblocks=n_resblocks, n_feats=n_feats, rgb_range=rgb_range,
                n_colors=n_colors)


MDSR.describe_state_dict = staticmethod(describe_state_dict)

register_model(ModelEntry(
    arch="mdsr",
    builder=build_mdsr,
    role="teacher",
    family="cnn",
    presets={
        "paper": {"scales": [2, 3, 4], "n_resblocks": 80, "n_feats": 64},
        "baseline": {"scales": [2, 3, 4], "n_resblocks": 16, "n_feats": 64},  # MDSR-baseline
        # Single-branch sizes for CPU runs and tests (the other scales' branches would never train there).
        "mini": {"scales": None, "n_resblocks": 8, "n_feats": 32},
        "tiny": {"scales": None, "n_resblocks": 1, "n_feats": 8},
    },
    description="MDSR (Lim et al., CVPRW 2017): EDSR body shared by per-scale 5x5 pre-processing and upsampler "
                "branches; official keys",
))
