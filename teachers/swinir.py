"""SwinIR (Liang et al., "SwinIR: Image Restoration Using Swin Transformer", ICCVW 2021).

Classical SR ("SwinIR-M": embed 180, 6 RSTBs of 6 Swin blocks, 64-channel pixel-shuffle reconstruction) and
lightweight SR ("SwinIR-S": embed 60, 4 RSTBs, one conv + pixel shuffle). State-dict keys and shapes are those of
the official `JingyunLiang/SwinIR` code, buffers included (`relative_position_index`, and `attn_mask` sized for the
training patch `img_size`), so an official `{'params': ...}` checkpoint loads strictly after unwrapping.

Interface: RGB in [0, 1] in, RGB in [0, 1] out (unclamped). Inside `forward`, as the official code does: reflect
padding (right/bottom) to a multiple of the window, mean subtraction (a plain tensor, not in the state dict),
`img_range` scaling, and a crop of the output.

Masks for shifted windows are taken from the `attn_mask` buffer when the padded input has the training size, as in
the official code, and otherwise computed once per size and kept in a small cache shared by all blocks.
Attention runs through `F.scaled_dot_product_attention` with the relative-position bias and the mask folded into one
additive float mask; while an attention-map tap is attached the explicit softmax path runs instead.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kd.errors import KdError
from kd.models.registry import ModelEntry, register_model
from kd.models.taps import TapPoint

RGB_MEAN = (0.4488, 0.4371, 0.4040)
MASK_VALUE = -100.0  # the official code masks with -100, not -inf; kept for parity
RECONSTRUCTION_FEATURES = 64  # width of the classical ("pixelshuffle") reconstruction head, fixed in the official code
VARIANTS = ("classical", "lightweight")
UPSAMPLERS = ("pixelshuffle", "pixelshuffledirect")
RESI_CONNECTIONS = ("1conv", "3conv")


@dataclass(frozen=True)
class SwinIRConfig:
    scale: int = 4
    variant: str = "classical"
    img_size: int = 48
    window_size: int = 8
    embed_dim: int = 180
    depths: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    num_heads: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    mlp_ratio: float = 2.0
    upsampler: str = "pixelshuffle"
    resi_connection: str = "1conv"
    img_range: float = 1.0
    # The official code fixes it at 64; a miniature narrows it with the body so that a pair's parameter ratio stays
    # that of the published pair (the 64-channel head alone is ~0.3M parameters at x4).
    num_feat: int = RECONSTRUCTION_FEATURES
    drop_path_rate: float = 0.1  # official default; stochastic depth is active only in train mode

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "num_heads", tuple(int(h) for h in self.num_heads))
        checks = [
            (self.variant in VARIANTS, f"variant must be one of {VARIANTS}, got {self.variant!r}"),
            (self.upsampler in UPSAMPLERS, f"upsampler must be one of {UPSAMPLERS}, got {self.upsampler!r}"),
            (
                self.resi_connection in RESI_CONNECTIONS,
                f"resi_connection must be one of {RESI_CONNECTIONS}, got {self.resi_connection!r}",
            ),
            (self.scale in (2, 3, 4), f"scale must be 2, 3 or 4, got {self.scale}"),
            (len(self.depths) > 0 and min(self.depths) > 0, f"depths must be positive, got {list(self.depths)}"),
            (
                len(self.depths) == len(self.num_heads),
                f"depths {list(self.depths)} and num_heads {list(self.num_heads)} must have the same length",
            ),
            (
                all(h > 0 and self.embed_dim % h == 0 for h in self.num_heads),
                f"embed_dim {self.embed_dim} must be divisible by every num_heads entry {list(self.num_heads)}",
            ),
            (
                0 < self.window_size <= self.img_size,
                f"img_size ({self.img_size}) must be at least window_size ({self.window_size})",
            ),
            (self.img_range > 0 and self.mlp_ratio > 0, "img_range and mlp_ratio must be positive"),
            (isinstance(self.num_feat, int) and self.num_feat > 0, f"num_feat must be a positive integer, got "
             f"{self.num_feat!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise KdError(f"SwinIR config: {message}.")


# --------------------------------------------------------------------------------------------------------------
# Window helpers


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, window * window, C), windows in row-major order within each image."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of `window_partition`: (B * nW, window * window, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def relative_position_index(window: int) -> torch.Tensor:
    """(N, N) int64 index into the ((2w - 1)^2, heads) bias table, N = window^2 (official layout)."""
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([rows.flatten(), cols.flatten()])  # (2, N)
    delta = coords[:, :, None] - coords[:, None, :] + (window - 1)  # (2, N, N), shifted to start at 0
    return delta[0] * (2 * window - 1) + delta[1]


def shifted_window_mask(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    """(nW, N, N) additive mask for a cyclically shifted (h, w) map: 0 within a region, -100 across regions.

    After the roll, the last `window` rows/columns hold pixels from up to three unrelated regions (split at
    `window` and `shift` from the end); tokens of different regions must not attend to each other.
    """
    rows, cols = torch.arange(h), torch.arange(w)
    row_region = (rows >= h - window).long() + (rows >= h - shift).long()
    col_region = (cols >= w - window).long() + (cols >= w - shift).long()
    labels = (row_region[:, None] * 3 + col_region[None, :]).float()
    labels = window_partition(labels.view(1, h, w, 1), window).squeeze(-1)  # (nW, N)
    different = labels[:, None, :] != labels[:, :, None]
    return torch.zeros(different.shape).masked_fill(different, MASK_VALUE)


class ShiftMaskCache:
    """Masks for input sizes other than the training size, computed once per (size, device, dtype), shared by blocks.

    Bounded (least recently used first out) so that evaluating many image sizes does not grow memory without end.
    """

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = max_entries
        self._masks: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    def get(self, h: int, w: int, window: int, shift: int, like: torch.Tensor) -> torch.Tensor:
        key = (h, w, window, shift, like.device, like.dtype)
        mask = self._masks.get(key)
        if mask is None:
            mask = shifted_window_mask(h, w, window, shift).to(device=like.device, dtype=like.dtype)
            self._masks[key] = mask
            while len(self._masks) > self.max_entries:
                self._masks.popitem(last=False)
        else:
            self._masks.move_to_end(key)
        return mask


# --------------------------------------------------------------------------------------------------------------
# Building blocks


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval mode)."""

    def __init__(self, prob: float = 0.0) -> None:
        super().__init__()
        self.prob = prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative-position bias.

    `attn_map` is a TapPoint receiving softmax maps (B * nW, heads, N, N) when a hook listens.
    """

    def __init__(self, dim: int, window: int, num_heads: int) -> None:
        super().__init__()
        self.dim, self.window, self.num_heads = dim, window, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.attn_map = TapPoint()
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self) -> torch.Tensor:
        n = self.window * self.window
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)  # (heads, N, N)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B * nW, N, C); mask: (nW, N, N) additive, or None."""
        windows, n, c = x.shape
        heads = self.num_heads
        bias = self.relative_position_bias().unsqueeze(0)  # (1, heads, N, N)
        groups = 1
        if mask is not None:
            groups = mask.shape[0]  # windows per image: fold them into the head axis so one mask serves the batch
            bias = bias + mask.unsqueeze(1)  # (nW, heads, N, N)
        bias = bias.reshape(1, groups * heads, n, n).to(x.dtype)
        qkv = self.qkv(x).view(windows // groups, groups, n, 3, heads, c // heads)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).reshape(3, windows // groups, groups * heads, n, c // heads)
        if self.attn_map.active:
            attn = torch.softmax((q * self.scale) @ k.transpose(-2, -1) + bias, dim=-1)
            attn = self.attn_map(attn.view(windows, heads, n, n))
            out = attn.view(windows // groups, groups * heads, n, n) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        out = out.view(windows, heads, n, c // heads).transpose(1, 2).reshape(windows, n, c)
        return self.proj(out)


class SwinTransformerBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        num_heads: int,
        window: int,
        shift: int,
        mlp_ratio: float,
        drop_path: float,
        mask_cache: ShiftMaskCache,
    ) -> None:
        super().__init__()
        if min(input_resolution) <= window:  # official rule: a single window covers the image, no shift
            window, shift = min(input_resolution), 0
        self.input_resolution, self.window, self.shift = tuple(input_resolution), window, shift
        self.mask_cache = mask_cache
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        mask = shifted_window_mask(*self.input_resolution, window, shift) if shift else None
        self.register_buffer("attn_mask", mask)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        h, w = x_size
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        mask = None
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
            if tuple(x_size) == self.input_resolution:
                mask = self.attn_mask  # the (possibly loaded) buffer, as the official code uses it
            else:
                mask = self.mask_cache.get(h, w, self.window, self.shift, like=y)
        y = window_reverse(self.attn(window_partition(y, self.window), mask), self.window, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + self.drop_path(y.reshape(b, h * w, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class BasicLayer(nn.Module):
    """A sequence of Swin blocks alternating plain and shifted windows (official name: `residual_group`)."""

    def __init__(self, dim, input_resolution, depth, num_heads, window, mlp_ratio, drop_path, mask_cache) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim, input_resolution, num_heads, window, 0 if j % 2 == 0 else window // 2, mlp_ratio,
                drop_path[j], mask_cache,
            )
            for j in range(depth)
        )

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, x_size)
        return x


def _tokens_to_map(x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
    b, _, c = x.shape
    return x.transpose(1, 2).reshape(b, c, *x_size)


def _map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)


def _residual_conv(dim: int, kind: str) -> nn.Module:
    if kind == "1conv":
        return nn.Conv2d(dim, dim, 3, 1, 1)
    return nn.Sequential(  # '3conv': bottleneck to dim / 4 to save parameters
        nn.Conv2d(dim, dim // 4, 3, 1, 1),
        nn.LeakyReLU(negative_slope=0.2, inplace=True),
        nn.Conv2d(dim // 4, dim // 4, 1, 1, 0),
        nn.LeakyReLU(negative_slope=0.2, inplace=True),
        nn.Conv2d(dim // 4, dim, 3, 1, 1),
    )


class RSTB(nn.Module):
    """Residual Swin Transformer Block: Swin blocks, a conv on the feature map, and a skip connection."""

    def __init__(self, dim, input_resolution, depth, num_heads, window, mlp_ratio, drop_path, resi_connection,
                 mask_cache) -> None:
        super().__init__()
        self.residual_group = BasicLayer(
            dim, input_resolution, depth, num_heads, window, mlp_ratio, drop_path, mask_cache
        )
        self.conv = _residual_conv(dim, resi_connection)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        y = self.conv(_tokens_to_map(self.residual_group(x, x_size), x_size))
        return _map_to_tokens(y) + x


class PatchEmbed(nn.Module):
    """Feature map -> tokens, then LayerNorm (patch size 1; official name `patch_embed.norm`)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(_map_to_tokens(x))


def _pixelshuffle_upsampler(scale: int, features: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    if scale == 3:
        layers += [nn.Conv2d(features, 9 * features, 3, 1, 1), nn.PixelShuffle(3)]
    else:
        for _ in range(int(math.log2(scale))):
            layers += [nn.Conv2d(features, 4 * features, 3, 1, 1), nn.PixelShuffle(2)]
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------------------------
# The network


class SwinIR(nn.Module):
    body_tail = "conv_after_body"  # the body end before the long skip (kd.methods.pairing)
    TAPS = {
        "conv_first": "shallow features (B, C, h', w'), C = embed_dim",
        "layers.?": "RSTB outputs, tokens delivered as (B, C, h', w') maps (h', w' = LR size padded to the window)",
        "conv_after_body": "body tail conv before the long skip (B, C, h', w')",
        "layers.*.residual_group.blocks.*.attn.attn_map": "window-attention softmax maps (B * nW, heads, N, N), "
        "N = window^2; odd blocks use shifted (masked) windows",
    }

    def __init__(self, config: SwinIRConfig) -> None:
        super().__init__()
        self.config = config
        dim, scale = config.embed_dim, config.scale
        self.scale, self.window_size, self.img_range, self.upsampler = (
            scale, config.window_size, config.img_range, config.upsampler
        )
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.mask_cache = ShiftMaskCache()

        self.conv_first = nn.Conv2d(3, dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(dim)
        resolution = (config.img_size, config.img_size)
        total = sum(config.depths)  # stochastic-depth rate rises linearly over all blocks (plain floats: meta-safe)
        rates = [config.drop_path_rate * j / max(total - 1, 1) for j in range(total)]
        self.layers = nn.ModuleList()
        start = 0
        for depth, heads in zip(config.depths, config.num_heads):
            self.layers.append(
                RSTB(dim, resolution, depth, heads, config.window_size, config.mlp_ratio,
                     rates[start:start + depth], config.resi_connection, self.mask_cache)
            )
            start += depth
        self.norm = nn.LayerNorm(dim)
        self.conv_after_body = _residual_conv(dim, config.resi_connection)

        if config.upsampler == "pixelshuffle":
            feats = config.num_feat
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(dim, feats, 3, 1, 1), nn.LeakyReLU(inplace=True))
            self.upsample = _pixelshuffle_upsampler(scale, feats)
            self.conv_last = nn.Conv2d(feats, 3, 3, 1, 1)
        else:
            self.upsample = nn.Sequential(nn.Conv2d(dim, 3 * scale * scale, 3, 1, 1), nn.PixelShuffle(scale))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x_size = (x.shape[2], x.shape[3])
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x, x_size)
        return _tokens_to_map(self.norm(x), x_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise KdError(f"SwinIR expects an RGB batch of shape (B, 3, h, w) in [0, 1]; got shape {tuple(x.shape)}.")
        h, w = x.shape[2:]
        pad_h, pad_w = (-h) % self.window_size, (-w) % self.window_size
        if pad_h >= h or pad_w >= w:
            raise KdError(
                f"SwinIR input {h}x{w} is too small to reflect-pad to a multiple of the window "
                f"({self.window_size}); use at least {self.window_size // 2 + 1} pixels per side."
            )
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.img_range
        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        if self.upsampler == "pixelshuffle":
            x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        else:
            x = self.upsample(x)
        x = x / self.img_range + mean
        return x[:, :, : h * self.scale, : w * self.scale]

    # ---- distillation taps ----------------------------------------------------------------------------------

    def tap_value(self, name: str, module: nn.Module, inputs: tuple, output: Any) -> torch.Tensor:
        """Token outputs of modules called with `(tokens, x_size)` come back as (B, C, h', w') maps."""
        if isinstance(output, (tuple, list)):
            output = output[0]
        if isinstance(module, (RSTB, BasicLayer, SwinTransformerBlock)):
            return _tokens_to_map(output, tuple(inputs[1]))
        return output

    # ---- official checkpoints -------------------------------------------------------------------------------

    @staticmethod
    def describe_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
        """See the module-level `describe_state_dict`."""
        return describe_state_dict(state_dict)

    def checkpoint_mismatch(self, state_dict: Mapping[str, Any]) -> str | None:
        """Why an official state dict does not fit this model, in words, or None if its configuration matches."""
        found = describe_state_dict(state_dict)
        mine = self.config
        problems = []
        if found["scale"] is not None and found["scale"] != mine.scale:
            problems.append(f"checkpoint is x{found['scale']} ({found['evidence']}); model is x{mine.scale}")
        for key, ours in (
            ("upsampler", mine.upsampler),
            ("embed_dim", mine.embed_dim),
            ("depths", list(mine.depths)),
            ("num_heads", list(mine.num_heads)),
            ("window_size", mine.window_size),
            ("mlp_ratio", mine.mlp_ratio),
            ("resi_connection", mine.resi_connection),
        ):
            theirs = found[key]
            if theirs is not None and theirs != ours:
                problems.append(f"checkpoint has {key} {theirs}; model has {ours}")
        return "; ".join(problems) or None

    def adapt_official_state_dict(self, state_dict: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of an official state dict that loads strictly into this model whatever its training patch size.

        `attn_mask` buffers whose shape differs (another `img_size`), or that are missing, are replaced by this
        model's; `relative_position_index` must equal this model's (it depends only on the window size).
        """
        state = dict(_unwrap(state_dict))
        for key, own in self.state_dict(keep_vars=True).items():
            if key.endswith(".attn_mask"):
                theirs = state.get(key)
                if theirs is None or tuple(theirs.shape) != tuple(own.shape):
                    state[key] = own.detach().clone()
            elif key.endswith(".relative_position_index"):
                theirs = state.get(key)
                if theirs is None:
                    state[key] = own.detach().clone()
                elif tuple(theirs.shape) != tuple(own.shape) or not torch.equal(theirs.cpu().long(), own.cpu()):
                    raise KdError(
                        f"checkpoint entry '{key}' (shape {tuple(theirs.shape)}) does not match a window of "
                        f"{self.config.window_size}: the checkpoint was trained with another window size. "
                        "Build the model with the checkpoint's window_size."
                    )
        return state


# --------------------------------------------------------------------------------------------------------------
# Reading official checkpoints


def _unwrap(state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
    """The state dict inside an official `{'params_ema' / 'params': ...}` file; flat dicts pass through."""
    for key in ("params_ema", "params"):  # EMA first, as kd.models.loading does
        inner = state_dict.get(key)
        if isinstance(inner, Mapping):
            return inner
    return state_dict


def describe_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The SwinIR configuration an official state dict was saved with, as far as its tensors show.

    Keys: scale, img_size (None when no shifted block carries a mask), window_size, embed_dim, depths,
    num_heads, mlp_ratio, upsampler, variant, resi_connection, and `evidence` (the upsampler shapes in words).
    """
    sd = _unwrap(state_dict)
    shape = {k: tuple(v.shape) for k, v in sd.items() if hasattr(v, "shape")}
    if "conv_first.weight" not in shape or "upsample.0.weight" not in shape:
        raise KdError("state dict is not a SwinIR super-resolution checkpoint (no conv_first / upsample.0 weights).")
    embed_dim = shape["conv_first.weight"][0]

    depths, num_heads = [], []
    i = 0
    while any(k.startswith(f"layers.{i}.") for k in shape):
        blocks = {k.split(".")[4] for k in shape if k.startswith(f"layers.{i}.residual_group.blocks.")}
        depths.append(len(blocks))
        num_heads.append(shape[f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table"][1])
        i += 1

    first = "layers.0.residual_group.blocks.0."
    window = round(math.sqrt(shape[first + "attn.relative_position_index"][0])) if depths else None
    fc1 = shape.get(first + "mlp.fc1.weight")
    mlp_ratio = fc1[0] / fc1[1] if fc1 else None
    masks = [s for k, s in shape.items() if k.endswith(".attn_mask")]
    img_size = round(math.sqrt(masks[0][0])) * round(math.sqrt(masks[0][1])) if masks else None
    resi = "3conv" if "conv_after_body.0.weight" in shape else "1conv"

    if "conv_last.weight" in shape:
        upsampler, variant = "pixelshuffle", "classical"
        convs = [shape[k] for k in shape if k.startswith("upsample.") and k.endswith(".weight")]
        scale = 1
        for out_ch, in_ch, *_ in convs:
            scale *= round(math.sqrt(out_ch / in_ch))
        detail = f"upsampler has {len(convs)} conv(s) with output channels " + ", ".join(str(c[0]) for c in convs)
    else:
        upsampler, variant = "pixelshuffledirect", "lightweight"
        out_ch = shape["upsample.0.weight"][0]
        scale = round(math.sqrt(out_ch / 3))
        detail = f"upsampler has {out_ch} output channels"
    return {
        "scale": scale,
        "img_size": img_size,
        "window_size": window,
        "embed_dim": embed_dim,
        "depths": depths,
        "num_heads": num_heads,
        "mlp_ratio": mlp_ratio,
        "upsampler": upsampler,
        "variant": variant,
        "resi_connection": resi,
        "evidence": detail,
    }


def official_checkpoint_info(state_dict: Mapping[str, Any]) -> str:
    """One line saying what a SwinIR checkpoint is, e.g. for an error message."""
    d = describe_state_dict(state_dict)
    size = f", trained on {d['img_size']}x{d['img_size']} patches" if d["img_size"] else ""
    return (
        f"SwinIR {d['variant']} x{d['scale']} checkpoint: embed_dim {d['embed_dim']}, depths {d['depths']}, "
        f"num_heads {d['num_heads']}, window {d['window_size']}{size} ({d['evidence']})"
    )


# --------------------------------------------------------------------------------------------------------------
# Registry


def build_swinir(
    scale: int,
    variant: str,
    img_size: int,
    window_size: int,
    embed_dim: int,
    depths: Sequence[int],
    num_heads: Sequence[int],
    mlp_ratio: float,
    upsampler: str,
    resi_connection: str,
    img_range: float,
    num_feat: int = RECONSTRUCTION_FEATURES,
) -> SwinIR:
    return SwinIR(
        SwinIRConfig(
            scale=scale, variant=variant, img_size=img_size, window_size=window_size, embed_dim=embed_dim,
            depths=tuple(depths), num_heads=tuple(num_heads), mlp_ratio=mlp_ratio, upsampler=upsampler,
            resi_connection=resi_connection, img_range=img_range, num_feat=num_feat,
        )
    )


_COMMON = {"window_size": 8, "mlp_ratio": 2, "resi_connection": "1conv", "img_range": 1.0}
CLASSICAL_PAPER = {
    "variant": "classical", "img_size": 48, "embed_dim": 180, "depths": [6] * 6, "num_heads": [6] * 6,
    "upsampler": "pixelshuffle", **_COMMON,
}  # 001_classicalSR_DIV2K_s48w8_SwinIR-M; the DF2K s64 checkpoints load through adapt_official_state_dict
LIGHTWEIGHT_PAPER = {
    "variant": "lightweight", "img_size": 64, "embed_dim": 60, "depths": [6] * 4, "num_heads": [6] * 4,
    "upsampler": "pixelshuffledirect", **_COMMON,
}  # 002_lightweightSR_DIV2K_s64w8_SwinIR-S
# First guesses for the CPU protocol (calibrated later): 48-pixel LR training patches.
CLASSICAL_MINI = {**CLASSICAL_PAPER, "embed_dim": 48, "depths": [4, 4], "num_heads": [4, 4]}
LIGHTWEIGHT_MINI = {**LIGHTWEIGHT_PAPER, "img_size": 48, "embed_dim": 48, "depths": [4, 4, 4], "num_heads": [4] * 3}
# The SwinIR student of DUKD / MiPKD / DCKD (`c60s24` in the DUKD YAMLs, 1.2M at x4, METHODS.md section 1): the
# classical network (pixel-shuffle upsampler) narrowed to embed 60 and four stages of six blocks.
CLASSICAL_E60 = {**CLASSICAL_PAPER, "embed_dim": 60, "depths": [6] * 4, "num_heads": [6] * 4}
# The miniature of that pair (kd/report/miniature.py): `mini` narrowed to a third as 180 -> 60 is, embed 48 -> 16.
CLASSICAL_MINI_STUDENT = {**CLASSICAL_MINI, "embed_dim": 16}
# DCKD Table 2's SwinIR pair in miniature (kd/report/miniature.py, profile `miniature`). Published: 6 stages of 6
# blocks at embed 180 (head dimension 30) -> 4 stages of 6 at embed 60 (head dimension 10), both with the 64-channel
# reconstruction head, parameters 0.104. Here the same stages and blocks at embed 48 -> 16 (a third, as 180 -> 60),
# head dimension 8 in both, the reconstruction head narrowed with the teacher's width (64 x 48/180 -> 16):
# 97,603 / 904,107 = 0.108. (The first sizing, 2 blocks per stage at embed 60 -> 20, led its scratch student by about
# half the published margin: reports/miniature/calibration.md.)
MINIATURE_TEACHER = {**CLASSICAL_MINI, "embed_dim": 48, "depths": [6] * 6, "num_heads": [6] * 6, "num_feat": 16}
MINIATURE_STUDENT = {**MINIATURE_TEACHER, "embed_dim": 16, "depths": [6] * 4, "num_heads": [2] * 4}
# A few thousand parameters: the classical head alone (64-channel convs) would be >100k, so tiny uses the direct one.
TINY = {**LIGHTWEIGHT_PAPER, "img_size": 16, "embed_dim": 8, "depths": [2], "num_heads": [2]}

register_model(
    ModelEntry(
        arch="swinir",
        builder=build_swinir,
        role="teacher",
        family="transformer",
        presets={"paper": CLASSICAL_PAPER, "mini": CLASSICAL_MINI, "tiny": TINY, "e60": CLASSICAL_E60,
                 "mini_student": CLASSICAL_MINI_STUDENT, "miniature_teacher": MINIATURE_TEACHER,
                 "miniature_student": MINIATURE_STUDENT},
        description="SwinIR classical SR (SwinIR-M, 11.9M at x4), Liang et al. ICCVW 2021",
        aliases=("swinir_m", "swinir_classical"),
    )
)
register_model(
    ModelEntry(
        arch="swinir_light",
        builder=build_swinir,
        role="teacher",
        family="transformer",
        presets={"paper": LIGHTWEIGHT_PAPER, "mini": LIGHTWEIGHT_MINI, "tiny": TINY},
        description="SwinIR lightweight SR (SwinIR-S, 0.93M at x4 incl. position-bias tables)",
        aliases=("swinir_s", "swinir_lightweight"),
    )
)
