"""DCT: output distillation in the 8x8 block-DCT domain with high frequencies weighted up (reconstructed).

Source: R. Cai, Y. Ding, H. Lu, "FreqNet: A Frequency-domain Image Super-Resolution Network with Dicrete Cosine
Transform" (arXiv, 21 Nov 2021). FreqNet is an SR network, not a distillation method, and no code was released. Its
abstract is all kdbench follows (the method section's equations were not available where kdbench looked, so none is
cited): images are converted into DCT blocks and reformed into DCT feature maps, which are the network's input and
target, and "a frequency loss function to fit the nature of our frequency-domain task" makes the model "learn the
high-frequency information explicitly". kdbench carries that loss over to distillation:

    C(x)[b, u, v] = sum_ij D[u, i] x_b[i, j] D[v, j]        every 8x8 block b of each RGB channel (JPEG's blocks),
    D[u, i] = a_u cos((2i + 1) u pi / 16),  a_0 = sqrt(1/8),  a_u = sqrt(2/8)       the orthonormal DCT-II
    w[u, v] = 1 + (g - 1) (u + v) / 14                     1 at DC, rising linearly to g at (7, 7)   [kdbench]
    L_freq(a, b) = mean over blocks, channels and (u, v) of  w[u, v] |C(a)[b, u, v] - C(b)[b, u, v]|
    L = w_rec L_rec(S(x), y) + w_dct L_freq(S(x), T(x)) + w_dct_hr L_freq(S(x), y)

kdbench's choices, none of them from the paper: the transform acts on the RGB output images (the networks' own
space; no YCbCr), an image is cropped to a multiple of 8 pixels (top-left; training patches already are), the
weighting is the linear ramp above with gain g = `method.options.gain` (2 by default: the highest frequency
counts twice as much as DC), and the L1 form. Because the transform is linear, C(a) - C(b) = C(a - b): one
transform of the difference. The orthonormal DCT keeps each block's energy, so at g = 1 the term is an L1 on a
rotated basis in which a block's mean error counts 1/8 (the DC coefficient is 8 x the block mean over 64 terms)
and white noise counts as in pixel L1: even unweighted, the loss leans towards high frequencies.

Terms: `rec` (the configured reconstruction loss, `method.rec`), `dct` (to the teacher's SR image) and `dct_hr`
(to the ground truth; weight 0 by default, so it is logged but not trained: `method.weights.dct_hr` turns it on).
`method.rec=dct` uses `frequency_l1` with the default gain as every method's reconstruction term instead of L1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from kd.errors import KdError
from kd.methods import register_method
from kd.methods.base import Distiller, StepInputs, reconstruction

BLOCK = 8
DEFAULT_GAIN = 2.0


def dct_matrix(size: int = BLOCK) -> Tensor:
    """The orthonormal DCT-II matrix D (float64): row u is the u-th cosine basis vector, D @ D.T = I."""
    n = torch.arange(size, dtype=torch.float64)
    basis = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / (2 * size))
    norm = torch.full((size, 1), math.sqrt(2 / size), dtype=torch.float64)
    norm[0] = math.sqrt(1 / size)
    return norm * basis


def block_dct(images: Tensor) -> Tensor:
    """(..., H, W) -> (..., H/8, W/8, 8, 8): the DCT coefficients [u, v] of every 8x8 block, after a top-left crop
    to a multiple of 8."""
    h, w = images.shape[-2] // BLOCK * BLOCK, images.shape[-1] // BLOCK * BLOCK
    if not h or not w:
        raise KdError(f"the block DCT needs images of at least {BLOCK}x{BLOCK} pixels, got "
                      f"{images.shape[-2]}x{images.shape[-1]}; raise train.lr_patch.")
    blocks = images[..., :h, :w].unflatten(-2, (h // BLOCK, BLOCK)).unflatten(-1, (w // BLOCK, BLOCK))
    d = dct_matrix().to(images)
    return torch.einsum("ui,...piqj,vj->...pquv", d, blocks, d)


def frequency_weights(gain: float = DEFAULT_GAIN) -> Tensor:
    """w[u, v] = 1 + (gain - 1)(u + v)/14: 1 at DC, `gain` at the highest frequency (7, 7)."""
    u = torch.arange(BLOCK, dtype=torch.float64)
    return 1 + (gain - 1) * (u[:, None] + u[None, :]) / (2 * (BLOCK - 1))


def frequency_l1(output: Tensor, target: Tensor, gain: float = DEFAULT_GAIN) -> Tensor:
    """L_freq: the mean frequency-weighted absolute difference of the two images' block-DCT coefficients."""
    coefficients = block_dct(output - target)
    return (frequency_weights(gain).to(coefficients) * coefficients.abs()).mean()


@dataclass
class DctOptions:
    gain: float = DEFAULT_GAIN  # weight of the highest frequency (7, 7) relative to DC (1); >= 1


@register_method
class FrequencyDistillation(Distiller):
    name = "dct"
    description = ("frequency-domain output KD (reconstruction from FreqNet's abstract): L1 between 8x8 "
                   "block-DCT coefficients of the student's and teacher's SR images, high frequencies weighted "
                   "up; dct_hr (weight 0) the same to the ground truth")
    reconstructed = "DCT (FreqNet's frequency loss, from its abstract; weighting and colour space are kdbench's)"
    default_weights = {"rec": 1.0, "dct": 1.0, "dct_hr": 0.0}
    taps_features = False
    Options = DctOptions

    def __init__(self, student, teacher, options: DctOptions) -> None:
        super().__init__(student, teacher, options)
        if not (math.isfinite(options.gain) and options.gain >= 1):
            raise KdError(f"method.options.gain must be a number >= 1 (the weight of the highest frequency "
                          f"relative to DC), got {options.gain}.")

    def losses(self, inputs: StepInputs) -> dict[str, Tensor]:
        gain = self.options.gain
        return {
            "rec": reconstruction(inputs),
            "dct": frequency_l1(inputs.student_out, inputs.teacher_out, gain),
            "dct_hr": frequency_l1(inputs.student_out, inputs.hr, gain),
        }
