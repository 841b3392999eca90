"""ASID: Attention-Sharing Information Distillation transformer (Park, Soh, Cho, AAAI 2025; arXiv 2501.15774).

A re-implementation of the official `saturnian77/ASID` networks (ASID, 3 blocks; ASIDd8, 8 blocks) whose
`state_dict()` keys and shapes are exactly the official ones, so an official `epoch0_ASID.pth` loads strictly.

Structure (C = num_feat, split = C/4):
    input conv 3x3 -> block0 (computes six window-attention maps a1..a6) -> block1.. (reuse a1..a6)
    -> output conv 3x3 + input -> conv 3x3 (C -> 3 s^2) + PixelShuffle(s)
Every block: IDSA (MBConv, information-distillation split C -> 3C/4 -> C/2 -> C/4 with block (SLA) and grid (SGA)
8x8 single-head attention at each stage, then channel attention BlockC) -> 1x1 conv -> + skip -> ESA.

Interface (kdbench convention): RGB in [0, 1] in and out, unclamped. Internally the official [-1, 1] range is used
and the input is zero-padded right/bottom to a multiple of 8, the output cropped back.

Deliberate implementation choices (outputs equal to the official code within float rounding):
  * window partitions are reshape/permute on channels-last tensors instead of einops;
  * `LayerNorm2d` is `F.layer_norm` on a channels-last view (same formula, eps 1e-6) instead of a custom Function;
  * the network runs in `torch.channels_last` memory format, so the channels-last views are free, and 1x1
    convolutions run as matmuls over those views (`Conv1x1`, same parameters), which is much faster in backward.
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
from kd.models.taps import TapPoint

ATTN_WINDOW = 8  # SLA/SGA window, hard-coded in the official code independently of `window_size`
MIN_LR_SIZE = 9  # ESA's stride-2 conv + 7x7 max-pool need a padded map of at least 16x16


# ---------------------------------------------------------------------------------------------------------------
# Layout helpers. Feature maps are (B, C, H, W) tensors in channels_last memory format, so `.permute(0, 2, 3, 1)`
# is a free, contiguous (B, H, W, C) view.


def _to_nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


def _to_nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)


def _partition(x: torch.Tensor, grid: bool) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/8 * W/8, 64, C) tokens, windows ordered (b, x, y) as the official einops pattern.

    Block partition: 'b (x w1) (y w2) d' (contiguous 8x8 windows). Grid partition: 'b (w1 x) (w2 y) d' (window
    (x, y) holds the pixels x, x + H/8, x + 2H/8, ... i.e. a dilated 8x8 grid).
    """
    b, h, w, c = x.shape
    n, m = h // ATTN_WINDOW, w // ATTN_WINDOW
    if grid:
        x = x.reshape(b, ATTN_WINDOW, n, ATTN_WINDOW, m, c).permute(0, 2, 4, 1, 3, 5)
    else:
        x = x.reshape(b, n, ATTN_WINDOW, m, ATTN_WINDOW, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b * n * m, ATTN_WINDOW * ATTN_WINDOW, c)


def _unpartition(tokens: torch.Tensor, b: int, h: int, w: int, grid: bool) -> torch.Tensor:
    """Inverse of `_partition`: (B * H/8 * W/8, 64, C) -> (B, H, W, C)."""
    c = tokens.shape[-1]
    n, m = h // ATTN_WINDOW, w // ATTN_WINDOW
    x = tokens.reshape(b, n, m, ATTN_WINDOW, ATTN_WINDOW, c)
    if grid:
        x = x.permute(0, 3, 1, 4, 2, 5)
    else:
        x = x.permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def relative_position_index(window: int) -> torch.Tensor:
    """(window^2, window^2) lookup into a (2w-1)^2 bias table: (dr + w-1) * (2w-1) + (dc + w-1), d = pos_i - pos_j."""
    pos = torch.arange(window * window)
    row, col = pos // window, pos % window
    d_row = row[:, None] - row[None, :] + window - 1
    d_col = col[:, None] - col[None, :] + window - 1
    return d_row * (2 * window - 1) + d_col


