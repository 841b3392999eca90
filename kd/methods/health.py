"""Method health: how hard each weighted distillation term pulls on the student, relative to reconstruction.

    ratio(term) = || d(w_term * L_term) / d theta_S || / || d(w_rec * L_rec) / d theta_S ||

over the student's trainable parameters. A ratio far below 1 means the term is inert (its weight or its units make
it vanish beside the L1 term); far above, it drowns the reconstruction. The trainer logs the ratios at step 0 and
every `log_every * 10` steps into `metrics.jsonl` and warns outside `HEALTHY` (except below it for a term a method
keeps at a published weight that leaves it nearly inert, which it notes once); `kdbench report` tabulates them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from kd.methods.base import Average, Distiller, no_average

REFERENCE_TERM = "rec"
HEALTHY = (0.01, 10.0)


def _norm(grads: Sequence[Tensor | None]) -> float:
    squares = [g.detach().float().pow(2).sum() for g in grads if g is not None]
    return float(torch.stack(squares).sum().sqrt()) if squares else 0.0


def gradient_ratios(terms: dict[str, Tensor], weights: dict[str, float], params: Sequence[Tensor],
                    average: Average = no_average) -> dict[str, float]:
    """The ratio of every weighted non-reconstruction term (weight != 0) to the reconstruction term; the graph of
    `terms` is kept, so the caller can still back-propagate the total. Empty when there is nothing to compare.
    `average` (in place over data-parallel ranks) makes the gradients those of the global batch."""
    params = [p for p in params if p.requires_grad]
    reference = terms.get(REFERENCE_TERM)
    if reference is None or not weights.get(REFERENCE_TERM) or not params:
        return {}

    def norm_of(name: str) -> float:
        value = weights[name] * terms[name]
        grads = [torch.zeros_like(p) for p in params] if not value.requires_grad else [
            torch.zeros_like(p) if g is None else g
            for p, g in zip(params, torch.autograd.grad(value, params, retain_graph=True, allow_unused=True))]
        average(grads)
        return _norm(grads)

    reference_norm = norm_of(REFERENCE_TERM)
    if reference_norm == 0:
        return {}
    return {name: norm_of(name) / reference_norm for name in terms
            if name != REFERENCE_TERM and weights.get(name)}


def inert_as_published(method: type[Distiller] | Distiller, weights: dict[str, float]) -> frozenset[str]:
    """The method's `published_inert` terms that `weights` still give their published weight."""
    return frozenset(term for term in method.published_inert
                     if term in weights and weights[term] == method.default_weights.get(term))


def out_of_range(ratios: dict[str, float], healthy: tuple[float, float] = HEALTHY) -> dict[str, float]:
    low, high = healthy
    return {name: ratio for name, ratio in ratios.items() if not low <= ratio <= high}
