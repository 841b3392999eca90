"""SwinFIR and SwinFIR-T (Zhang, Huang, Liu, Wang, Jin, "SwinFIR: Revisiting the SwinIR with Fast Fourier
Convolution and Improved Training for Image Super-Resolution", arXiv 2208.11247, 2022).

Official code: `Zdafeng/SwinFIR` @ d08db6414a84a442d53fa6ad49b14f27969da80f, `swinfir/archs/swinfir_arch.py` and
`swinfir_utils.py` (a BasicSR plug-in; CC BY-NC-SA 4.0). The official `SwinFIR` class is SwinIR with the tail conv of
every residual Swin transformer block (RSTB) replaced by a spatial-frequency block (SFB); everything else (shallow
conv, Swin blocks, masks, `conv_after_body`, reconstruction heads) is SwinIR's computation, so this network is
`teachers.swinir.SwinIR` with those convs swapped for `SFB`s, its own mean and its own padding:

    SFB(x)   = fusion(cat[S(x), F(x)])                         (1x1 fusion, 2C -> C)
    S(x)     = x + conv3x3(lrelu0.2(conv3x3(x)))               (ResB; hidden width C, or C/2 in the HSFB of SwinFIR-T)
    F(x)     = conv2(y + FourierUnit(y)),  y = lrelu0.2(conv1(x))     (1x1 convs C -> C/2 -> C)
    FourierUnit(y) = irfft2(lrelu0.2(conv1x1(rfft2(y, ortho) as [re, im] per channel)), ortho)

Presets: `paper` = SwinFIR (embed 180, 6 RSTBs x 6 blocks, window 12, pixel-shuffle head, SFB; 14,497,923
parameters at x4); `t` = SwinFIR-T (embed 60, depths [6, 5, 5, 6], window 12, one-step pixel shuffle, HSFB;
966,696), the lightweight peer, usable as a student (`--student swinfir --student-preset t`); `mini` and `tiny` for
the CPU protocol and tests (window 8).

State-dict keys are the official ones (SwinIR's plus `layers.{i}.conv.{S,F,fusion}.*`), buffers included, so a BasicSR
checkpoint (`params_ema`, else `params`) loads strictly; `attn_mask` buffers of another training patch size are
replaced as for SwinIR (`adapt_official_state_dict`).

Range: RGB in [0, 1] in and out, unclamped; the network subtracts and re-adds SwinFIR's own mean
(0.3014, 0.3152, 0.3094), not SwinIR's DIV2K mean.

Quirks and how kdbench handles them:
  * The official network does not pad; its test path (`SwinFIRModel.test()`, `inference_swinfir.py`) pads bottom
    and right by `(h // window + 1) * window - h` rows/columns, a full extra window when h is already a multiple,
    with a mirrored copy (`cat([x, flip(x)])`, i.e. symmetric padding repeating the edge pixel), and crops the
    output. kdbench's `forward` does exactly that in eval mode, so evaluation is the official test path (the parity
    fixtures include it). In training mode a patch whose sides are multiples of the window runs unpadded, as
    official training does (its patches always are); other sizes get the test padding. `padded_size` says which.
    Inputs must be at least half a window per side (the mirrored copy is the only padding source).
  * Official `SFB` and `ResB` override `__call__`, so forward hooks on them never fire; here they are ordinary
    `forward`s and every module can be tapped (`layers.{i}.conv` is the SFB output).
  * The Fourier unit runs its FFTs in float32 whatever the network's dtype (a bf16 teacher), as FFTs of bf16 are
    not supported.
  * The shipped checkpoints were trained with ImageNet pre-training, mixup/channel-shuffle augmentation and a
    Charbonnier loss; kdbench trains with its own protocol (the `paper` profile's recipe follows the DF2K
    from-scratch YAML for everything kdbench has a setting for).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kd.errors import KdError
from kd.models.registry import ModelEntry, register_model
from teachers.rcan import check_rgb_batch
from teachers.swinir import SwinIR, SwinIRConfig
from teachers.swinir import _unwrap as unwrap_packaging
from teachers.swinir import describe_state_dict as describe_swinir_state_dict

SWINFIR_RGB_MEAN = (0.3014, 0.3152, 0.3094)
RESI_CONNECTIONS = {"SFB": 1, "HSFB": 2}  # name -> reduction of the ResB hidden width
UPSAMPLERS = {"pixelshuffle": "classical", "pixelshuffledirect": "lightweight"}  # -> SwinIR variant
NEGATIVE_SLOPE = 0.2


@dataclass(frozen=True)
class SwinFIRConfig:
    """The official constructor's fields (`upscale` is `scale`); `in_chans` must be 3 (kdbench networks are RGB)."""

    scale: int = 4
    img_size: int = 60
    window_size: int = 12
    embed_dim: int = 180
    depths: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    num_heads: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    mlp_ratio: float = 2.0
    upsampler: str = "pixelshuffle"
    resi_connection: str = "SFB"
    img_range: float = 1.0
    in_chans: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "num_heads", tuple(int(h) for h in self.num_heads))
        checks = [
            (self.in_chans == 3, f"in_chans must be 3 (kdbench networks map RGB to RGB), got {self.in_chans}"),
            (self.upsampler in UPSAMPLERS, f"upsampler must be one of {tuple(UPSAMPLERS)}, got {self.upsampler!r}"),
            (self.resi_connection in RESI_CONNECTIONS,
             f"resi_connection must be one of {tuple(RESI_CONNECTIONS)}, got {self.resi_connection!r}"),
            (self.embed_dim >= 2, f"embed_dim must be at least 2 (the frequency branch halves it), got "
             f"{self.embed_dim}"),
        ]
        for ok, message in checks:
            if not ok:
                raise KdError(f"SwinFIR config: {message}.")

    def trunk(self) -> SwinIRConfig:
        """The SwinIR network SwinFIR modifies (its own checks name SwinFIR)."""
        try:
            return SwinIRConfig(
                scale=self.scale, variant=UPSAMPLERS[self.upsampler], img_size=self.img_size,
                window_size=self.window_size, embed_dim=self.embed_dim, depths=self.depths,
                num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, upsampler=self.upsampler,
                resi_connection="1conv", img_range=self.img_range,
            )
        except KdError as exc:
            raise KdError(str(exc).replace("SwinIR config", "SwinFIR config", 1)) from None


