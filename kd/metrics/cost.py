"""Model cost: parameter count and multiply-accumulates (MACs), counted the way ARCHITECTURES.md reports them.

* Parameters: every entry of `model.parameters()` (shared tensors once), buffers excluded. This counts the SwinIR
  relative-position-bias tables and the RCAN/HAN MeanShift convolutions, as the reference figures do (SwinIR's
  papers quote counts without the RPB tables: 897K for SwinIR-S x4 against 929,628 here).
* MACs: `torch.utils.flop_counter.FlopCounterMode` FLOPs / 2 for one forward pass of one image in eval mode, on the
  meta device (no memory, no compute). This includes convolutions, linear layers, matmuls and einsums (attention
  included) and excludes element-wise operations; the input is padded exactly as the network pads it.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from kd.models.registry import probe_inputs


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (no buffers; a parameter shared by two modules counts once)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, lr_size: tuple[int, int] = (48, 48), *, batch: int = 1) -> int:
    """MACs of one eval-mode forward pass on a `batch` x 3 x h x w input, `lr_size=(h, w)`.

    Runs on a meta-device copy of the model (the model itself is not touched). Networks whose forward needs real
    values (data-dependent control flow) fall back to a CPU copy, which is exact but costs a real forward pass.
    """
    h, w = (int(v) for v in lr_size)
    try:
        return _count_on(_copy_to(model, "meta"), torch.device("meta"), batch, h, w)
    except Exception as exc:  # meta kernels are missing for a few ops; CPU gives the same count
        warnings.warn(
            f"counting MACs of {type(model).__name__} on the meta device failed ({type(exc).__name__}: {exc}); "
            "counting on CPU instead",
            RuntimeWarning,
            stacklevel=2,
        )
    if _device_of(model) == torch.device("meta"):
        raise RuntimeError(f"cannot count MACs of {type(model).__name__}: it is on the meta device and fails there")
    return _count_on(_copy_to(model, "cpu"), torch.device("cpu"), batch, h, w)


def macs_for_output(model: nn.Module, scale: int, out_size: tuple[int, int] = (1280, 720)) -> int:
    """MACs to produce one output of `out_size = (width, height)`, the field's efficiency convention.

    The LR input is (height // scale, width // scale): 1280x720 output -> 180x320 LR at x4, 240x426 at x3.
    """
    width, height = (int(v) for v in out_size)
    return count_macs(model, (height // scale, width // scale))


def _device_of(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _copy_to(model: nn.Module, device: str) -> nn.Module:
    """A copy of `model` on `device` (the model itself when it is already there; eval/train is restored after)."""
    if _device_of(model) == torch.device(device):
        return model
    if device == "meta":
        return _meta_clone(model)
    return copy.deepcopy(model).to(device)


def _meta_clone(model: nn.Module) -> nn.Module:
    """Deep copy whose parameters and buffers live on the meta device, without copying any real storage."""
    memo: dict[int, object] = {}
    for tensor in (*model.parameters(), *model.buffers()):
        meta = torch.empty_like(tensor, device="meta")
        if isinstance(tensor, nn.Parameter):
            meta = nn.Parameter(meta, requires_grad=tensor.requires_grad)
        memo[id(tensor)] = meta
    return copy.deepcopy(model, memo)


@torch.no_grad()
def _count_on(model: nn.Module, device: torch.device, batch: int, h: int, w: int) -> int:
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(batch, 3, h, w, device=device)
        with FlopCounterMode(display=False) as counter:
            model(*probe_inputs(model, x))
        return int(counter.get_total_flops()) // 2
    finally:
        model.train(was_training)
