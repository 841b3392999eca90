"""Attention-similarity KD (A-SKD, "Teaching Where to Look"), transferred from face recognition to SR.

Paper: S. Shin, J. Lee, J. Lee, Y. Yu, K. Lee, ECCV 2022, arXiv:2209.14498; official code
`gist-ailab/teaching-where-to-look` (METHODS.md, section 7).

Verified in the official code [V-code]: distil *attention maps*, not features, taken *before* the normalising
non-linearity (pre-sigmoid there); per sample, `1 - cos(vec(A_S), vec(A_T))`; the teacher frozen in eval mode.
A-SKD *sums* over its 48 maps with lambda = 5 beside a classification loss; kdbench *averages* over the mapped
pairs (METHODS.md 14, item 4), plus L1(S, y) (and L1(S, T), weight 0 by default: `method.weights.kd`).

Default weight (kdbench's calibration, not the paper's): A-SKD's lambda = 5 sits beside a cross-entropy whose
gradient is O(1); beside SR's L1 it made the attention gradient on ASID 120-250x the reconstruction gradient with
RCAN (channel mode) and 2.6-6x with SwinIR (window mode). The two modes compare different objects (a reduced
channel-attention vector vs whole window maps), so their natural scales differ by ~50x and each has its own
default weight: 0.02 in channel mode, 0.4 in window mode, which puts the step-0 gradient ratio at about 0.1-1
with tiny, random mini or trained mini teachers (`benchmarks/method_health.py`). `method.weights.att` overrides
either.

The transfer to SR and to kdbench's networks is kdbench's design (METHODS.md 7.2 [I]), for an ASID student:

* RCAN / HAN teacher (`mode=channel`): the pre-sigmoid channel-attention vector of every RCAB (`...conv_du.2`,
  (B, C_T)) against ASID's channel attention (`block*.BlockC.cttn[12].attn_logits`, pre-softmax (B, G, C, C)).
  ASID's map is reduced without parameters to a per-channel vector: logits centred over keys (what the softmax
  sees), then averaged over groups and queries, i.e. how strongly each value channel is attended to, the analogue
  of a CA gate. The dimensions then differ (ASID 48 vs 64; and channels of two networks never correspond), so a
  linear *adapter* C_S -> C_T (no bias) per pair maps the student vector, trained with the student and never
  exported (`adapter=false` drops it where C_S = C_T). Both vectors are centred over channels before the cosine
  (the student's is zero-sum by construction; the teacher's mean gain has no student counterpart). HAN's layer and
  channel-spatial attentions have no ASID counterpart and are not used.
* SwinIR teacher (`mode=window`): window self-attention of the *unshifted* blocks (`...attn.attn_map`,
  (B*nW, heads, 64, 64)) against ASID's shared block-window maps a1, a3, a5 (SLA; a2/a4/a6 use grid windows with
  no SwinIR counterpart). Both use non-overlapping 8x8 windows in row-major order on the LR map padded to a
  multiple of 8, so the maps align; heads are averaged; the cosine is taken per window. SwinFIR (window 8: presets
  mini, tiny) works the same way, but its evaluation padding adds a whole window row/column where an LR side is a
  multiple of 8 (the network's `padded_size`), so only the windows both grids share, from the top left, are
  compared. Both networks expose only post-softmax maps, so by default (`window_maps=logits`) the pre-softmax
  logits are recovered exactly up to the per-row constant the softmax ignores: log p centred over each row (log p
  is floored at `log_floor`). `window_maps=probs` compares the post-softmax maps instead.
* Pairs: the student's sites in depth order against the teacher's, by relative depth (j/k of each list, as
  `kd.methods.pairing.depth_positions`); by default one pair per student site.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from kd.errors import KdError
from kd.methods import register_method
from kd.methods.base import Distiller, StepInputs, output_kd_l1, reconstruction
from kd.methods.pairing import depth_positions, probe_taps

MODES = ("auto", "channel", "window")
CHANNEL_MODE_WEIGHT = 0.02  # see the module docstring
WINDOW_MAPS = ("logits", "probs")

STUDENT_SITES = {
    "channel": ["block*.BlockC.cttn[12].attn_logits"],
    "window": ["shared_attn.a1", "shared_attn.a3", "shared_attn.a5"],
}
TEACHER_SITES = {
    "channel": ["body.*.body.*.body.3.conv_du.2"],
    "window": ["layers.*.residual_group.blocks.*.attn.attn_map"],
}
WORKING_COMBINATIONS = (
    "method 'attention' works with students asid, asid_d8 (BlockC channel-attention logits, shared window maps "
    "a1/a3/a5) and teachers rcan, han (RCAB channel-attention vectors ...conv_du.2; mode=channel) or swinir, "
    "swinir_light, swinfir with window 8 (unshifted window maps ...attn.attn_map; mode=window)"
)


@dataclass
class AttentionOptions:
    mode: str = "auto"  # auto (window maps if the teacher has them, else channel attention) | channel | window
    pairs: int = 0  # number of map pairs; 0 = one per student attention site (capped by the teacher's sites)
    adapter: bool = True  # channel mode: linear C_S -> C_T map per pair (required when the widths differ)
    window_maps: str = "logits"  # logits: row-centred log of the softmax maps (= pre-softmax logits) | probs
    log_floor: float = 1e-8  # floor of p before the log (logits mode)


def _sites(model: nn.Module, patterns: list[str]) -> list[str]:
    """Module names matching the patterns, in network order (possibly none)."""
    return [name for name, _ in model.named_modules() if any(fnmatch.fnmatchcase(name, p) for p in patterns)]


def _unshifted(model: nn.Module, taps: list[str]) -> list[str]:
    modules = dict(model.named_modules())
    return [t for t in taps if getattr(modules.get(t.rsplit(".attn.", 1)[0]), "shift", 0) == 0]


def _probe_shapes(model: nn.Module, taps: list[str]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(value.shape) for name, value in probe_taps(model, taps).items()}


def _arch(model: nn.Module) -> str:
    return (getattr(model, "kd_spec", None) or {}).get("arch") or type(model).__name__


def channel_vector(logits: Tensor) -> Tensor:
    """ASID channel-attention logits (B, G, C, C) -> (B, C): key-centred logits averaged over groups and queries."""
    centred = logits - logits.mean(dim=-1, keepdim=True)
    return centred.mean(dim=(1, 2))


def window_grid(padded_size, lr_size: tuple[int, int], window: int) -> tuple[int, int]:
    """(rows, cols) of the windows a network's maps cover for an LR input: over its `padded_size(h, w)` where it
    declares one (SwinFIR), else over the input padded to a multiple of the window (SwinIR, ASID)."""
    h, w = padded_size(*lr_size) if padded_size is not None else lr_size
    return math.ceil(h / window), math.ceil(w / window)


def shared_windows(maps: Tensor, batch: int, grid: tuple[int, int], common: tuple[int, int], side: str) -> Tensor:
    """(B * rows * cols, heads, n, n) row-major window maps -> those of the top-left common[0] x common[1] windows."""
    rows, cols = grid
    if maps.shape[0] != batch * rows * cols:
        raise KdError(f"{side} window maps ({maps.shape[0]}) do not form a {rows} x {cols} window grid per image "
                      f"for a batch of {batch}; {WORKING_COMBINATIONS}.")
    if (rows, cols) == tuple(common):
        return maps
    maps = maps.view(batch, rows, cols, *maps.shape[1:])[:, : common[0], : common[1]]
    return maps.reshape(-1, *maps.shape[3:])


def window_map_vectors(maps: Tensor, space: str, floor: float) -> Tensor:
    """(N, heads, n, n) post-softmax maps -> (N, n*n) head-averaged map per window, as logits or probabilities."""
    if space == "logits":
        maps = maps.clamp_min(floor).log()
        maps = maps - maps.mean(dim=-1, keepdim=True)
    return maps.mean(dim=1).flatten(1)


def cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    return (1 - F.cosine_similarity(a, b, dim=1, eps=1e-8)).mean()


def attention_pairs(student: nn.Module, teacher: nn.Module, mode: str = "auto",
                    pairs: int = 0) -> tuple[str, list[str], list[str]]:
    """(mode, student taps, teacher taps): the attention sites of both networks paired by relative depth."""
    teacher_sites = {
        "window": _unshifted(teacher, _sites(teacher, TEACHER_SITES["window"])),
        "channel": _sites(teacher, TEACHER_SITES["channel"]),
    }
    if mode == "auto":
        mode = next((m for m in ("window", "channel") if teacher_sites[m]), None)
        if mode is None:
            raise KdError(f"teacher '{_arch(teacher)}' exposes no attention map the method can use (looked for "
                          f"{', '.join(TEACHER_SITES['window'] + TEACHER_SITES['channel'])}); "
                          f"{WORKING_COMBINATIONS}.")
    elif not teacher_sites[mode]:
        raise KdError(f"teacher '{_arch(teacher)}' has no {mode}-attention tap ({TEACHER_SITES[mode][0]}); "
                      f"{WORKING_COMBINATIONS}.")
    student_sites = _sites(student, STUDENT_SITES[mode])
    if not student_sites:
        raise KdError(f"student '{_arch(student)}' has no {mode}-attention tap "
                      f"({', '.join(STUDENT_SITES[mode])}); {WORKING_COMBINATIONS}.")
    count = min(pairs or len(student_sites), len(student_sites), len(teacher_sites[mode]))
    student_taps = [student_sites[i] for i in depth_positions(len(student_sites), count)]
    teacher_taps = [teacher_sites[mode][i] for i in depth_positions(len(teacher_sites[mode]), count)]
    return mode, student_taps, teacher_taps


@register_method
class AttentionSimilarity(Distiller):
    name = "attention"
    reconstructed = "attention KD (A-SKD, transferred from face recognition to SR by kdbench)"
    description = ("A-SKD transferred to SR: 1 - cos between pre-normalisation attention maps, paired by depth "
                   "(att weight 0.4 window maps, 0.02 channel attention)")
    default_weights = {"rec": 1.0, "att": 0.4, "kd": 0.0}  # window mode; channel mode: CHANNEL_MODE_WEIGHT
    Options = AttentionOptions
    version = 2  # per-mode default weights (gradient health)

    def __init__(self, student: nn.Module, teacher: nn.Module | None, options: AttentionOptions) -> None:
        super().__init__(student, teacher, options)
        if options.mode not in MODES:
            raise KdError(f"method.options.mode must be one of {', '.join(MODES)}; got '{options.mode}'.")
        if options.window_maps not in WINDOW_MAPS:
            raise KdError(f"method.options.window_maps must be one of {', '.join(WINDOW_MAPS)}; "
                          f"got '{options.window_maps}'.")
        if options.pairs < 0 or not options.log_floor > 0:
            raise KdError("method.options.pairs must be >= 0 and method.options.log_floor > 0.")
        self.mode, self.student_taps, self.teacher_taps = attention_pairs(student, teacher, options.mode,
                                                                          options.pairs)
        if self.mode == "channel":
            self.default_weights = {**self.default_weights, "att": CHANNEL_MODE_WEIGHT}
        self.adapters = nn.ModuleDict()
        # Window grids depend on each network's padding (and SwinFIR's on its mode), so they are read per step.
        self._padded_size = {side: getattr(model, "padded_size", None)
                             for side, model in (("student", student), ("teacher", teacher))}
        self._check_shapes(student, teacher)

    def _check_shapes(self, student: nn.Module, teacher: nn.Module) -> None:
        """One dry forward per network: the maps must be comparable; builds the channel adapters."""
        s_shapes, t_shapes = _probe_shapes(student, self.student_taps), _probe_shapes(teacher, self.teacher_taps)
        for s_tap, t_tap in zip(self.student_taps, self.teacher_taps):
            s_shape, t_shape = s_shapes.get(s_tap), t_shapes.get(t_tap)
            if s_shape is None or t_shape is None:
                side, tap = ("student", s_tap) if s_shape is None else ("teacher", t_tap)
                raise KdError(f"{side} tap '{tap}' produced no tensor in a forward pass; {WORKING_COMBINATIONS}.")
            if self.mode == "window":
                if len(s_shape) != 4 or len(t_shape) != 4 or s_shape[-1] != t_shape[-1]:
                    raise KdError(
                        f"window maps do not align: student '{s_tap}' {s_shape} vs teacher '{t_tap}' {t_shape} "
                        f"(both need 8x8 windows, i.e. 64x64 maps, over the same padded LR map); {WORKING_COMBINATIONS}."
                    )
                continue
            if len(s_shape) != 4 or s_shape[-1] != s_shape[-2] or len(t_shape) != 4 or t_shape[2:] != (1, 1):
                raise KdError(f"channel attention does not fit: student '{s_tap}' {s_shape} should be (B, G, C, C), "
                              f"teacher '{t_tap}' {t_shape} (B, C, 1, 1); {WORKING_COMBINATIONS}.")
            c_s, c_t = s_shape[-1], t_shape[1]
            key = s_tap.replace(".", "_")
            if self.options.adapter:
                linear = nn.Linear(c_s, c_t, bias=False)
                nn.init.kaiming_normal_(linear.weight, nonlinearity="linear")
                self.adapters[key] = linear
            elif c_s == c_t:
                self.adapters[key] = nn.Identity()
            else:
                raise KdError(f"student '{s_tap}' has {c_s} channels, teacher '{t_tap}' {c_t}: set "
                              "method.options.adapter=true (a linear map between the two channel-attention vectors).")

    def pair_distance(self, s_tap: str, student_map: Tensor, teacher_map: Tensor, lr_shape: torch.Size) -> Tensor:
        teacher_map = teacher_map.detach()
        if self.mode == "window":
            batch, lr_size, window = lr_shape[0], tuple(lr_shape[-2:]), math.isqrt(student_map.shape[-1])
            grids = {side: window_grid(self._padded_size[side], lr_size, window) for side in self._padded_size}
            common = tuple(min(g[i] for g in grids.values()) for i in range(2))
            student_map = shared_windows(student_map, batch, grids["student"], common, "student")
            teacher_map = shared_windows(teacher_map, batch, grids["teacher"], common, "teacher")
            space, floor = self.options.window_maps, self.options.log_floor
            return cosine_distance(window_map_vectors(student_map, space, floor),
                                   window_map_vectors(teacher_map, space, floor))
        student_vec = self.adapters[s_tap.replace(".", "_")](channel_vector(student_map))
        teacher_vec = teacher_map.flatten(1)
        return cosine_distance(student_vec - student_vec.mean(dim=1, keepdim=True),
                               teacher_vec - teacher_vec.mean(dim=1, keepdim=True))

    def losses(self, inputs: StepInputs) -> dict[str, Tensor]:
        per_pair = [
            self.pair_distance(s, inputs.student_feats[s], inputs.teacher_feats[t], inputs.lr.shape)
            for s, t in zip(self.student_taps, self.teacher_taps)
        ]
        return {
            "rec": reconstruction(inputs),
            "att": torch.stack(per_pair).mean(),
            "kd": output_kd_l1(inputs),
        }
