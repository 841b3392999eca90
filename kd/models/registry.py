"""Registry of kdbench networks: every student, teacher and baseline is built through `create`.

A network module registers a `ModelEntry` at import time. Presets are plain data: a mapping from preset name
to constructor fields. `create(arch, scale, preset=None, **fields)` starts from the preset (default `paper`, the
official configuration) and overrides it with explicit fields, so `create(**fixture["config"])` builds exactly
the configuration a parity fixture names.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from kd.errors import KdError, unknown_choice

# Packages whose every module registers built-in networks (one file per network), and single modules; imported on
# first use of the registry, so adding a network is one new file.
BUILTIN_PACKAGES = ("students", "teachers")
BUILTIN_MODULES = ("kd.models.bicubic",)

PRESET_KINDS = ("paper", "mini", "tiny")


@dataclass(frozen=True)
class ModelEntry:
    arch: str
    builder: Callable[..., nn.Module]  # called as builder(scale=..., **fields)
    role: str  # "student", "teacher" or "baseline"
    presets: Mapping[str, Mapping[str, Any]]
    description: str = ""
    scales: tuple[int, ...] = (2, 3, 4)
    aliases: tuple[str, ...] = ()
    default_preset: str = "paper"
    # Teacher family for per-family defaults (`Profile.method_weights`): "cnn" or "transformer"; "" for none.
    family: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    # Bump when a change to the network's code changes what it computes: every run of it gets a new id
    # (`kd.models.sources`); a change that computes the same is recorded with `python -m kd.models.sources --refresh`.
    version: int = 1

    def fields(self) -> list[str]:
        params = inspect.signature(self.builder).parameters
        return [name for name in params if name != "scale"]


_ENTRIES: dict[str, ModelEntry] = {}
_loaded = False


def register_model(entry: ModelEntry) -> ModelEntry:
    for name in (entry.arch, *entry.aliases):
        if name in _ENTRIES and _ENTRIES[name] is not entry:
            raise ValueError(f"model name '{name}' registered twice")
        _ENTRIES[name] = entry
    return entry


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for package_name in BUILTIN_PACKAGES:
        package = importlib.import_module(package_name)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package_name}.{module.name}")
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def get_entry(arch: str) -> ModelEntry:
    _load_builtins()
    key = arch.lower()
    if key not in _ENTRIES:
        raise unknown_choice("architecture", arch, _ENTRIES)
    return _ENTRIES[key]


def list_entries() -> list[ModelEntry]:
    """Registered networks, one entry each (aliases folded), sorted by role then name."""
    _load_builtins()
    unique = {id(e): e for e in _ENTRIES.values()}.values()
    return sorted(unique, key=lambda e: (e.role, e.arch))


def resolve_fields(arch: str, preset: str | None = None, **fields: Any) -> dict[str, Any]:
    """The constructor fields `create` would use: the preset's, overridden by explicit ones."""
    entry = get_entry(arch)
    name = preset or entry.default_preset
    if name not in entry.presets:
        raise unknown_choice(f"preset of '{entry.arch}'", name, entry.presets)
    valid = entry.fields()
    unknown = [key for key in fields if key not in valid]
    if unknown:
        raise KdError(
            f"'{entry.arch}' has no field {', '.join(map(repr, unknown))}. Valid fields: {', '.join(valid)}."
        )
    return {**entry.presets[name], **fields}


def create(arch: str, scale: int, preset: str | None = None, **fields: Any) -> nn.Module:
    """Build a registered network. Every network maps RGB in [0, 1] to RGB in [0, 1]."""
    entry = get_entry(arch)
    scale = int(scale)
    if scale not in entry.scales:
        raise KdError(
            f"'{entry.arch}' does not support scale x{scale}; supported: "
            + ", ".join(f"x{s}" for s in entry.scales)
        )
    resolved = resolve_fields(arch, preset, **fields)
    model = entry.builder(scale=scale, **resolved)
    model.kd_spec = {"arch": entry.arch, "scale": scale, "preset": preset or entry.default_preset, **resolved}
    return model


def sr_inputs(model: nn.Module, lr: Tensor, hr: Tensor) -> tuple[Tensor, ...]:
    """Positional inputs of a forward pass on a training or test pair: `(lr,)`, or `(lr, hr)` for a network that
    declares `needs_hr` (KDSR's teacher, called as `model(lr, hr)`: its degradation encoder sees the HR)."""
    return (lr, hr) if getattr(model, "needs_hr", False) else (lr,)


def probe_inputs(model: nn.Module, lr: Tensor) -> tuple[Tensor, ...]:
    """Positional inputs of a measuring forward pass (MAC counting, tap probing, tests) on an LR batch: `(lr,)`, or
    `(lr, zero HR)` for a network that declares `needs_hr`, where only the shapes matter. Training and evaluation
    feed the real HR instead (`sr_inputs`)."""
    if not getattr(model, "needs_hr", False):
        return (lr,)
    b, _, h, w = lr.shape
    return lr, lr.new_zeros(b, 3, h * model.scale, w * model.scale)
