"""DUKD: data-upcycling distillation with label-consistency regularisation (Zhang et al., arXiv:2309.14162).

Verified in the official code (`yun224/DUKD` at 6960273e08cf7958b844b750910446bbbddb3746, read for the facts only:
`models/dukd_model.py` and the YAMLs of every scale under `options/`; METHODS.md section 10.1):

* output KD on the training pair: w_pix L1(S(x), y) + w_kd L1(S(x), T(x));
* zoom-in upcycling: one of the s^2 LR-sized tiles of the HR patch, y_sub, is super-resolved by the teacher, a
  "beyond ground truth" target: L_in = w_kd L1(T(y_sub), aug^-1(S(aug(y_sub))));
* label consistency: aug applies to each sample, independently with probability p each, {invert colour (1 - x),
  flip H, flip W, transpose}; the student's output is mapped back before the comparison;
* zoom-out upcycling (optional): x_down = MATLAB-bicubic(x, 1/s),
  L_out = w_pix L1(S(x_down), x) + w_kd L1(S(x_down), T(x_down)).

Released settings (`train:` of each YAML; w_kd = 1 and `n_gt_sub: [1]` in all but one; a YAML without a `noisy`
key applies no op, like p = 0):

| teacher | scale | p   | zoom-out | w_pix | file                                            |
|---------|-------|-----|----------|-------|-------------------------------------------------|
| RCAN    | x2    | -   | no       | 1     | options/RCAN/dukd_rcan_x2c64b20g10_c64b6g10.yml |
| RCAN    | x3    | 0.3 | yes      | 2     | options/RCAN/dukd_rcan_x3c64b20g10_c64b6g10.yml |
| RCAN    | x4    | 0   | no       | 1     | options/RCAN/dukd_rcan_x4c64b20g10_c64b6g10.yml |
| SwinIR  | all   | 0.3 | no       | 5     | options/Swinir/dukd_swinir_x{2,3,4}c180s36_c60s24.yml |
| EDSR    | all   | 0.3 | yes      | 5     | options/EDSR/dukd_edsr_x{2,3,4}c256b32_c64b32.yml |

(EDSR x2 also takes two zoom-in tiles per patch, `n_gt_sub: [2]`.) w_pix weighs both reconstruction terms (`rec`,
and `out_rec` of the zoom-out), w_kd the three teacher terms. These are the per-pair defaults (`releases`): a run
from an RCAN, SwinIR or EDSR teacher gets its release's values, another CNN teacher (HAN) RCAN's and another
transformer SwinIR's, layered into the run's configuration before any config file or --set
(`kd.profiles.resolve_layers`), so its saved config.yaml shows them. Without a release for the pair (e.g. RCAN x8)
the class defaults apply: p = 0.3, no zoom-out, every weight 1.

Differences from the official code, on purpose:
* the inverse augmentation applies the inverse ops in *reverse* order; the official `noising()` re-applies the same
  sequence, which is a 180-degree rotation instead of the identity when transpose and one flip coincide
  (about 13% of samples at p = 0.3; METHODS.md section 14, item 2);
* one optimizer step per iteration on the sum of all terms (kdbench's method interface has one step), where the
  official model takes a step on the output-KD loss and then a second step on the upcycled terms;
* the zoom-in tiles are picked per sample (official: the same `n_gt_sub` tile positions for the whole batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from kd.data.imresize import imresize
from kd.errors import KdError
from kd.methods import register_method
from kd.methods.base import Distiller, Release, StepInputs, output_kd_l1, reconstruction

OPS = ("invert", "flip_h", "flip_w", "transpose")


@dataclass
class DukdOptions:
    noisy_prob: float = 0.3  # probability of each label-consistency op per sample (0 disables)
    zoom_in: bool = True  # teacher targets on LR-sized tiles of the HR patch
    gt_tiles: int = 1  # tiles per HR patch (`n_gt_sub`; the EDSR x2 release takes 2)
    zoom_out: bool = False  # student on bicubic-downscaled LR inputs (EDSR config: true)
    min_zoom_out_size: int = 12  # refuse zoom-out when x_down would be smaller than this (tiny CPU patches)


def _release(path: str, w_pix: float, noisy_prob: float, zoom_out: bool, gt_tiles: int = 1) -> Release:
    weights = {"rec": w_pix, "kd": 1.0, "up_in": 1.0}
    if zoom_out:
        weights.update(out_rec=w_pix, out_kd=1.0)
    return Release(f"yun224/DUKD@6960273 {path}", weights,
                   {"noisy_prob": noisy_prob, "zoom_in": True, "gt_tiles": gt_tiles, "zoom_out": zoom_out})


RCAN_RELEASES = {s: _release(f"options/RCAN/dukd_rcan_x{s}c64b20g10_c64b6g10.yml", *settings)
                 for s, settings in {2: (1.0, 0.0, False), 3: (2.0, 0.3, True), 4: (1.0, 0.0, False)}.items()}
SWINIR_RELEASE = {0: _release("options/Swinir/dukd_swinir_x{2,3,4}c180s36_c60s24.yml", 5.0, 0.3, False)}


def _apply(op: str, x: Tensor) -> Tensor:
    if op == "invert":
        return 1 - x
    if op == "flip_h":
        return x.flip(-2)
    if op == "flip_w":
        return x.flip(-1)
    return x.transpose(-2, -1)


def sample_ops(batch: int, prob: float, square: bool) -> Tensor:
    """(batch, 4) booleans: which of OPS apply to each sample (transpose only for square tiles)."""
    chosen = torch.rand(batch, len(OPS)) < prob
    if not square:
        chosen[:, OPS.index("transpose")] = False
    return chosen


def augment(x: Tensor, chosen: Tensor) -> Tensor:
    """Apply each sample's ops in OPS order."""
    return torch.stack([_sequence(sample, row, reverse=False) for sample, row in zip(x, chosen)])