# --------------------------------------------------------------------------------------------------------------
# The spatial-frequency block


class ResB(nn.Module):
    """Spatial branch: conv3x3 -> LeakyReLU(0.2) -> conv3x3, plus the input (hidden width C / reduction)."""

    def __init__(self, dim: int, reduction: int = 1) -> None:
        super().__init__()
        hidden = dim // reduction
        self.body = nn.Sequential(
            nn.Conv2d(dim, hidden, 3, 1, 1), nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True), nn.Conv2d(hidden, dim, 3, 1, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class FourierUnit(nn.Module):
    """A 1x1 conv + LeakyReLU(0.2) on the orthonormal 2-D real FFT of a map, channels [re_0, im_0, re_1, im_1, ...]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_layer = nn.Conv2d(2 * channels, 2 * channels, 1, 1, 0)
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        spectral_dtype = torch.promote_types(x.dtype, torch.float32)  # no FFT in bf16 / fp16
        spectrum = torch.fft.rfft2(x.to(spectral_dtype), norm="ortho")  # (B, C, h, w // 2 + 1)
        y = torch.view_as_real(spectrum).permute(0, 1, 4, 2, 3).reshape(b, 2 * c, h, -1)
        y = self.act(self.conv_layer(y.to(self.conv_layer.weight.dtype)))
        y = y.to(spectral_dtype).view(b, c, 2, h, -1).permute(0, 1, 3, 4, 2).contiguous()
        return torch.fft.irfft2(torch.view_as_complex(y), s=(h, w), norm="ortho").to(x.dtype)


class SpectralTransform(nn.Module):
    """Frequency branch: 1x1 conv to C/2 + LeakyReLU, a Fourier unit added to its input, 1x1 conv back to C."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 2
        self.conv1 = nn.Sequential(nn.Conv2d(dim, half, 1, 1, 0), nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True))
        self.fu = FourierUnit(half)
        self.conv2 = nn.Conv2d(half, dim, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(x)
        return self.conv2(y + self.fu(y))


class SFB(nn.Module):
    """Spatial-frequency block: spatial (ResB) and frequency branches fused by a 1x1 conv (official name `conv`)."""

    def __init__(self, dim: int, reduction: int = 1) -> None:
        super().__init__()
        self.S = ResB(dim, reduction)
        self.F = SpectralTransform(dim)
        self.fusion = nn.Conv2d(2 * dim, dim, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fusion(torch.cat([self.S(x), self.F(x)], dim=1))


# --------------------------------------------------------------------------------------------------------------
# The network


def mirror_pad(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bottom/right padding to (height, width) with the image's mirrored copy (the edge row/column repeated), as
    the official test path builds it from `cat([x, flip(x)])`."""
    h, w = x.shape[-2:]
    if height > h:
        x = torch.cat([x, x[:, :, 2 * h - height:].flip(2)], dim=2)
    if width > w:
        x = torch.cat([x, x[:, :, :, 2 * w - width:].flip(3)], dim=3)
    return x


class SwinFIR(SwinIR):
    """SwinIR with an SFB at the end of every RSTB, SwinFIR's mean and its padding; [0, 1] RGB in and out."""

    body_prefix = "layers."  # the numbered body (tiny presets have fewer RSTBs than upsample.* modules)
    TAPS = {
        "conv_first": "shallow features (B, C, h', w'), C = embed_dim, h', w' = the padded LR size (padded_size)",
        "layers.?": "RSTB outputs, tokens delivered as (B, C, h', w') maps",
        "layers.*.conv": "SFB output of each RSTB, before the RSTB skip (B, C, h', w')",
        "conv_after_body": "body tail conv before the long skip (B, C, h', w')",
        "layers.*.residual_group.blocks.*.attn.attn_map": "window-attention softmax maps (B * nW, heads, N, N), "
        "N = window^2; odd blocks use shifted (masked) windows",
    }

    def __init__(self, config: SwinFIRConfig) -> None:
        super().__init__(config.trunk())
        self.config = config
        reduction = RESI_CONNECTIONS[config.resi_connection]
        for layer in self.layers:
            layer.conv = SFB(config.embed_dim, reduction)
        self.register_buffer("mean", torch.tensor(SWINFIR_RGB_MEAN).view(1, 3, 1, 1), persistent=False)

    def padded_size(self, h: int, w: int) -> tuple[int, int]:
        """The size the body works on for an h x w input: the official test padding, or none for a training patch
        whose sides are multiples of the window."""
        window = self.window_size
        if self.training and h % window == 0 and w % window == 0:
            return h, w
        return (h // window + 1) * window, (w // window + 1) * window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_rgb_batch(x, "SwinFIR")
        h, w = x.shape[2:]
        height, width = self.padded_size(h, w)
        if height > 2 * h or width > 2 * w:
            raise KdError(
                f"SwinFIR input {h}x{w} is too small for its mirrored padding to {height}x{width} (window "
                f"{self.window_size}); use at least {math.ceil(self.window_size / 2)} pixels per side."
            )
        out = super().forward(mirror_pad(x, height, width))  # SwinIR's own padding finds nothing left to pad
        return out[:, :, : h * self.scale, : w * self.scale]

    # ---- official checkpoints -------------------------------------------------------------------------------

    @staticmethod
    def describe_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
        """See the module-level `describe_state_dict`."""
        return describe_state_dict(state_dict)

    def checkpoint_mismatch(self, state_dict: Mapping[str, Any]) -> str | None:
        """Why an official state dict does not fit this model, in words, or None if its configuration matches."""
        found, mine = describe_state_dict(state_dict), self.config
        problems = []
        if found["scale"] != mine.scale:
            problems.append(f"checkpoint is x{found['scale']} ({found['evidence']}); model is x{mine.scale}")
        for key in ("upsampler", "resi_connection", "embed_dim", "depths", "num_heads", "window_size", "mlp_ratio"):
            ours = getattr(mine, key)
            ours = list(ours) if isinstance(ours, tuple) else ours
            if found[key] is not None and found[key] != ours:
                problems.append(f"checkpoint has {key} {found[key]}; model has {ours}")
        return "; ".join(problems) or None


def describe_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The SwinFIR configuration a state dict was saved with, as far as its tensors show: SwinIR's description
    (scale, img_size, window_size, embed_dim, depths, num_heads, mlp_ratio, upsampler, evidence) with
    `resi_connection` SFB or HSFB."""
    sd = unwrap_packaging(state_dict)
    spatial = sd.get("layers.0.conv.S.body.0.weight")
    if spatial is None or "layers.0.conv.F.fu.conv_layer.weight" not in sd:
        raise KdError("state dict is not a SwinFIR checkpoint (no layers.0.conv.S / conv.F spatial-frequency block).")
    info = describe_swinir_state_dict(sd)
    del info["variant"]
    info["resi_connection"] = "HSFB" if spatial.shape[0] * 2 == spatial.shape[1] else "SFB"
    return info


# --------------------------------------------------------------------------------------------------------------
# Registry


def build_swinfir(
    scale: int,
    img_size: int,
    window_size: int,
    embed_dim: int,
    depths: Sequence[int],
    num_heads: Sequence[int],
    mlp_ratio: float,
    upsampler: str,
    resi_connection: str,
    img_range: float = 1.0,
    in_chans: int = 3,
) -> SwinFIR:
    return SwinFIR(
        SwinFIRConfig(
            scale=scale, img_size=img_size, window_size=window_size, embed_dim=embed_dim, depths=tuple(depths),
            num_heads=tuple(num_heads), mlp_ratio=mlp_ratio, upsampler=upsampler, resi_connection=resi_connection,
            img_range=img_range, in_chans=in_chans,
        )
    )


# The official test YAMLs / inference_swinfir.py (img_size = the 60-pixel training patch).
PAPER = {
    "img_size": 60, "window_size": 12, "embed_dim": 180, "depths": [6] * 6, "num_heads": [6] * 6, "mlp_ratio": 2,
    "upsampler": "pixelshuffle", "resi_connection": "SFB", "img_range": 1.0, "in_chans": 3,
}
SWINFIR_T = {**PAPER, "embed_dim": 60, "depths": [6, 5, 5, 6], "num_heads": [6] * 4,
             "upsampler": "pixelshuffledirect", "resi_connection": "HSFB"}
# CPU protocol: SwinIR mini's trunk (embed 48, 2 x 4 blocks, head dimension 12) with window 8, which divides the
# cpu profile's 32- and 48-pixel LR patches and aligns its window maps with ASID's for attention KD.
MINI = {**PAPER, "img_size": 48, "window_size": 8, "embed_dim": 48, "depths": [4, 4], "num_heads": [4, 4]}
TINY = {**SWINFIR_T, "img_size": 16, "window_size": 8, "embed_dim": 8, "depths": [2], "num_heads": [2]}

register_model(
    ModelEntry(
        arch="swinfir",
        builder=build_swinfir,
        role="teacher",
        family="transformer",
        presets={"paper": PAPER, "mini": MINI, "tiny": TINY, "t": SWINFIR_T},
        description="SwinFIR (Zhang et al., arXiv 2022): SwinIR with spatial-frequency (FFT) blocks; preset t = "
        "SwinFIR-T, a lightweight peer, also a student (--student swinfir --student-preset t)",
    )
)
