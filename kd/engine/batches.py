"""Training batches as a pure function of the step: batch k holds samples [k*B, (k+1)*B) of a patch dataset
whose item i is itself a pure function of (seed, i). Resuming at step k therefore needs only k."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler


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
    """Batches of (lr, hr) patches from a map-style dataset of (lr, hr) pairs.

    `batch_size` is the global batch; with `world_size` > 1 this process yields only its shard, samples
    [k*B + rank*b, k*B + (rank+1)*b) of batch k with b = B / world_size (see `kd.engine.distributed`)."""

    def __init__(self, dataset: Dataset, batch_size: int, workers: int = 0, *, rank: int = 0, world_size: int = 1,
                 pin_memory: bool = False) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.local_batch_size = batch_size // world_size
        self.offset = rank * self.local_batch_size
        self.workers = workers
        self.pin_memory = pin_memory

    def _indices(self, step: int) -> range:
        first = step * self.batch_size + self.offset
        return range(first, first + self.local_batch_size)

    def iterate(self, start_step: int, end_step: int) -> Iterator[tuple[Tensor, Tensor]]:
        loader = DataLoader(
            self.dataset, batch_size=self.local_batch_size, sampler=_StepSampler(self, start_step, end_step),
            drop_last=True,
            num_workers=self.workers, pin_memory=self.pin_memory,
        )
        yield from loader

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        items = [self.dataset[i] for i in self._indices(step)]
        return torch.stack([lr for lr, _ in items]), torch.stack([hr for _, hr in items])


class _StepSampler(Sampler[int]):
    """This process's sample indices for steps [start, end), generated lazily (paper runs have 10^7 samples)."""

    def __init__(self, batches: PatchBatches, start: int, end: int) -> None:
        self.batches, self.start, self.end = batches, start, end

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start, self.end):
            yield from self.batches._indices(step)

    def __len__(self) -> int:
        return (self.end - self.start) * self.batches.local_batch_size


def patch_batches(
    dataset: str, scale: int, lr_patch: int, batch_size: int, steps: int, *, seed: int, augment: bool = True,
    data_root: str | None = None, workers: int = 0, rank: int = 0, world_size: int = 1, pin_memory: bool = False,
    degradation: str = "bicubic",
) -> PatchBatches:
    """Batches from `kd.data.patches.PatchDataset` (the project's patch pipeline); a blind-SR `degradation` draws one
    kernel per global batch."""
    from kd.data.patches import PatchDataset

    patches = PatchDataset(
        dataset, scale, lr_patch, data_root=data_root, seed=seed, augment=augment, length=steps * batch_size,
        degradation=degradation, batch_size=batch_size,
    )
    return PatchBatches(patches, batch_size, workers, rank=rank, world_size=world_size, pin_memory=pin_memory)
