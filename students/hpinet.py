"""HPINet: hierarchical pixel integration (Liu, Chen, Tang, Wu, "From Coarse to Fine: Hierarchical Pixel Integration
for Lightweight Image Super-Resolution", AAAI 2023, arXiv 2211.16776). A lightweight peer of ASID.

Official code: `passerer/HPINet` @ 25d5db1422df50b1671aae6f6ec3a2953fa352c5, `HPINet.py` (no license file).
`HPINet(model_type, upscale)` reads its size from the class attribute `model_settings`; kdbench takes the same fields
(`dim, block_num, qk_dim, mlp_dim, patch_size`) directly, with the official S, M and L as presets `s`, `m`, `l`
(463,131 / 895,659 / 1,435,587 parameters at x4). `paper` is HPINet-M, the size the official repository releases at
x2, x3 and x4 (S and L only at x4); `mini` is HPINet-S, the smallest official size.

Structure (C = dim; block i uses patch size ps_i = patch_size[i], heads fixed at 1):

    first_conv 3x3 -> for each block i:
        patches of ps_i x ps_i on a grid with step ps_i - 2 (overlap 2), the last row/column moved back to end at
        the border; cross_match.i: each patch finds its most similar other patch (LayerNorm of the patch's mean
        feature, scaled dot product, itself excluded); blocks.i: 3 x (PreNorm attention + PreNorm FFN) on the patch's
        ps_i^2 tokens, the first attention taking keys and values from the matched patch (not normalised), the
        other two self-attention; patches summed back into the map; x = x + mid_convs.i(that map)
    -> x4: (upconv1, PixelShuffle(2), LeakyReLU 0.1) x 2 stages (upconv2); x2/x3: upconv + PixelShuffle(s) + LReLU
    -> last_conv 3x3 + bilinear(x s, align_corners=False) upsampling of the input.

Range: RGB in [0, 1] in and out, no mean shift (the official test feeds img / 255); unclamped.

Official checkpoints (`checkpoints/HPINet-{S,M,L}-x{s}.pth`) are raw state dicts saved from DataParallel: every key
carries a `module.` prefix, which `kd.load_official` strips (the keys are otherwise exactly this module's names).
`patch_size` is not stored in a checkpoint: S and M use [12, 16, 20, 24] x 2, L [12, 14, 16, 20, 24] x 2.

Quirks, replicated in evaluation:
  * Matching subtracts 100 from the similarity diagonal (not -inf) to exclude a patch from matching itself, and
    takes the argmax (the first maximum, as `torch.max`).
  * In evaluation the official code indexes the matched patches into the batch's flattened patch list with
    per-image indices (`x.flatten(0, 1)[indices]`), so at batch > 1 every image takes its matched patches from the
    *first* image. The official test and validation run one image at a time, where this is the intended
    computation. kdbench computes that intended computation at every batch size (each image matches within
    itself), so an HPINet teacher's batched forward and a batched evaluation give each image its batch-1 output.
    The official batch behaviour stays reachable for the parity check only: `official_batch_matching=True`
    (the batch-2 parity fixture records it; tests/test_parity.py sets the field for that fixture alone).
  * Overlaps are not averaged: the summed map is halved on every 2-pixel band where consecutive grid patches
    overlap, and on the band [size - ps, last grid start + 2) for the shifted last patch, so where the shifted patch
    also overlaps the patch before its neighbour those pixels are halved twice (weight 3/4 of the sum of three
    patches). `overlap_weights` runs the official loops on a vector, so the rule is literally the same.
  * Inputs must be at least max(patch_size) pixels per side (smaller ones give negative slice starts in the
    official code, which never runs on them); kdbench refuses them with a message naming the size.
  * Training differs from evaluation: officially, matching draws a hard Gumbel-softmax sample (tau = 1) in training
    and `forward(x, target)` returns the L1 loss instead of an image. kdbench's `forward` always returns the image;
    in training mode matching uses the same hard Gumbel-softmax with its straight-through gradient (the one-hot
    sample in the forward pass, the softmax's gradient in the backward pass), so kdbench trains the official
    computation. The Gumbel noise comes from torch's global generator, so a seeded run is reproducible.

Implementation choices (outputs equal to the official code within float rounding): patches are gathered and summed
back with one `index_select` / `index_add` per axis instead of a Python loop over patches; attention runs through
`F.scaled_dot_product_attention` with queries and keys zero-padded to the value width (same scores).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kd.errors import KdError
from kd.models.registry import ModelEntry, register_model
from kd.models.taps import TapPoint
from teachers.rcan import check_rgb_batch

LAYERS_PER_BLOCK = 3  # official Block(num=3)
OVERLAP = 2  # grid step = patch size - 2
SELF_EXCLUSION = 100.0  # subtracted from the similarity diagonal (official value)
UPSAMPLE_SLOPE = 0.1  # LeakyReLU after each pixel shuffle


# --------------------------------------------------------------------------------------------------------------
# Patch grid


@lru_cache(maxsize=64)
def patch_starts(size: int, ps: int) -> tuple[int, ...]:
    """First row (or column) of every patch along one axis: a grid with step ps - 2, the last patch moved back to end
    at the border (official `patch_divide`)."""
    step = ps - OVERLAP
    return tuple(min(i, size - ps) for i in range(0, size + step - ps, step))


@lru_cache(maxsize=64)
def overlap_weights(size: int, ps: int) -> tuple[float, ...]:
    """Per row (or column): the factor the official `patch_reverse` applies to the sum of the patches, i.e. 1/2 for
    every overlap band that contains it (its two loops, run on a vector)."""
    step = ps - OVERLAP
    weights = [1.0] * size
    for i in range(step, size + step - ps, step):
        top = size - ps if i + ps > size else i
        for row in range(top, i + ps - step):
            weights[row] /= 2
    return tuple(weights)


class PatchGrid:
    """The patches of one block for one map size: gather them as tokens and sum them back with the official weights."""

    def __init__(self, height: int, width: int, ps: int, like: torch.Tensor) -> None:
        self.height, self.width, self.ps = height, width, ps
        rows, cols = patch_starts(height, ps), patch_starts(width, ps)
        self.nh, self.nw = len(rows), len(cols)
        offsets = torch.arange(ps)
        self.row_index = (torch.tensor(rows)[:, None] + offsets).flatten().to(like.device)
        self.col_index = (torch.tensor(cols)[:, None] + offsets).flatten().to(like.device)
        row_w = torch.tensor(overlap_weights(height, ps), dtype=like.dtype, device=like.device)
        col_w = torch.tensor(overlap_weights(width, ps), dtype=like.dtype, device=like.device)
        self.weight = row_w[:, None] * col_w[None, :]

    @property
    def count(self) -> int:
        return self.nh * self.nw

    def divide(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, n, ps*ps, C) patch tokens, patches in row-major grid order, pixels row-major."""
        b, c = x.shape[:2]
        ps = self.ps
        grid = x.index_select(2, self.row_index).index_select(3, self.col_index)
        grid = grid.view(b, c, self.nh, ps, self.nw, ps).permute(0, 2, 4, 3, 5, 1)
        return grid.reshape(b, self.count, ps * ps, c)

    def reverse(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, n, ps*ps, C) -> (B, C, H, W): patches summed into place, then the official overlap weights."""
        b, _, _, c = tokens.shape
        ps = self.ps
        grid = tokens.view(b, self.nh, self.nw, ps, ps, c).permute(0, 5, 1, 3, 2, 4)
        grid = grid.reshape(b, c, self.nh * ps, self.nw * ps)
        rows = grid.new_zeros(b, c, self.nh * ps, self.width).index_add(3, self.col_index, grid)
        out = grid.new_zeros(b, c, self.height, self.width).index_add(2, self.row_index, rows)
        return out * self.weight


# --------------------------------------------------------------------------------------------------------------
# Building blocks (official names)


class PreNorm(nn.Module):
    """LayerNorm of the first input only, then `fn` (a cross-attention's key/value source is not normalised)."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor, *args: Any) -> torch.Tensor:
        return self.fn(self.norm(x), *args)


class FFN(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Single-head attention with narrow queries/keys (qk_dim); keys and values from `y` when given."""

    def __init__(self, dim: int, qk_dim: int) -> None:
        super().__init__()
        self.scale = qk_dim ** -0.5
        self.to_q = nn.Linear(dim, qk_dim, bias=False)
        self.to_k = nn.Linear(dim, qk_dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        source = x if y is None else y
        q, k, v = self.to_q(x), self.to_k(source), self.to_v(source)
        # Zero channels appended to queries and keys leave every q.k unchanged; at equal widths SDPA runs its fused
        # CPU kernel (about 2x faster than an explicit softmax for 24x24 patches) instead of a slower fallback.
        width = max(q.shape[-1], v.shape[-1])
        q, k, v = (F.pad(t, (0, width - t.shape[-1])).unsqueeze(1) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale).squeeze(1)
        return out[..., : self.to_v.out_features]


class Block(nn.Module):
    """Three PreNorm attention + FFN layers on the tokens of each patch; the first attends to the matched patch."""

    def __init__(self, dim: int, qk_dim: int, mlp_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([PreNorm(dim, Attention(dim, qk_dim)), PreNorm(dim, FFN(dim, mlp_dim))])
            for _ in range(LAYERS_PER_BLOCK)
        )

    def forward(self, x: torch.Tensor, matched: torch.Tensor) -> torch.Tensor:
        """x, matched: (B * n, ps*ps, C) tokens."""
        for i, (attn, ff) in enumerate(self.layers):
            x = (attn(x, matched) if i == 0 else attn(x)) + x
            x = ff(x) + x
        return x


class Match(nn.Module):
    """For every patch, the most similar other patch of the same image (LayerNorm of patch means, dot product).
    `official_batch_matching`: in evaluation, take every image's matches from the first image of the batch, as the
    official code does at batch > 1 (for the parity fixture only; see the module docstring)."""

    def __init__(self, dim: int, official_batch_matching: bool = False) -> None:
        super().__init__()
        self.scale = dim ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.official_batch_matching = official_batch_matching

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, n, ps*ps, C) -> the matched patch of each, same shape. Hard Gumbel-softmax (straight-through) in
        training, argmax in evaluation, both as the official code (see the module docstring for the batch quirk)."""
        b, n = patches.shape[:2]
        q = self.norm(patches.mean(dim=2))  # (B, n, C)
        similarity = torch.matmul(q, q.transpose(-1, -2)) * self.scale
        similarity = similarity - SELF_EXCLUSION * torch.eye(n, dtype=similarity.dtype, device=similarity.device)
        if self.training:
            choice = F.gumbel_softmax(similarity, tau=1.0, hard=True, dim=-1)  # global RNG: seeded runs repeat
            return torch.matmul(choice, patches.flatten(2)).view_as(patches)
        index = torch.max(similarity, dim=-1).indices  # (B, n), per image
        if self.official_batch_matching:
            return patches[0, index]  # every image takes its matches from the first one
        return patches[torch.arange(b, device=index.device)[:, None], index]


# --------------------------------------------------------------------------------------------------------------
# The network


class HPINet(nn.Module):
    """HPINet with the official module names; [0, 1] RGB in and out (unclamped)."""

    body_prefix = "stages."  # kd.methods.pairing: the body stages (the last is also the body tail)
    TAPS = {
        "first_conv": "shallow features (B, dim, h, w)",
        "stages.?": "feature map after each block, x + mid_convs.i(...) (B, dim, h, w); the last one feeds the "
        "upsampler",
        "mid_convs.?": "each block's residual map, after its 3x3 conv (B, dim, h, w)",
    }

    def __init__(self, scale: int, dim: int, block_num: int, qk_dim: int, mlp_dim: int,
                 patch_size: Sequence[int], official_batch_matching: bool = False) -> None:
        super().__init__()
        patch_size = [int(p) for p in patch_size]
        checks = [
            (scale in (2, 3, 4), f"scale must be 2, 3 or 4, got {scale}"),
            (min(dim, block_num, qk_dim, mlp_dim) >= 1,
             f"dim, block_num, qk_dim and mlp_dim must be positive, got {dim}, {block_num}, {qk_dim}, {mlp_dim}"),
            (len(patch_size) == block_num,
             f"patch_size needs one entry per block ({block_num}), got {len(patch_size)}: {patch_size}"),
            (all(p > OVERLAP for p in patch_size), f"every patch_size must exceed {OVERLAP}, got {patch_size}"),
            (isinstance(official_batch_matching, bool),
             f"official_batch_matching must be true or false, got {official_batch_matching!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise KdError(f"HPINet config: {message}.")
        self.scale, self.patch_size = scale, patch_size
        self.min_input_size = max(patch_size)
        self.first_conv = nn.Conv2d(3, dim, 3, 1, 1)
        self.cross_match = nn.ModuleList(Match(dim, official_batch_matching) for _ in range(block_num))
        self.blocks = nn.ModuleList(Block(dim, qk_dim, mlp_dim) for _ in range(block_num))
        self.mid_convs = nn.ModuleList(nn.Conv2d(dim, dim, 3, 1, 1) for _ in range(block_num))
        self.stages = nn.ModuleList(TapPoint() for _ in range(block_num))
        if scale == 4:
            self.upconv1 = nn.Conv2d(dim, dim * 4, 3, 1, 1)
            self.upconv2 = nn.Conv2d(dim, dim * 4, 3, 1, 1)
            self.pixel_shuffle = nn.PixelShuffle(2)
        else:
            self.upconv = nn.Conv2d(dim, dim * scale * scale, 3, 1, 1)
            self.pixel_shuffle = nn.PixelShuffle(scale)
        self.last_conv = nn.Conv2d(dim, 3, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(UPSAMPLE_SLOPE, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_rgb_batch(x, "HPINet")
        h, w = x.shape[2:]
        if min(h, w) < self.min_input_size:
            raise KdError(f"HPINet input {h}x{w} is smaller than its largest patch ({self.min_input_size} pixels); "
                          f"use inputs of at least {self.min_input_size}x{self.min_input_size} (e.g. train.lr_patch).")
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        x = self.first_conv(x)
        grids: dict[int, PatchGrid] = {}
        for i, ps in enumerate(self.patch_size):
            if ps not in grids:
                grids[ps] = PatchGrid(h, w, ps, x)
            grid = grids[ps]
            patches = grid.divide(x)
            matched = self.cross_match[i](patches)
            tokens = self.blocks[i](patches.flatten(0, 1), matched.flatten(0, 1)).view_as(patches)
            x = self.stages[i](x + self.mid_convs[i](grid.reverse(tokens)))
        if self.scale == 4:
            out = self.lrelu(self.pixel_shuffle(self.upconv1(x)))
            out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))
        else:
            out = self.lrelu(self.pixel_shuffle(self.upconv(x)))
        return base + self.last_conv(out)


# --------------------------------------------------------------------------------------------------------------
# Official checkpoints and registry

# The official `HPINet.model_settings`.
MODEL_SETTINGS = {
    "S": {"dim": 40, "block_num": 8, "qk_dim": 24, "mlp_dim": 72, "patch_size": [12, 16, 20, 24] * 2},
    "M": {"dim": 56, "block_num": 8, "qk_dim": 32, "mlp_dim": 100, "patch_size": [12, 16, 20, 24] * 2},
    "L": {"dim": 64, "block_num": 10, "qk_dim": 36, "mlp_dim": 128, "patch_size": [12, 14, 16, 20, 24] * 2},
}


def describe_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """What an HPINet state dict is: scale (read off the upsampler), dim, block_num, qk_dim, mlp_dim, the official
    size it matches (`model_type`, or None) and `evidence`. A `module.` prefix is reported as `prefix` and ignored."""
    prefix = "module." if state_dict and all(k.startswith("module.") for k in state_dict) else ""
    sd = {k[len(prefix):]: v for k, v in state_dict.items()}
    if "first_conv.weight" not in sd or "blocks.0.layers.0.0.fn.to_q.weight" not in sd:
        raise KdError("state dict is not an HPINet checkpoint (no first_conv / blocks.0 attention weights).")
    dim = int(sd["first_conv.weight"].shape[0])
    if "upconv1.weight" in sd:
        scale, evidence = 4, "upsampler has two x2 stages (upconv1, upconv2)"
    else:
        channels = int(sd["upconv.weight"].shape[0])
        scale = math.isqrt(channels // dim)
        evidence = f"upsampler upconv has {channels} output channels ({dim} features x {scale}^2)"
    info: dict[str, Any] = {
        "scale": scale,
        "dim": dim,
        "block_num": sum(1 for k in sd if k.startswith("mid_convs.") and k.endswith(".weight")),
        "qk_dim": int(sd["blocks.0.layers.0.0.fn.to_q.weight"].shape[0]),
        "mlp_dim": int(sd["blocks.0.layers.0.1.fn.fc1.weight"].shape[0]),
        "evidence": evidence,
    }
    info["model_type"] = next((name for name, s in MODEL_SETTINGS.items()
                               if all(s[k] == info[k] for k in ("dim", "block_num", "qk_dim", "mlp_dim"))), None)
    if prefix:
        info["prefix"] = prefix
    return info


def build_hpinet(scale: int, dim: int, block_num: int, qk_dim: int, mlp_dim: int,
                 patch_size: Sequence[int], official_batch_matching: bool = False) -> HPINet:
    return HPINet(scale=scale, dim=dim, block_num=block_num, qk_dim=qk_dim, mlp_dim=mlp_dim, patch_size=patch_size,
                  official_batch_matching=official_batch_matching)


register_model(
    ModelEntry(
        arch="hpinet",
        builder=build_hpinet,
        role="student",
        presets={
            "paper": MODEL_SETTINGS["M"],
            "mini": MODEL_SETTINGS["S"],
            # Patches of at most 12 pixels, so that the 12- and 16-pixel inputs of tests and smoke runs fit.
            "tiny": {"dim": 8, "block_num": 2, "qk_dim": 4, "mlp_dim": 12, "patch_size": [8, 12]},
            "s": MODEL_SETTINGS["S"],
            "m": MODEL_SETTINGS["M"],
            "l": MODEL_SETTINGS["L"],
        },
        description="HPINet (AAAI 2023): patch matching + patch attention, a lightweight peer; paper = HPINet-M; "
        "official files carry a 'module.' prefix, stripped on loading",
    )
)
