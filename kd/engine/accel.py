"""Fast paths (`accel.*` in the config): bf16 autocast, a half-precision teacher, channels_last, torch.compile,
pinned-memory batches. `teacher_dtype=auto` (the cpu profile's setting) runs the frozen teacher in bf16 and
channels_last where the device computes bf16 natively, and in fp32 elsewhere.

Options that only help on a GPU degrade with a warning on the CPU instead of failing, so one config file serves
both. Two are refused outright because they would silently change what is computed:
* `accel.compile` with a method that taps features: forward hooks registered on submodules after compilation are
  not called by the compiled graph, so the taps would come back empty.
* `accel.precision=fp16`: autocast to fp16 needs loss scaling, which the trainer does not do; bf16 does not.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from kd.config import AccelConfig
from kd.errors import KdError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class AccelPlan:
    """The options in effect on this device, after fallbacks."""

    device_type: str = "cpu"
    autocast_dtype: torch.dtype | None = None  # None: no autocast
    teacher_dtype: torch.dtype = torch.float32
    channels_last: bool = False
    teacher_channels_last: bool = False  # the frozen teacher alone in NHWC (with `auto` bf16 on the CPU)
    compile_backend: str = ""
    pin_memory: bool = False
    warnings: list[str] = field(default_factory=list)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.autocast_dtype)

    def batch(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.contiguous(memory_format=torch.channels_last) if self.channels_last else tensor

    def teacher_input(self, lr: torch.Tensor) -> torch.Tensor:
        """The LR batch in the frozen teacher's dtype and memory format."""
        if self.teacher_channels_last:
            lr = lr.contiguous(memory_format=torch.channels_last)
        return lr.to(self.teacher_dtype)

    def network(self, module: nn.Module, *, frozen_teacher: bool = False) -> nn.Module:
        """Memory format, the teacher's dtype and compilation, applied in place (compilation wraps the forward)."""
        if self.channels_last or (frozen_teacher and self.teacher_channels_last):
            to_channels_last(module)
        if frozen_teacher and self.teacher_dtype != torch.float32:
            module.to(self.teacher_dtype)
        if self.compile_backend:
            module.compile(backend=self.compile_backend)
        return module


def to_channels_last(module: nn.Module) -> nn.Module:
    """NHWC for the 4-d parameters and buffers only: `module.to(memory_format=...)` refuses a network that also has
    other ranks (HAN's layer attention holds a Conv3d)."""
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.dim() == 4:
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    return module


def native_bf16(device_type: str) -> bool:
    """Whether the device computes bf16 in hardware (elsewhere bf16 is emulated and slower than fp32)."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def plan_accel(accel: AccelConfig, device: str, *, taps: bool = False) -> AccelPlan:
    """What `accel` means on `device`; `taps` says whether the method captures intermediate features."""
    device_type = torch.device(device).type
    on_gpu = device_type == "cuda"
    notes: list[str] = []
    teacher_dtype = accel.teacher_dtype
    # bf16 convolutions of oneDNN run fastest in NHWC: measured on an AVX512-BF16 CPU, bf16 alone made an RCAN
    # forward 0.68-0.72x of fp32 and bf16 with channels_last 0.57-0.61x (issue 16).
    teacher_channels_last = False
    if teacher_dtype == "auto":
        teacher_dtype = "bf16" if native_bf16(device_type) else "fp32"
        teacher_channels_last = teacher_dtype == "bf16"
    if teacher_dtype == "fp16" and not on_gpu:
        notes.append("accel.teacher_dtype=fp16 needs a GPU; the teacher runs in fp32 on the CPU (bf16 works there)")
        teacher_dtype = "fp32"
    pin_memory = accel.pin_memory
    if pin_memory and not on_gpu:
        notes.append("accel.pin_memory only speeds up copies to a GPU; ignored on the CPU")
        pin_memory = False
    if accel.compile:
        check_compile_backend(accel.compile)
    if accel.compile and taps:
        raise KdError(
            f"accel.compile={accel.compile!r} cannot be used with a method that taps features (forward hooks on "
            "submodules are not called inside a compiled graph); use it with methods none or logits, or drop it."
        )
    return AccelPlan(
        device_type=device_type,
        autocast_dtype=DTYPES[accel.precision] if accel.precision != "fp32" else None,
        teacher_dtype=DTYPES[teacher_dtype],
        channels_last=accel.channels_last,
        teacher_channels_last=teacher_channels_last,
        compile_backend=accel.compile,
        pin_memory=pin_memory,
        warnings=notes,
    )


def check_compile_backend(backend: str) -> None:
    """A `torch.compile` backend this torch knows, before anything is built (torch says so only at the first step)."""
    import torch._dynamo

    if backend not in torch._dynamo.list_backends(exclude_tags=()):
        raise KdError(f"accel.compile={backend!r} is not a torch.compile backend of this torch; use one of "
                      f"{', '.join(torch._dynamo.list_backends())}, or '' to run uncompiled.")


def as_float32(value: Any) -> Any:
    """Teacher outputs and taps in fp32, whatever precision produced them (methods compute in fp32)."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: as_float32(v) for k, v in value.items()}
    return value
