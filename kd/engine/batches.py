"""Training batches as a pure function of the step: batch k holds samples [k*B, (k+1)*B) of a patch dataset
whose item i is itself a pure function of (seed, i). Resuming at step k therefore needs only k."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset


class BatchSource(Protocol):
    batch_size: int

    def iterate(self, start_step: int, end_step: int) -> Iterator[tuple[Tensor, Tensor]]: ...

    def batch(self, step: int) -> tuple[Tensor, Tensor]: ...


class FixedBatch:
    """The same (lr, hr) batch at every step: for overfitting checks and step-cost benchmarks."""

    def __init__(self, lr: Tensor, hr: Tensor) -> None:
        self.lr, self.hr, self.batch_size = lr, hr, lr.shape[0]

    def iterate(self, start_step: int, end_step: int) -> Iterator[tuple[Tensor, Tensor]]:
        for _ in range(start_step, end_step):
            yield self.lr, self.hr

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        return self.lr, self.hr


class PatchBatches:
    """Batches of (lr, hr) patches from a map-style dataset of (lr, hr) pairs."""

    def __init__(self, dataset: Dataset, batch_size: int, workers: int = 0) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.workers = workers

    def iterate(self, start_step: int, end_step: int) -> Iterator[tuple[Tensor, Tensor]]:
        indices = range(start_step * self.batch_size, end_step * self.batch_size)
        loader = DataLoader(
            self.dataset, batch_size=self.batch_size, sampler=indices, drop_last=True, num_workers=self.workers
        )
        yield from loader

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        items = [self.dataset[i] for i in range(step * self.batch_size, (step + 1) * self.batch_size)]
        return torch.stack([lr for lr, _ in items]), torch.stack([hr for _, hr in items])


def patch_batches(
    dataset: str, scale: int, lr_patch: int, batch_size: int, steps: int, *, seed: int, augment: bool = True,
    data_root: str | None = None, workers: int = 0,
) -> PatchBatches:
    """Batches from `kd.data.patches.PatchDataset` (the project's patch pipeline)."""
    from kd.data.patches import PatchDataset

    patches = PatchDataset(
        dataset, scale, lr_patch, data_root=data_root, seed=seed, augment=augment, length=steps * batch_size
    )
    return PatchBatches(patches, batch_size, workers)
