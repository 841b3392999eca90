"""EMSRDPN: efficient multi-scale super-resolution dual path network (Yang & Wu, "Efficient Single-Image
Super-Resolution Using Dual Path Connections with Multiple Scale Learning", ACM TOMM 19(3) 2023; official code
`yangbincheng/EMSRDPN` @ 60be9f9f82815ad84f0b7c1971479f6807654201, `src/model/emsrdpn.py`, MIT). Written from the
paper and the official model's structure (SEED_NETWORKS.md section 6); module names, and therefore `state_dict()`
keys, are the official ones, so its checkpoints load strictly without a key map.

    SFENet1 (k x k) -> SFENet2 (k x k) -> SRDPBs.0 .. SRDPBs.{D-1} -> transition (1x1 over the concat of every
    block's output, then k x k) -> + SFENet1 output -> upsample.{i} -> tail.{i}          (all in LR space)

A dual path block (`SRDPBs.d`) is C dual path units then a 1x1 `dpb_transition` back to Gr + Gd channels (no
block skip). A unit (`convs.c`) reads a map whose first Gr channels are the residual path and the rest the dense
path: ReLU -> 1x1 -> ReLU -> 3x3 gives Gr + G channels; the first Gr are added to the residual path and the other
G are concatenated to the dense path **before** the old dense features (`cat[new, old]`, the order the trained
weights expect; swapping it changes the fixture output by 3-4e-2). Unit convs are always 3x3; `SRDPNkSize` applies
to SFENet, transition and tail only.

Fields are the official attribute names: `Gr`, `Gd`, `D`, `C`, `G` (the official `SRDPNconfig` 'A' is
Gr 64, Gd 64, D 16, C 4, G 64; 'B' 135, 0, 16, 4, 0; 'C' 0, 122, 16, 4, 122), `SRDPNkSize`, `n_colors` and `scales`
(the official `args.scale` list: one upsample/tail head per entry, in that order). As for MDSR
(`teachers/mdsr.py`), `create("emsrdpn", scale=4, scales=[2, 3, 4, 8])` builds every head with the x4 head
selected (official `set_scale(scales.index(4))`), `scales=None` the single head of `scale`, and the heads of the
other scales are frozen. Presets: `paper` is config A with the x2/x3/x4/x8 heads that the README and demo.sh
train (17,522,188 parameters, the figure of SEED_NETWORKS.md section 11); `single` is config A with one head
(13,822,211 at x4); `mini` and `tiny` are single-head sizes for CPU runs and tests. The official
`multi_scale_infer` (every head at once, a list of outputs) is not offered: kdbench networks return one image.

Range: the official network has no mean shift and no image-level skip and works on [0, 255] (EDSR framework,
`rgb_range` 255); `forward` maps kdbench's [0, 1] interface in and out, unclamped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from kd.errors import KdError
from kd.models.fields import check_rgb
from kd.models.registry import ModelEntry, register_model
from teachers.mdsr import branch_evidence, branch_scales, check_scales, freeze_other_branches
from teachers.rcan import Upsampler, check_rgb_batch


def conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2)


class DualPathUnit(nn.Module):
    """Official `SRDPU`: [residual Gr | dense] -> [residual + new residual | new dense G | old dense]."""

    def __init__(self, in_channels: int, Gr: int, G: int):  # noqa: N803 - official names
        super().__init__()
        self.Gr = Gr
        self.dpb_conv = nn.Sequential(nn.ReLU(), conv(in_channels, Gr + G, 1), nn.ReLU(), conv(Gr + G, Gr + G, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.dpb_conv(x)
        return torch.cat([x[:, :self.Gr] + new[:, :self.Gr], new[:, self.Gr:], x[:, self.Gr:]], dim=1)


class DualPathBlock(nn.Module):
    """Official `SRDPB`: C dual path units, then a 1x1 conv back to Gr + Gd channels (`dpb_transition.0`)."""

    def __init__(self, Gr: int, Gd: int, C: int, G: int):  # noqa: N803 - official names
        super().__init__()
        self.convs = nn.Sequential(*(DualPathUnit(Gr + Gd + c * G, Gr, G) for c in range(C)))
        self.dpb_transition = nn.Sequential(conv(Gr + Gd + C * G, Gr + Gd, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dpb_transition(self.convs(x))


class EMSRDPN(nn.Module):
    """EMSRDPN with the official module names and the head of `scale` selected; [0, 1] RGB in and out."""

    body_prefix = "SRDPBs."
    body_tail = "transition"
    TAPS = {
        "SFENet1.0": "shallow features, the long skip's source (B, Gr+Gd, h, w)",
        "SRDPBs.[0-9]": "dual path block outputs (B, Gr+Gd, h, w)",
        "SRDPBs.[0-9][0-9]": "the same for two-digit indices (paper config: SRDPBs.10..SRDPBs.15)",
        "transition": "fused block outputs, before the long skip (B, Gr+Gd, h, w)",
    }

    def __init__(self, scale: int, scales: Sequence[int] | None, Gr: int, Gd: int, D: int, C: int, G: int,  # noqa: N803
                 SRDPNkSize: int, n_colors: int, rgb_range: float):  # noqa: N803
        super().__init__()
        for name, value in (("Gr", Gr), ("Gd", Gd), ("G", G), ("D", D), ("C", C), ("SRDPNkSize", SRDPNkSize)):
            low = 1 if name in ("D", "C", "SRDPNkSize") else 0
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise KdError(f"EMSRDPN: field '{name}' must be an integer >= {low}; got {value!r}")
        if Gr + Gd < 1 or Gr + G < 1:
            raise KdError(f"EMSRDPN: fields 'Gr' + 'Gd' and 'Gr' + 'G' must each be at least 1; got Gr {Gr}, "
                          f"Gd {Gd}, G {G}")
        if SRDPNkSize % 2 == 0:
            raise KdError(f"EMSRDPN: field 'SRDPNkSize' must be odd (same-size convolutions); got {SRDPNkSize}")
        check_rgb("EMSRDPN", n_colors)
        self.scales = check_scales("EMSRDPN", scale, scales)
        self.scale, self.branch, self.rgb_range = scale, self.scales.index(scale), float(rgb_range)
        width = Gr + Gd
        self.SFENet1 = nn.Sequential(conv(3, width, SRDPNkSize))
        self.SFENet2 = nn.Sequential(conv(width, width, SRDPNkSize))
        self.SRDPBs = nn.ModuleList(DualPathBlock(Gr, Gd, C, G) for _ in range(D))
        self.transition = nn.Sequential(conv(D * width, width, 1), conv(width, width, SRDPNkSize))
        self.upsample = nn.ModuleList(Upsampler(s, width) for s in self.scales)
        self.tail = nn.ModuleList(conv(width, 3, SRDPNkSize) for _ in self.scales)
        freeze_other_branches(self.upsample, self.branch)
        freeze_other_branches(self.tail, self.branch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_rgb_batch(x, "EMSRDPN")
        shallow = self.SFENet1(x * self.rgb_range)
        feat = self.SFENet2(shallow)
        outputs = []
        for block in self.SRDPBs:
            feat = block(feat)
            outputs.append(feat)
        deep = self.transition(torch.cat(outputs, dim=1)) + shallow
        return self.tail[self.branch](self.upsample[self.branch](deep)) / self.rgb_range


_UNIT_KEY = re.compile(r"^SRDPBs\.0\.convs\.(\d+)\.dpb_conv\.1\.weight$")
_BLOCK_KEY = re.compile(r"^SRDPBs\.(\d+)\.dpb_transition\.0\.weight$")


def describe_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """What an EMSRDPN state dict is: head scales (read off the upsamplers; `scale` too for one head), the
    official config fields and `evidence`."""
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    required = ("SFENet1.0.weight", "SRDPBs.0.convs.0.dpb_conv.1.weight", "SRDPBs.0.dpb_transition.0.weight",
                "upsample.0.0.weight")
    missing = [k for k in required if k not in sd]
    if missing:
        raise KdError(f"not an EMSRDPN state dict: missing {', '.join(missing)}")
    width = int(sd["SFENet1.0.weight"].shape[0])
    units = sum(1 for k in sd if _UNIT_KEY.match(k))
    grow = (int(sd["SRDPBs.0.dpb_transition.0.weight"].shape[1]) - width) // units  # in: Gr + Gd + C * G
    residual = int(sd["SRDPBs.0.convs.0.dpb_conv.1.weight"].shape[0]) - grow  # out: Gr + G
    scales = branch_scales(sd, "upsample.", width)
    info: dict[str, Any] = {"arch": "emsrdpn", "scales": scales}
    if len(scales) == 1:
        info["scale"] = scales[0]
    info.update(Gr=residual, Gd=width - residual, D=sum(1 for k in sd if _BLOCK_KEY.match(k)), C=units, G=grow,
                SRDPNkSize=int(sd["SFENet1.0.weight"].shape[-1]), evidence=branch_evidence(scales, "upsample."))
    return info


def build_emsrdpn(scale: int, scales: Sequence[int] | None = (2, 3, 4, 8), Gr: int = 64, Gd: int = 64,  # noqa: N803
                  D: int = 16, C: int = 4, G: int = 64, SRDPNkSize: int = 3, n_colors: int = 3,  # noqa: N803
                  rgb_range: float = 255.0) -> EMSRDPN:
    return EMSRDPN(scale=scale, scales=scales, Gr=Gr, Gd=Gd, D=D, C=C, G=G, SRDPNkSize=SRDPNkSize, n_colors=n_colors,
                   rgb_range=rgb_range)


EMSRDPN.describe_state_dict = staticmethod(describe_state_dict)

CONFIG_A = {"Gr": 64, "Gd": 64, "D": 16, "C": 4, "G": 64}

register_model(ModelEntry(
    arch="emsrdpn",
    builder=build_emsrdpn,
    role="teacher",
    family="cnn",
    presets={
        "paper": {"scales": [2, 3, 4, 8], **CONFIG_A},
        "single": {"scales": None, **CONFIG_A},
        "mini": {"scales": None, "Gr": 24, "Gd": 24, "D": 6, "C": 3, "G": 24},
        "tiny": {"scales": None, "Gr": 4, "Gd": 4, "D": 2, "C": 2, "G": 4},
    },
    scales=(2, 3, 4, 8),
    description="EMSRDPN (Yang & Wu, TOMM 2023): dual path (residual + dense) blocks in LR space, one head per "
                "scale; paper = config A with x2/x3/x4/x8 heads; official keys",
))
