"""Data-parallel training over `torch.distributed`, launched by `torchrun` (one process per device).

Semantics (the same run, spread over processes):
* `train.batch_size` is the **global** batch. With W processes, rank r trains on samples
  [k*B + r*B/W, k*B + (r+1)*B/W) of global batch k, so the W shards together are exactly the single-process batch.
  B must be divisible by W.
* Every trained parameter gets its gradient averaged over the ranks: the student's by DistributedDataParallel
  (bucketed all-reduce overlapping the backward pass), the method's own modules (adapters) by one coalesced
  all-reduce after it. For losses that are means over samples this is the single-process gradient, so
  the run matches a single-process run up to floating-point summation order. Batch statistics go through the same
  average (`StepInputs.average`: the teacher-feature statistics FitNet, LSFD, FACD and KRNet standardise with).
  Only comparisons between samples see the local shard: FACD's negatives come from the local batch.
* Parameters start identical (broadcast from rank 0) and receive identical updates, so every rank holds the same
  weights; only rank 0 logs, validates, checkpoints, evaluates and writes files. Logged loss terms are the
  averages over ranks.
* Resume works as in one process: every rank reads `checkpoints/last.pt`, which holds each rank's RNG state.

Backends: NCCL on CUDA (rank r uses `cuda:<LOCAL_RANK>`), gloo on CPU.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from datetime import timedelta
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from kd.errors import KdError


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job; the default is a single process (every operation a no-op)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch_size: int) -> int:
        """The per-process batch of a global batch."""
        if batch_size % self.world_size:
            raise KdError(
                f"train.batch_size {batch_size} (the global batch) is not divisible by the {self.world_size} "
                f"processes; choose a multiple of {self.world_size} or another --nproc."
            )
        return batch_size // self.world_size

    def average_(self, tensors: Sequence[Tensor]) -> None:
        """In place: each tensor becomes its mean over the ranks (one all-reduce for all of them)."""
        if not self.enabled or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for tensor in tensors:
            count = tensor.numel()
            tensor.copy_(flat[offset:offset + count].view_as(tensor))
            offset += count

    def average_gradients(self, params: Sequence[nn.Parameter]) -> None:
        """Average `.grad` over ranks; a parameter without a gradient on this rank contributes zeros."""
        if not self.enabled:
            return
        for param in params:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
        self.average_([param.grad for param in params])

    def any(self, flag: bool, device: torch.device | str = "cpu") -> bool:
        """True on every rank when `flag` is true on at least one (e.g. Ctrl-C seen by one process)."""
        if not self.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def broadcast_module(self, module: nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank."""
        if not self.enabled:
            return
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)

    def gather_objects(self, obj: Any) -> list[Any]:
        """`obj` from every rank, in rank order (on every rank)."""
        if not self.enabled:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


SINGLE = DistContext()
COLLECTIVE_TIMEOUT = timedelta(hours=1)


def from_environment(device: str) -> DistContext:
    """The context torchrun set up (RANK / WORLD_SIZE / LOCAL_RANK), initialising the process group once."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        # Ranks other than 0 wait in a collective while rank 0 validates or evaluates: allow for a slow evaluation.
        dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
    return DistContext(rank, world_size, local_rank)


def rank_device(device: str, context: DistContext) -> str:
    """One CUDA device per process under torchrun; the CPU is shared."""
    if context.enabled and device == "cuda":
        return f"cuda:{context.local_rank}"
    return device


def check_nproc(nproc: int, device: str) -> None:
    """Fail (CUDA) or warn (CPU) before launching more processes than the machine has devices for."""
    if nproc < 1:
        raise KdError(f"--nproc must be at least 1, got {nproc}.")
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        available = torch.cuda.device_count()
        if nproc > available:
            raise KdError(
                f"--nproc {nproc} asks for one GPU per process but {available} CUDA device(s) are visible; "
                f"use --nproc {max(available, 1)} or fewer (or device=cpu for gloo processes on the CPU)."
            )
        return
    cores = os.cpu_count() or 1
    if nproc > cores:
        warnings.warn(
            f"--nproc {nproc} CPU processes on {cores} core(s): they will share cores and run slower than "
            "one process; use --nproc <= the core count.",
            stacklevel=2,
        )


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """`torchrun --standalone --nproc-per-node N -m kd <argv>`, through this interpreter."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "kd", *argv]


def threads_per_process(nproc: int) -> int:
    return max(1, (os.cpu_count() or 1) // nproc)
