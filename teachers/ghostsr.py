"""GhostSR's ghost convolution (Nie et al., "GhostSR: Learning Ghost Features for Efficient Image Super-Resolution",
arXiv 2101.08525, TMLR 2022): a **reconstruction**, used by the `ghost` presets of EDSR and RCAN
(`teachers/edsr.py`, `teachers/rcan.py`, field `ghost_ratio`).

There is no PyTorch code. The authors' release is MindSpore (`mindspore-ai/models`, `research/cv/GhostSR`, EDSR
only), read for facts; its filter-clustering step, which picks a pre-trained model's intrinsic filters before
fine-tuning, is not released and is not reproduced here: kdbench trains ghost networks from scratch.

A ghost conv replaces a 3x3 conv with C_out outputs. An ordinary 3x3 conv (`primary_conv`) makes the intrinsic
features, C_out - floor(lambda C_out) channels; the other floor(lambda C_out) "ghost" channels are the intrinsic
channels (the first ones, cycled when there are more ghosts than intrinsic channels) moved by one pixel, and the
output is [intrinsic, ghost] concatenated. lambda (`ghost_ratio`) is the share of ghost channels; 0.5 in the paper
and the release, which halves the conv's weights. The shift is one of the 9 one-pixel moves of a 3x3 neighbourhood
(the centre: no move), chosen by a learnable 3x3 weight (`cheap_conv.weight`, shape (1, 1, 3, 3) as in the release):

* training: a straight-through Gumbel-softmax sample (`F.gumbel_softmax(w, tau=1, hard=True)` over the 9 entries):
  the forward pass shifts by the sampled one-hot kernel, the gradient reaches `w` through the softmax;
* evaluation: the move at argmax(w), fixed, applied as an exact slice of the zero-padded map (no arithmetic).

One orientation per ghost conv, shared by its ghost channels, as in the release (its comment: a uniform-direction
shift); it is what makes the shift a single memory offset. Differences from the release, which the paper's text
does not settle: the release picks argmax |w + noise| and passes the gradient to `w` unchanged; kdbench uses the
standard Gumbel-softmax (argmax of w + noise, softmax gradient). The paper decays the Gumbel noise over training;
the release's epoch counter never advances, so its noise stays at scale 1, as here.

Which convs: the two 3x3 body convs of every residual block (EDSR ResBlock, RCAN RCAB); head, group and body-tail
convs, channel attention and upsampler stay ordinary (the release's EDSR does the same).

Parameters (kdbench count, the 9-entry shift weights included) beside the paper's figures:
    EDSR (c256 b32)   x4 43,089,947 -> 24,207,963 (-43.8%); x2 40,729,627 -> 21,847,643 (-46.4%), paper: -46% at
                      x2 (abstract: "we reduce the parameters by 46% ... of x2 EDSR"); absolute counts not found.
    RCAN (10x20 c64)  x4 15,592,379 -> 8,210,379 (-47.3%); x2 15,444,667 -> 8,062,667 (-47.8%); paper figure not
                      found.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kd.errors import KdError


def check_ghost_ratio(network: str, ghost_ratio: float) -> None:
    if isinstance(ghost_ratio, bool) or not isinstance(ghost_ratio, (int, float)) or not 0 <= ghost_ratio < 1:
        raise KdError(f"{network}: field 'ghost_ratio' (GhostSR's share of ghost channels) must be in [0, 1), "
                      f"0 for ordinary convs; got {ghost_ratio!r}")


class ShiftChoice(nn.Module):
    """Moves every channel by the one-pixel shift its 3x3 `weight` selects (zero fill at the border)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, 1, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)  # the release's HeUniform(negative_slope=sqrt(5))

    def offset(self) -> tuple[int, int]:
        """(row, column) of the selected entry: output[y, x] = input[y + row - 1, x + column - 1]."""
        if self.weight.is_meta:  # no values (MAC counting on the meta device): every move costs the same
            return 1, 1
        return divmod(int(self.weight.detach().flatten().argmax()), 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            kernel = F.gumbel_softmax(self.weight.flatten(), tau=1.0, hard=True).view(1, 1, 3, 3)
            channels = x.shape[1]
            return F.conv2d(x, kernel.expand(channels, 1, 3, 3), padding=1, groups=channels)
        row, column = self.offset()
        h, w = x.shape[-2:]
        return F.pad(x, (1, 1, 1, 1))[..., row:row + h, column:column + w]


class GhostConv(nn.Module):
    """3x3 conv whose last floor(ghost_ratio * C_out) output channels are shifted copies of the first ones."""

    def __init__(self, in_channels: int, out_channels: int, ghost_ratio: float):
        super().__init__()
        self.ghost = int(out_channels * ghost_ratio)
        self.intrinsic = out_channels - self.ghost
        if self.ghost == 0:
            raise KdError(f"ghost_ratio {ghost_ratio} leaves no ghost channel of {out_channels}: raise it to at least "
                          f"{1 / out_channels:.3g}, or set it to 0 for ordinary convs")
        self.primary_conv = nn.Conv2d(in_channels, self.intrinsic, 3, padding=1)
        self.cheap_conv = ShiftChoice()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        intrinsic = self.primary_conv(x)
        if self.ghost <= self.intrinsic:
            source = intrinsic[:, :self.ghost]
        else:
            source = intrinsic.repeat(1, -(-self.ghost // self.intrinsic), 1, 1)[:, :self.ghost]
        return torch.cat([intrinsic, self.cheap_conv(source)], dim=1)


def body_conv(channels: int, ghost_ratio: float) -> nn.Module:
    """A residual block's 3x3 conv: ordinary when `ghost_ratio` is 0 (the official networks), else a GhostConv."""
    if ghost_ratio == 0:
        return nn.Conv2d(channels, channels, 3, padding=1)
    return GhostConv(channels, channels, ghost_ratio)