# ---------------------------------------------------------------------------------------------------------------
# Building blocks


class Conv1x1(nn.Conv2d):
    """A 1x1 convolution (same parameters and keys as `nn.Conv2d`) run as a matmul over a channels-last view.

    Equal to the convolution up to float rounding; on CPU its backward is several times faster than the
    convolution backward for these small channel counts.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _to_nchw(F.linear(_to_nhwc(x), self.weight[:, :, 0, 0], self.bias))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map (official Omni-SR `LayerNorm2d`, eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(_to_nhwc(x), (x.shape[1],), self.weight, self.bias, self.eps)
        return _to_nchw(y)


class GatedConvFeedForward(nn.Module):
    """1x1 C -> 2C, depthwise 3x3, GELU(x1) * x2, 1x1 C -> C; no biases (official `Gated_Conv_FeedForward`)."""

    def __init__(self, dim: int):
        super().__init__()
        self.project_in = Conv1x1(dim, dim * 2, bias=False)
        self.dwconv = nn.Conv2d(dim * 2, dim * 2, 3, padding=1, groups=dim * 2, bias=False)
        self.project_out = Conv1x1(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class SqueezeExcitation(nn.Module):
    def __init__(self, dim: int, shrinkage_rate: float = 0.25):
        super().__init__()
        hidden = int(dim * shrinkage_rate)
        # Indices 1 and 3 are the official key names (gate.1 / gate.3).
        self.gate = nn.Sequential(
            GlobalAvgPool(),
            nn.Linear(dim, hidden, bias=False),
            nn.SiLU(),
            nn.Linear(hidden, dim, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)[:, :, None, None]


class MBConv(nn.Module):
    """Residual MBConv with expansion 1: 1x1, GELU, depthwise 3x3, GELU, SE, 1x1 (+ input)."""

    def __init__(self, dim: int):
        super().__init__()
        self.fn = nn.Sequential(
            Conv1x1(dim, dim),
            nn.GELU(),
            nn.Conv2d(dim, dim, 3, padding=1, groups=dim),
            nn.GELU(),
            SqueezeExcitation(dim),
            Conv1x1(dim, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


class LocalBlock(nn.Module):
    """Official `LB`: a container holding the MBConv as `net`."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = MBConv(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class WindowAttention(nn.Module):
    """Single-head 8x8 window self-attention with a learned relative-position bias (official `SelfAttentionA`).

    Works on partitioned tokens (N, 64, C) and returns (output tokens, post-softmax map (N, 64, 64)).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.scale = dim**-0.5
        self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim, bias=False))
        self.rel_pos_bias = nn.Embedding((2 * ATTN_WINDOW - 1) ** 2, 1)
        self.register_buffer("rel_pos_indices", relative_position_index(ATTN_WINDOW), persistent=False)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, k, v = self.to_qkv(tokens).chunk(3, dim=-1)
        bias = self.rel_pos_bias.weight[:, 0][self.rel_pos_indices]
        attn = torch.baddbmm(bias, q * self.scale, k.transpose(1, 2)).softmax(dim=-1)
        return self.to_out(attn @ v), attn


class SharedWindowAttention(nn.Module):
    """Applies an attention map computed elsewhere (block0) to new values (official `SelfAttentionB`)."""

    def __init__(self, dim: int):
        super().__init__()
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim, bias=False))

    def forward(self, tokens: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        return self.to_out(attn @ self.to_v(tokens))


class SpatialAttentionLayer(nn.Module):
    """Pre-norm window attention + residual, then LayerNorm2d + gated-conv FFN + residual.

    `grid=False` is the official SLA (block windows), `grid=True` the official SGA (dilated grid windows).
    With `shared=False` the layer computes its attention map and returns it; with `shared=True` it takes one.
    """

    def __init__(self, dim: int, grid: bool, shared: bool):
        super().__init__()
        self.grid = grid
        self.shared = shared
        self.norm = nn.LayerNorm(dim)
        self.attn = SharedWindowAttention(dim) if shared else WindowAttention(dim)
        self.cnorm = LayerNorm2d(dim)
        self.gfn = GatedConvFeedForward(dim)

    def forward(self, x: torch.Tensor, attn: torch.Tensor | None = None):
        b, _, h, w = x.shape
        skip = _to_nhwc(x)
        tokens = _partition(self.norm(skip), self.grid)
        if self.shared:
            out = self.attn(tokens, attn)
        else:
            out, attn = self.attn(tokens)
        x = _to_nchw(_unpartition(out, b, h, w, self.grid) + skip)
        x = self.gfn(self.cnorm(x)) + x
        return x if self.shared else (x, attn)


class ChannelAttention(nn.Module):
    """Restormer-style transposed (C x C) attention inside groups of pixels (official `Channel_Attention[_grid]`).

    `grid=False`: each group is one `window x window` window. `grid=True`: each group gathers the pixels at the
    same offset inside every window. q and k are L2-normalised over the group's pixels; one head.
    `attn_logits` (TapPoint) hands out the pre-softmax map temperature * cos(q_i, k_j), shape (B, groups, C, C).
    """

    def __init__(self, dim: int, window: int, grid: bool):
        super().__init__()
        self.window = window
        self.grid = grid
        self.temperature = nn.Parameter(torch.ones(1, 1, 1))
        self.qkv = Conv1x1(dim, dim * 3, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=False)
        self.project_out = Conv1x1(dim, dim, bias=False)
        self.attn_logits = TapPoint()

    def _groups(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, groups, C, pixels); pixels last so that the L2 norms reduce a contiguous dim."""
        b, c, h, w = x.shape
        p = self.window
        x = x.reshape(b, c, h // p, p, w // p, p)
        x = x.permute(0, 3, 5, 1, 2, 4) if self.grid else x.permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, -1, c, (h // p) * (w // p) if self.grid else p * p)

    def _ungroup(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Inverse of `_groups`: (B, groups, C, pixels) -> (B, C, H, W)."""
        b, c, p = x.shape[0], x.shape[2], self.window
        if self.grid:
            x = x.reshape(b, p, p, c, h // p, w // p).permute(0, 3, 4, 1, 5, 2)
        else:
            x = x.reshape(b, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        q, k, v = self._groups(self.qkv_dwconv(self.qkv(x))).chunk(3, dim=2)
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        logits = (q @ k.transpose(-2, -1)) * self.temperature  # (B, groups, C, C)
        if self.attn_logits.active:
            self.attn_logits(logits)
        out = self._ungroup(logits.softmax(dim=-1) @ v, h, w)
        return self.project_out(out.contiguous(memory_format=torch.channels_last))


class ChannelAttentionBlock(nn.Module):
    """Official `TrBlockC`: window channel attention + FFN, then grid channel attention + FFN (all pre-norm)."""

    def __init__(self, dim: int, window: int):
        super().__init__()
        self.canorm1 = LayerNorm2d(dim)
        self.canorm2 = LayerNorm2d(dim)
        self.cttn1 = ChannelAttention(dim, window, grid=False)
        self.cttn2 = ChannelAttention(dim, window, grid=True)
        self.cnorm1 = LayerNorm2d(dim)
        self.cnorm2 = LayerNorm2d(dim)
        self.gfn1 = GatedConvFeedForward(dim)
        self.gfn2 = GatedConvFeedForward(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cttn1(self.canorm1(x)) + x
        x = self.gfn1(self.cnorm1(x)) + x
        x = self.cttn2(self.canorm2(x)) + x
        return self.gfn2(self.cnorm2(x)) + x


class IDSABlock(nn.Module):
    """Information distillation + self-attention block (official `IDSA_Block1` / `IDSA_Block2`).

    The first block (`shared=False`) computes and returns the six attention maps; later blocks take them.
    """

    def __init__(self, dim: int, window: int, shared: bool):
        super().__init__()
        self.split = dim // 4
        self.shared = shared
        d1, d2, d3 = dim // 4 * 3, dim // 2, dim // 4
        self.LB1 = LocalBlock(dim)
        self.LB2 = LocalBlock(d1)
        self.LB3 = LocalBlock(d2)
        self.SLA1 = SpatialAttentionLayer(d1, grid=False, shared=shared)
        self.SLA2 = SpatialAttentionLayer(d2, grid=False, shared=shared)
        self.SLA3 = SpatialAttentionLayer(d3, grid=False, shared=shared)
        self.SGA1 = SpatialAttentionLayer(d1, grid=True, shared=shared)
        self.SGA2 = SpatialAttentionLayer(d2, grid=True, shared=shared)
        self.SGA3 = SpatialAttentionLayer(d3, grid=True, shared=shared)
        self.BlockC = ChannelAttentionBlock(dim, window)
        self.pw1 = Conv1x1(dim, dim)
        self.pw2 = Conv1x1(d1, d1)
        self.pw3 = Conv1x1(dim, dim)

    def _attend(self, layer: SpatialAttentionLayer, x: torch.Tensor, maps: list, i: int) -> torch.Tensor:
        if self.shared:
            return layer(x, maps[i])
        x, attn = layer(x)
        maps.append(attn)
        return x

    def forward(self, x: torch.Tensor, *shared_maps: torch.Tensor):
        s = self.split
        maps = list(shared_maps)
        x = self.LB1(x)
        loc, x = x[:, :s], x[:, s:]
        x = self._attend(self.SLA1, x, maps, 0)
        x = self._attend(self.SGA1, x, maps, 1)
        x = self.pw1(torch.cat((x, loc), 1))
        x1, x = x[:, :s], self.LB2(x[:, s:])
        loc, x = x[:, :s], x[:, s:]
        x = self._attend(self.SLA2, x, maps, 2)
        x = self._attend(self.SGA2, x, maps, 3)
        x = self.pw2(torch.cat((x, loc), 1))
        x2, x = x[:, :s], self.LB3(x[:, s:])
        loc, x = x[:, :s], x[:, s:]
        x = self._attend(self.SLA3, x, maps, 4)
        x = self._attend(self.SGA3, x, maps, 5)
        x = self.BlockC(self.pw3(torch.cat((x1, x2, x, loc), 1)))
        return x if self.shared else (x, *maps)


class ESA(nn.Module):
    """Enhanced spatial attention (Omni-SR variant of RFANet's ESA)."""

    def __init__(self, esa_channels: int, n_feats: int):
        super().__init__()
        f = esa_channels
        self.conv1 = Conv1x1(n_feats, f)
        self.conv_f = Conv1x1(f, f)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2)
        self.conv3 = nn.Conv2d(f, f, 3, padding=1)
        self.conv4 = Conv1x1(f, n_feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = self.conv1(x)
        pooled = F.max_pool2d(self.conv2(c1), kernel_size=7, stride=3)
        c3 = F.interpolate(self.conv3(pooled), size=x.shape[2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.conv4(c3 + self.conv_f(c1)))


class AttentionGroup(nn.Module):
    """Block0 (official `IDSG_A`): IDSA in a 1-element Sequential, 1x1 conv, + skip, ESA; returns (out, a1..a6)."""

    def __init__(self, dim: int, window: int):
        super().__init__()
        # Registration order follows the official class so that state_dict() lists keys in the same order.
        self.res_end = Conv1x1(dim, dim)
        self.residual_layer = nn.Sequential(IDSABlock(dim, window, shared=False))
        self.esa = ESA(max(dim // 4, 16), dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, *maps = self.residual_layer[0](x)
        return (self.esa(self.res_end(out) + x), *maps)


class SharedAttentionGroup(nn.Module):
    """Later blocks (official `IDSG`): IDSA reusing block0's maps, 1x1 conv, + skip, ESA."""

    def __init__(self, dim: int, window: int):
        super().__init__()
        self.residual_layer = IDSABlock(dim, window, shared=True)
        self.res_end = Conv1x1(dim, dim)
        self.esa = ESA(max(dim // 4, 16), dim)

    def forward(self, x: torch.Tensor, *maps: torch.Tensor) -> torch.Tensor:
        return self.esa(self.res_end(self.residual_layer(x, *maps)) + x)


# ---------------------------------------------------------------------------------------------------------------
# Official checkpoints


_BLOCK_KEY = re.compile(r"^block(\d+)\.")


def describe_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """What an (official-layout) ASID state_dict is: scale, width, number of blocks, variant.

    Raises KdError when the keys are not those of an ASID checkpoint.
    """
    for key in ("input.weight", "up.0.weight"):
        if key not in state_dict:
            raise KdError(f"not an ASID checkpoint: key '{key}' is missing")
    up_channels = int(state_dict["up.0.weight"].shape[0])
    scale = math.isqrt(up_channels // 3)
    if 3 * scale * scale != up_channels:
        raise KdError(f"not an ASID checkpoint: upsampler has {up_channels} output channels (expected 3*s^2)")
    blocks = len({int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k))})
    variant = {3: "asid", 8: "asid_d8"}.get(blocks, f"asid with {blocks} blocks")
    return {
        "arch": variant,
        "scale": scale,
        "num_feat": int(state_dict["input.weight"].shape[0]),
        "blocks": blocks,
        "up_channels": up_channels,
    }


def official_checkpoint_info(state_dict: Mapping[str, Any], model: ASID | None = None) -> str:
    """One line describing a checkpoint, and how it differs from `model` when one is given."""
    info = describe_state_dict(state_dict)
    text = (
        f"checkpoint is {info['arch']} x{info['scale']} (C={info['num_feat']}, {info['blocks']} blocks): "
        f"upsampler has {info['up_channels']} output channels"
    )
    if model is None:
        return text
    differences = [
        f"{label} {mine}" if mine != info[key] else ""
        for key, label, mine in (
            ("scale", "scale", model.scale),
            ("num_feat", "num_feat", model.num_feat),
            ("blocks", "blocks", model.num_blocks),
        )
    ]
    differences = [d for d in differences if d]
    if differences:
        text += "; model has " + ", ".join(differences)
    return text


# ---------------------------------------------------------------------------------------------------------------
# Network


SHARED_MAP_NAMES = ("a1", "a2", "a3", "a4", "a5", "a6")


class ASID(nn.Module):
    """ASID (blocks=3) / ASIDd8 (blocks=8). RGB [0, 1] -> RGB [0, 1], unclamped."""

    body_tail = "output"  # the body end before the long skip (kd.methods.pairing)
    TAPS = {
        "input": "shallow feature (B, C, h', w'), also the long-skip residual",
        "block[0-9]": "block outputs (B, C, h', w'); block0 returns (out, a1..a6) and capture keeps out",
        "output": "body end: output conv before + residual (B, C, h', w')",
        "shared_attn.a[1-6]": "block0's shared post-softmax window attention, (B*(h'/8)*(w'/8), 1, 64, 64); "
        "a1/a3/a5 block windows (SLA1..3), a2/a4/a6 grid windows (SGA1..3)",
        "block*.BlockC.cttn[12].attn_logits": "channel attention of every block, PRE-softmax logits "
        "temperature*cos(q_i,k_j), (B, groups, C, C); cttn1: one group per 8x8 window, cttn2: one per in-window offset",
    }

    def __init__(self, scale: int = 4, num_feat: int = 48, blocks: int = 3, window_size: int = 8):
        super().__init__()
        if num_feat % 4 or num_feat < 8:
            raise KdError(f"ASID num_feat must be a multiple of 4 and >= 8 (C/4 split); got {num_feat}")
        if blocks < 1:
            raise KdError(f"ASID blocks must be >= 1; got {blocks}")
        if window_size < 1:
            raise KdError(f"ASID window_size must be >= 1; got {window_size}")
        self.scale = scale
        self.num_feat = num_feat
        self.window_size = window_size
        # The official code pads to `window_size`; the SLA/SGA windows additionally need a multiple of 8.
        self.pad_multiple = math.lcm(window_size, ATTN_WINDOW)
        self.block0 = AttentionGroup(num_feat, window_size)
        for i in range(1, blocks):
            self.add_module(f"block{i}", SharedAttentionGroup(num_feat, window_size))
        self.num_blocks = blocks
        self.input = nn.Conv2d(3, num_feat, 3, padding=1)
        self.output = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.up = nn.Sequential(nn.Conv2d(num_feat, 3 * scale**2, 3, padding=1), nn.PixelShuffle(scale))
        self.shared_attn = nn.ModuleDict({name: TapPoint() for name in SHARED_MAP_NAMES})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise KdError(f"ASID expects an RGB batch (B, 3, h, w) in [0, 1]; got shape {tuple(x.shape)}")
        h, w = x.shape[2:]
        if h < MIN_LR_SIZE or w < MIN_LR_SIZE:
            raise KdError(f"ASID needs an LR input of at least {MIN_LR_SIZE}x{MIN_LR_SIZE} (ESA pooling); got {h}x{w}")
        m = self.pad_multiple
        x = F.pad((x - 0.5) * 2, (0, (m - w % m) % m, 0, (m - h % m) % m))
        x = x.contiguous(memory_format=torch.channels_last)

        residual = self.input(x)
        out, *maps = self.block0(residual)
        for name, attn in zip(SHARED_MAP_NAMES, maps):
            tap = self.shared_attn[name]
            if tap.active:
                tap(attn.unsqueeze(1))
        for i in range(1, self.num_blocks):
            out = getattr(self, f"block{i}")(out, *maps)
        out = self.up(self.output(out) + residual)
        out = out[:, :, : h * self.scale, : w * self.scale]
        return ((out + 1) / 2).contiguous()

    describe_state_dict = staticmethod(describe_state_dict)

    def checkpoint_mismatch(self, state_dict: Mapping[str, Any]) -> str:
        return official_checkpoint_info(state_dict, self)


# ---------------------------------------------------------------------------------------------------------------
# Registry


def build_asid(scale: int, num_feat: int = 48, blocks: int = 3, window_size: int = 8) -> ASID:
    return ASID(scale=scale, num_feat=num_feat, blocks=blocks, window_size=window_size)


_PAPER = {"num_feat": 48, "blocks": 3, "window_size": 8}

register_model(
    ModelEntry(
        arch="asid",
        builder=build_asid,
        role="student",
        presets={
            "paper": _PAPER,
            "mini": _PAPER,  # the CPU protocol trains the real ASID
            "tiny": {"num_feat": 8, "blocks": 2, "window_size": 8},
        },
        description="ASID (AAAI 2025), 3 blocks, C=48: attention computed once in block0 and shared",
        extra={"describe_state_dict": describe_state_dict},
    )
)

register_model(
    ModelEntry(
        arch="asid_d8",
        builder=build_asid,
        role="student",
        presets={
            "paper": {"num_feat": 48, "blocks": 8, "window_size": 8},
            "mini": {"num_feat": 48, "blocks": 8, "window_size": 8},
            "tiny": {"num_feat": 8, "blocks": 2, "window_size": 8},
        },
        description="ASIDd8: the 8-block ASID (same blocks, attention shared by blocks 1..7)",
        aliases=("asidd8",),
        extra={"describe_state_dict": describe_state_dict},
    )
)
