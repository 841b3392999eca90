"""HAN: holistic attention network (Niu et al., ECCV 2020; official code `wwlCape/HAN`).

The RCAN trunk (same module names, reused from `teachers/rcan.py`) plus two attention modules, re-implemented from
the reference notes (ARCHITECTURES.md section 4); `state_dict()` keys are exactly the official ones.

    sub_mean -> head -> body.0 .. body.{G} ---------------------------> csa (channel-spatial attention) --+
                          every body output, newest first: (B, G+1, C, h, w) -> la (layer attention)      |
                                                                          -> last_conv ((G+1)C -> C) ----+
    last(cat[csa, last_conv]) + head -> tail -> add_mean

The official code hard-codes `last_conv` to `n_feats*11` input channels (10 groups + body-tail conv); here the
width follows `n_resgroups + 1`, which is the same network for the official 10 groups. The MeanShift convs are
frozen, as in the official `common.py` of HAN. Both attention gammas start at 0, so a fresh HAN is its RCAN trunk.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from kd.models.registry import ModelEntry, register_model
from kd.models.taps import TapPoint
from teachers.rcan import (
    MeanShift,
    ResidualGroup,
    Upsampler,
    check_rgb_batch,
    check_trunk_fields,
    checkpoint_mismatch,
    conv3x3,
    describe_state_dict,
)


class LayerAttention(nn.Module):
    """LAM: an N x N softmax over the correlations of N stacked layer outputs, `gamma * attended + layers`.

    Input (B, N, C, h, w), output (B, N*C, h, w). As in DANet's channel attention, the softmax is taken over
    `max - energy`, so the least correlated layers get the largest weights. `attention` is a tap for the (B, N, N)
    layer-attention matrix.
    """

    def __init__(self):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))
        self.attention = TapPoint()

    def forward(self, layers: torch.Tensor) -> torch.Tensor:
        b, n, c, h, w = layers.shape
        flat = layers.reshape(b, n, c * h * w)
        energy = torch.bmm(flat, flat.transpose(1, 2))
        attention = self.attention(torch.softmax(energy.amax(-1, keepdim=True) - energy, dim=-1))
        attended = torch.bmm(attention, flat).view(b, n, c, h, w)
        return (self.gamma * attended + layers).reshape(b, n * c, h, w)


class ChannelSpatialAttention(nn.Module):
    """CSAM: a 3x3x3 Conv3d over the (C, h, w) volume, sigmoid, times gamma; returns `x * att + x`."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 1, 3, padding=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = self.gamma * torch.sigmoid(self.conv(x.unsqueeze(1))).squeeze(1)
        return x * att + x


class HAN(nn.Module):
    """HAN with the official module names; [0, 1] RGB in and out (unclamped)."""

    body_tail = "last"  # the fused body end before the long skip (kd.methods.pairing)
    TAPS = {
        "head.0": "shallow features (B, n_feats, h, w)",
        "body.[0-9]": "body.0..body.{n_resgroups-1}: residual-group outputs after the group skip; "
                      "body.{n_resgroups}: body-tail conv (B, n_feats, h, w)",
        "body.[0-9][0-9]": "the same for two-digit indices (paper config: body.10 is the body-tail conv)",
        "body.*.body.*.body.3.conv_du.2": "pre-sigmoid channel-attention logits of every RCAB (B, n_feats, 1, 1)",
        "body.*.body.*.body.3.conv_du.3": "channel-attention weights after the sigmoid (B, n_feats, 1, 1)",
        "la": "layer-attention output (B, (n_resgroups+1)*n_feats, h, w); 704 channels in the paper config",
        "la.attention": "layer-attention matrix (B, n_resgroups+1, n_resgroups+1), rows newest layer first",
        "last_conv": "fused layer attention (B, n_feats, h, w)",
        "csa": "channel-spatial attention output (B, n_feats, h, w)",
        "last": "fused body end, before the long skip `+ head` (B, n_feats, h, w)",
    }

    def __init__(self, scale: int = 4, n_resgroups: int = 10, n_resblocks: int = 20, n_feats: int = 64,
                 reduction: int = 16, rgb_range: float = 255.0):
        super().__init__()
        check_trunk_fields(type(self).__name__, n_resgroups, n_resblocks, n_feats, reduction)
        self.scale = scale
        self.rgb_range = float(rgb_range)
        self.n_resgroups, self.n_resblocks, self.n_feats, self.reduction = n_resgroups, n_resblocks, n_feats, reduction
        self.sub_mean = MeanShift(rgb_range, -1)
        self.add_mean = MeanShift(rgb_range, +1)
        for p in (*self.sub_mean.parameters(), *self.add_mean.parameters()):
            p.requires_grad_(False)
        self.head = nn.Sequential(conv3x3(3, n_feats))
        self.body = nn.Sequential(*(ResidualGroup(n_feats, reduction, n_resblocks) for _ in range(n_resgroups)),
                                  conv3x3(n_feats, n_feats))
        self.csa = ChannelSpatialAttention()
        self.la = LayerAttention()
        self.last_conv = conv3x3(n_feats * (n_resgroups + 1), n_feats)
        self.last = conv3x3(2 * n_feats, n_feats)
        self.tail = nn.Sequential(Upsampler(scale, n_feats), conv3x3(n_feats, 3))

    def feature_taps(self) -> list[str]:
        """Concrete names of the residual-group outputs and the body-tail conv, in depth order."""
        return [f"body.{i}" for i in range(self.n_resgroups + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_rgb_batch(x, type(self).__name__)
        shallow = self.head(self.sub_mean(x * self.rgb_range))
        layers = []
        feat = shallow
        for layer in self.body:
            feat = layer(feat)
            layers.append(feat)
        # Newest first: the trained last_conv weights expect body.{G} .. body.0 in this order.
        layered = self.last_conv(self.la(torch.stack(layers[::-1], dim=1)))
        # Concatenation order (CSAM, then LAM) is fixed by the trained `last` weights.
        fused = self.last(torch.cat([self.csa(feat), layered], dim=1)) + shallow
        return self.add_mean(self.tail(fused)) / self.rgb_range

    describe_state_dict = staticmethod(describe_state_dict)

    def checkpoint_mismatch(self, state_dict: Mapping[str, Any]) -> str | None:
        return checkpoint_mismatch(self, state_dict)


def build_han(scale: int, n_resgroups: int = 10, n_resblocks: int = 20, n_feats: int = 64, reduction: int = 16,
              rgb_range: float = 255.0) -> HAN:
    return HAN(scale=scale, n_resgroups=n_resgroups, n_resblocks=n_resblocks, n_feats=n_feats,
               reduction=reduction, rgb_range=rgb_range)


register_model(ModelEntry(
    arch="han",
    builder=build_han,
    role="teacher",
    family="cnn",
    presets={
        "paper": {"n_resgroups": 10, "n_resblocks": 20, "n_feats": 64, "reduction": 16},
        "mini": {"n_resgroups": 3, "n_resblocks": 4, "n_feats": 48, "reduction": 16},
        "tiny": {"n_resgroups": 2, "n_resblocks": 1, "n_feats": 8, "reduction": 4},
    },
    description="HAN (Niu et al., ECCV 2020): RCAN trunk + layer attention + channel-spatial attention; "
                "official keys",
))