def invert_augment(x: Tensor, chosen: Tensor) -> Tensor:
    """The exact inverse of `augment`: every op is its own inverse, so apply them in reverse order."""
    return torch.stack([_sequence(sample, row, reverse=True) for sample, row in zip(x, chosen)])


def _sequence(x: Tensor, row: Tensor, reverse: bool) -> Tensor:
    ops = [op for op, on in zip(OPS, row.tolist()) if on]
    for op in reversed(ops) if reverse else ops:
        x = _apply(op, x)
    return x


def zoom_in_tiles(hr: Tensor, scale: int, count: int = 1) -> Tensor:
    """`count` distinct random LR-sized tiles of each HR patch (which holds scale^2 of them): (count * B, ...), every
    sample's first tile first (the official order)."""
    b, _, h_hr, w_hr = hr.shape
    h, w = h_hr // scale, w_hr // scale
    positions = torch.rand(b, scale * scale).argsort(dim=1)[:, :count]
    return torch.stack([hr[i, :, (p // scale) * h:(p // scale + 1) * h, (p % scale) * w:(p % scale + 1) * w]
                        for column in positions.T.tolist() for i, p in enumerate(column)])


def frozen_forward(teacher: nn.Module, x: Tensor) -> Tensor:
    """The teacher's float32 output without gradients; a half-precision teacher (accel) gets its own dtype."""
    with torch.no_grad():
        return teacher(x.to(next(teacher.parameters()).dtype)).float()


@register_method
class DUKD(Distiller):
    name = "dukd"
    description = "DUKD: output KD + teacher labels on upcycled data (HR tiles, optional zoom-out) + label consistency"
    default_weights = {"rec": 1.0, "kd": 1.0, "up_in": 1.0, "out_rec": 1.0, "out_kd": 1.0}
    taps_features = False
    Options = DukdOptions
    version = 2  # per-sample distinct tiles (`gt_tiles`): the zoom-in draw changed
    releases = {
        "rcan": RCAN_RELEASES,
        "swinir": SWINIR_RELEASE,
        "edsr": {s: _release(f"options/EDSR/dukd_edsr_x{s}c256b32_c64b32.yml", 5.0, 0.3, True, 2 if s == 2 else 1)
                 for s in (2, 3, 4)},
        "cnn": RCAN_RELEASES,  # HAN: same framework and recipe as RCAN
        "transformer": SWINIR_RELEASE,
    }

    def __init__(self, student: nn.Module, teacher: nn.Module | None, options: DukdOptions) -> None:
        super().__init__(student, teacher, options)
        if not 0 <= options.noisy_prob <= 1:
            raise KdError(f"method.options.noisy_prob must be in [0, 1], got {options.noisy_prob}.")
        self._networks = (student, teacher)  # a tuple: not registered, so never saved or exported with the method

    def losses(self, inputs: StepInputs) -> dict[str, Tensor]:
        student, teacher = self._networks
        scale = inputs.hr.shape[-1] // inputs.lr.shape[-1]
        # Switched-off parts return no term (rather than a constant zero the health check would flag as inert).
        terms = {"rec": reconstruction(inputs), "kd": output_kd_l1(inputs)}
        if self.options.zoom_in:
            if not 1 <= self.options.gt_tiles <= scale * scale:
                raise KdError(f"method.options.gt_tiles must be in [1, {scale * scale}] at x{scale} (the HR patch "
                              f"holds {scale * scale} LR-sized tiles), got {self.options.gt_tiles}.")
            tiles = zoom_in_tiles(inputs.hr, scale, self.options.gt_tiles)
            target = frozen_forward(teacher, tiles)
            chosen = sample_ops(tiles.shape[0], self.options.noisy_prob, tiles.shape[-1] == tiles.shape[-2])
            predicted = invert_augment(student(augment(tiles, chosen)), chosen)
            terms["up_in"] = F.l1_loss(predicted, target)
        if self.options.zoom_out:
            small = imresize(inputs.lr, 1 / scale).clamp(0, 1)
            if min(small.shape[-2:]) < self.options.min_zoom_out_size:
                raise KdError(
                    f"method 'dukd': zoom-out shrinks the {inputs.lr.shape[-2]}x{inputs.lr.shape[-1]} LR patches to "
                    f"{small.shape[-2]}x{small.shape[-1]}, below method.options.min_zoom_out_size = "
                    f"{self.options.min_zoom_out_size}; raise train.lr_patch or set method.options.zoom_out=false."
                )
            target = frozen_forward(teacher, small)
            predicted = student(small)
            terms["out_rec"] = F.l1_loss(predicted, inputs.lr)
            terms["out_kd"] = F.l1_loss(predicted, target)
        return terms
