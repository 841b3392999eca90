"""RCAN: residual channel attention network (Zhang et al., ECCV 2018; official code `yulunzhang/RCAN`).

Re-implemented from the paper and the reference notes (ARCHITECTURES.md section 3); module names and therefore
`state_dict()` keys are exactly the official ones, so `RCAN_BIX{2,3,4}.pt` load strictly without a key map.

    sub_mean -> head.0 -> body.0..body.{G-1} (residual groups) -> body.{G} (conv) -> + head -> tail -> add_mean

The official network works on [0, 255] RGB with the DIV2K mean removed by a 1x1 conv (`sub_mean`, weight = I) and
added back by another (`add_mean`); both are parameters in the checkpoints. kdbench's interface is [0, 1] RGB, so
`forward` multiplies by `rgb_range` on the way in and divides on the way out. No padding: any LR size works.

The trunk pieces (`MeanShift`, `RCAB`, `ResidualGroup`, `Upsampler`) are reused by HAN (`teachers/han.py`).

Preset `ghost` is GhostSR-RCAN, a **reconstruction** (`teachers/ghostsr.py`): `ghost_ratio` 0.5 makes both 3x3
convs of every RCAB a ghost conv (half of the outputs an ordinary conv, half their learned one-pixel shifts);
8,210,379 parameters at x4 against RCAN's 15,592,379 (GhostSR's paper figure for RCAN: not found). Its keys differ
from the official RCAN's there (`...body.0.primary_conv.weight`, `...body.0.cheap_conv.weight`); `ghost_ratio` 0,
the default, is the official network.
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
from kd.models.registry import ModelEntry, register_model
from teachers.ghostsr import body_conv, check_ghost_ratio

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


def check_rgb_batch(x: torch.Tensor, network: str) -> None:
    """Reject anything but a floating (B, 3, h, w) batch, saying what was received."""
    if not isinstance(x, torch.Tensor):
        raise KdError(f"{network} expects a torch.Tensor RGB batch (B, 3, h, w) in [0, 1]; got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise KdError(f"{network} expects a 4-D RGB batch (B, 3, h, w) in [0, 1]; got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise KdError(f"{network} expects a floating-point batch in [0, 1]; got dtype {x.dtype} (divide by 255)")


class MeanShift(nn.Conv2d):
    """Adds `sign * rgb_range * mean` per channel. A real 1x1 conv because the official checkpoints store it."""

    def __init__(self, rgb_range: float, sign: int, rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN):
        super().__init__(3, 3, kernel_size=1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.bias.copy_(sign * rgb_range * torch.tensor(rgb_mean))


class CALayer(nn.Module):
    """Channel attention: global average pool -> 1x1 squeeze -> ReLU -> 1x1 excite -> sigmoid -> rescale.

    `conv_du.2`'s output is the pre-sigmoid logit vector (B, C, 1, 1), `conv_du.3`'s the attention weights.
    """

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(F.adaptive_avg_pool2d(x, 1))


class RCAB(nn.Module):
    """Residual channel attention block: conv -> ReLU -> conv -> CALayer, plus the block skip (no res_scale).

    `ghost_ratio` > 0 makes both convs GhostSR ghost convs (`teachers/ghostsr.py`, a reconstruction).
    """

    def __init__(self, n_feats: int, reduction: int, ghost_ratio: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(body_conv(n_feats, ghost_ratio), nn.ReLU(), body_conv(n_feats, ghost_ratio),
                                  CALayer(n_feats, reduction))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Out of place (the official code adds in place): a hooked tap must not change after it was captured.
        return self.body(x) + x


class ResidualGroup(nn.Module):
    """`n_resblocks` RCABs then a conv (`body.{n_resblocks}`), plus the group skip."""

    def __init__(self, n_feats: int, reduction: int, n_resblocks: int, ghost_ratio: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(*(RCAB(n_feats, reduction, ghost_ratio) for _ in range(n_resblocks)),
                                  conv3x3(n_feats, n_feats))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class Upsampler(nn.Sequential):
    """EDSR-family upsampler: [conv n->4n, PixelShuffle(2)] per factor 2, or [conv n->9n, PixelShuffle(3)]."""

    def __init__(self, scale: int, n_feats: int):
        layers: list[nn.Module] = []
        if scale >= 2 and scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [conv3x3(n_feats, 4 * n_feats), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [conv3x3(n_feats, 9 * n_feats), nn.PixelShuffle(3)]
        else:
            raise KdError(f"RCAN/HAN upsampler supports scales 2^n and 3; got x{scale}")
        super().__init__(*layers)


def check_trunk_fields(network: str, n_resgroups: int, n_resblocks: int, n_feats: int, reduction: int) -> None:
    for name, value in (("n_resgroups", n_resgroups), ("n_resblocks", n_resblocks), ("n_feats", n_feats),
                        ("reduction", reduction)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise KdError(f"{network}: field '{name}' must be a positive integer; got {value!r}")
    if n_feats // reduction < 1:
        raise KdError(f"{network}: n_feats ({n_feats}) // reduction ({reduction}) is 0; the channel-attention "
                      "bottleneck needs at least one channel: lower 'reduction' or raise 'n_feats'")


# --- official checkpoint knowledge ------------------------------------------------------------------------------

# `primary_conv.` where the RCAB convs are GhostSR ghost convs (`ghost` preset).
_GROUP_KEY = re.compile(r"^body\.(\d+)\.body\.0\.body\.0\.(primary_conv\.)?weight$")
_BLOCK_KEY = re.compile(r"^body\.0\.body\.(\d+)\.body\.0\.(primary_conv\.)?weight$")
_UPSAMPLE_KEY = re.compile(r"^tail\.0\.(\d+)\.weight$")


def describe_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """What an RCAN/HAN state dict is: arch, scale (read off the upsampler), trunk fields, and `evidence`.

    Works on official checkpoints and on kdbench's own (same keys). A `module.` prefix (DataParallel) is reported
    as `prefix` and ignored for the analysis.
    """
    prefix = "module." if state_dict and all(k.startswith("module.") for k in state_dict) else ""
    sd = {k[len(prefix):]: v for k, v in state_dict.items()}
    required = ("head.0.weight", "tail.0.0.weight", "tail.1.weight", "body.0.body.0.body.3.conv_du.0.weight")
    missing = [k for k in required if k not in sd]
    if missing:
        raise KdError(f"not an RCAN/HAN state dict: missing {', '.join(missing)} "
                      f"(first keys: {', '.join(list(sd)[:4])})")
    n_feats = int(sd["head.0.weight"].shape[0])
    groups = sorted(int(m.group(1)) for k in sd if (m := _GROUP_KEY.match(k)))
    blocks = sorted(int(m.group(1)) for k in sd if (m := _BLOCK_KEY.match(k)))
    stages = sorted(int(m.group(1)) for k in sd if (m := _UPSAMPLE_KEY.match(k)))
    out_channels = [int(sd[f"tail.0.{i}.weight"].shape[0]) for i in stages]
    factors = []
    for channels in out_channels:
        factor = math.isqrt(channels // n_feats)
        if factor < 2 or factor * factor * n_feats != channels:
            raise KdError(f"RCAN/HAN upsampler conv has {channels} output channels, not n_feats ({n_feats}) times a "
                          "square: the state dict is not an RCAN/HAN checkpoint")
        factors.append(factor)
    convs = ", ".join(f"tail.0.{i}" for i in stages)
    shuffles = " + ".join(f"PixelShuffle({f})" for f in factors)
    info: dict[str, Any] = {
        "arch": "han" if "la.gamma" in sd else "rcan",
        "scale": math.prod(factors),
        "n_resgroups": len(groups),
        "n_resblocks": len(blocks),
        "n_feats": n_feats,
        "reduction": n_feats // int(sd["body.0.body.0.body.3.conv_du.0.weight"].shape[0]),
        "evidence": f"upsampler {convs} {'has' if len(stages) == 1 else 'have'} {out_channels[0]} output channels "
                    f"({n_feats} features -> {shuffles})",
    }
    if prefix:
        info["prefix"] = prefix
    return info


def official_checkpoint_info(state_dict: Mapping[str, Any]) -> str:
    """One line describing an RCAN/HAN checkpoint, e.g. 'RCAN x4, 10 groups x 20 RCABs x 64 feats, ...'."""
    d = describe_state_dict(state_dict)
    text = (f"{d['arch'].upper()} x{d['scale']}, {d['n_resgroups']} groups x {d['n_resblocks']} RCABs x "
            f"{d['n_feats']} feats, reduction {d['reduction']}; {d['evidence']}")
    return text + (f"; keys carry a '{d['prefix']}' prefix" if "prefix" in d else "")


def checkpoint_mismatch(model: nn.Module, state_dict: Mapping[str, Any]) -> str | None:
    """Why `state_dict` does not fit `model` (scale, trunk size, RCAN vs HAN), or None if the layouts agree."""
    d = describe_state_dict(state_dict)
    arch = type(model).__name__.lower()
    want = {"scale": model.scale, "n_resgroups": model.n_resgroups, "n_resblocks": model.n_resblocks,
            "n_feats": model.n_feats, "reduction": model.reduction}
    problems = []
    if d["arch"] != arch:
        problems.append(f"checkpoint is {d['arch'].upper()}, model is {arch.upper()}")
    if d["scale"] != want["scale"]:
        problems.append(f"checkpoint is x{d['scale']}: {d['evidence']}; model is x{want['scale']}")
    for field in ("n_resgroups", "n_resblocks", "n_feats", "reduction"):
        if d[field] != want[field]:
            problems.append(f"checkpoint has {field}={d[field]}, model has {want[field]}")
    if "prefix" in d:
        problems.append(f"checkpoint keys carry a '{d['prefix']}' prefix (saved from DataParallel)")
    return "; ".join(problems) or None


class RCAN(nn.Module):
    """RCAN with the official module names; [0, 1] RGB in and out (unclamped)."""

    TAPS = {
        "head.0": "shallow features (B, n_feats, h, w)",
        "body.[0-9]": "body.0..body.{n_resgroups-1}: residual-group outputs after the group skip; "
                      "body.{n_resgroups}: body-tail conv, before the long skip (B, n_feats, h, w)",
        "body.[0-9][0-9]": "the same for two-digit indices (paper config: body.10 is the body-tail conv)",
        "body.*.body.*.body.3.conv_du.2": "pre-sigmoid channel-attention logits of every RCAB (B, n_feats, 1, 1)",
        "body.*.body.*.body.3.conv_du.3": "channel-attention weights after the sigmoid (B, n_feats, 1, 1)",
    }

    def __init__(self, scale: int = 4, n_resgroups: int = 10, n_resblocks: int = 20, n_feats: int = 64,
                 reduction: int = 16, rgb_range: float = 255.0, ghost_ratio: float = 0.0):
        super().__init__()
        check_trunk_fields(type(self).__name__, n_resgroups, n_resblocks, n_feats, reduction)
        check_ghost_ratio(type(self).__name__, ghost_ratio)
        self.scale = scale
        self.rgb_range = float(rgb_range)
        self.n_resgroups, self.n_resblocks, self.n_feats, self.reduction = n_resgroups, n_resblocks, n_feats, reduction
        self.sub_mean = MeanShift(rgb_range, -1)
        self.add_mean = MeanShift(rgb_range, +1)
        self.head = nn.Sequential(conv3x3(3, n_feats))
        self.body = nn.Sequential(*(ResidualGroup(n_feats, reduction, n_resblocks, ghost_ratio)
                                    for _ in range(n_resgroups)),
                                  conv3x3(n_feats, n_feats))
        self.tail = nn.Sequential(Upsampler(scale, n_feats), conv3x3(n_feats, 3))

    def feature_taps(self) -> list[str]:
        """Concrete names of the residual-group outputs and the body-tail conv, in depth order."""
        return [f"body.{i}" for i in range(self.n_resgroups + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_rgb_batch(x, type(self).__name__)
        shallow = self.head(self.sub_mean(x * self.rgb_range))
        deep = self.body(shallow) + shallow
        return self.add_mean(self.tail(deep)) / self.rgb_range

    describe_state_dict = staticmethod(describe_state_dict)

    def checkpoint_mismatch(self, state_dict: Mapping[str, Any]) -> str | None:
        return checkpoint_mismatch(self, state_dict)


def build_rcan(scale: int, n_resgroups: int = 10, n_resblocks: int = 20, n_feats: int = 64, reduction: int = 16,
               rgb_range: float = 255.0, ghost_ratio: float = 0.0) -> RCAN:
    return RCAN(scale=scale, n_resgroups=n_resgroups, n_resblocks=n_resblocks, n_feats=n_feats,
                reduction=reduction, rgb_range=rgb_range, ghost_ratio=ghost_ratio)


register_model(ModelEntry(
    arch="rcan",
    builder=build_rcan,
    role="teacher",
    family="cnn",
    presets={
        "paper": {"n_resgroups": 10, "n_resblocks": 20, "n_feats": 64, "reduction": 16},
        "mini": {"n_resgroups": 3, "n_resblocks": 4, "n_feats": 48, "reduction": 16},
        "tiny": {"n_resgroups": 2, "n_resblocks": 1, "n_feats": 8, "reduction": 4},
        # The student of FAKD / DUKD / MiPKD / DCKD (5.2M): 10 groups x 6 RCABs (METHODS.md section 1).
        "10x6": {"n_resgroups": 10, "n_resblocks": 6, "n_feats": 64, "reduction": 16},
        # The miniature of that pair (kd/report/miniature.py): `mini`'s groups and width, 1 RCAB of its 4 (20 -> 6).
        "mini_student": {"n_resgroups": 3, "n_resblocks": 1, "n_feats": 48, "reduction": 16},
        # DCKD Table 2's pair in miniature (kd/report/miniature.py, profile `miniature`): the published pair keeps 10
        # groups of 64 channels and cuts 20 RCABs to 6; here 3 groups of 24 channels, 20 -> 6 RCABs, bottleneck 3
        # channels (64 / 16 = 4 published). Whole-network parameters 254,409 / 699,063 = 0.364 (published 0.332).
        "miniature_teacher": {"n_resgroups": 3, "n_resblocks": 20, "n_feats": 24, "reduction": 8},
        "miniature_student": {"n_resgroups": 3, "n_resblocks": 6, "n_feats": 24, "reduction": 8},
        # GhostSR (teachers/ghostsr.py, a reconstruction): `paper` with half of every RCAB conv's outputs shifted.
        "ghost": {"n_resgroups": 10, "n_resblocks": 20, "n_feats": 64, "reduction": 16, "ghost_ratio": 0.5},
    },
    description="RCAN (Zhang et al., ECCV 2018): residual groups of channel-attention blocks; official keys; "
                "ghost = GhostSR shift-ghost RCAB convs (reconstruction)",
))
