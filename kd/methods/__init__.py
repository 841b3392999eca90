"""Distillation methods: registry and factory.

    method = create_method("fitnet", student, teacher, options={"distance": "mse"})
    list_methods()  # [(name, description), ...]
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from kd.errors import KdError, unknown_choice
from kd.methods.base import Distiller, StepContext, StepInputs

BUILTIN_MODULES = ("kd.methods.none", "kd.methods.logits", "kd.methods.fitnet", "kd.methods.krnet",
                   "kd.methods.lsfd", "kd.methods.facd", "kd.methods.attention")

_METHODS: dict[str, type[Distiller]] = {}
_loaded = False


def register_method(cls: type[Distiller]) -> type[Distiller]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _METHODS and _METHODS[cls.name] is not cls:
        raise ValueError(f"method '{cls.name}' registered twice")
    _METHODS[cls.name] = cls
    return cls


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)


def get_method(name: str) -> type[Distiller]:
    _load_builtins()
    if name not in _METHODS:
        raise unknown_choice("method", name, _METHODS)
    return _METHODS[name]


def list_methods() -> list[tuple[str, str]]:
    """(name, description) of every registered method, sorted by name (for `kdbench list methods`)."""
    _load_builtins()
    return [(name, _METHODS[name].description) for name in sorted(_METHODS)]


def method_options(name: str, options: dict[str, Any] | None = None) -> Any:
    """The method's typed options from a plain dict; unknown options are an error naming the valid ones."""
    from kd.config import build_section

    cls = get_method(name)
    if cls.Options is None:
        if options:
            raise KdError(f"method '{name}' takes no options (got method.options.{next(iter(options))}).")
        return None
    return build_section(cls.Options, dict(options or {}), "method.options", "the configuration")


def loss_weights(name: str, overrides: dict[str, float] | None = None,
                 method: Distiller | None = None) -> dict[str, float]:
    """The method's default loss-term weights updated by `method.weights`; an unknown term is an error.

    A built method may set its own defaults (e.g. per mode); pass it as `method` to start from those.
    """
    cls = get_method(name)
    weights = dict(method.default_weights if method is not None else cls.default_weights)
    for term, value in (overrides or {}).items():
        if term not in weights:
            raise KdError(
                f"method '{name}' has no loss term '{term}' (method.weights.{term}); "
                f"its terms are: {', '.join(weights)}."
            )
        weights[term] = float(value)
    return weights


def create_method(
    name: str, student: nn.Module, teacher: nn.Module | None, options: dict[str, Any] | None = None
) -> Distiller:
    cls = get_method(name)
    if cls.needs_teacher and teacher is None:
        raise KdError(f"method '{name}' needs a teacher; give --teacher (or use method 'none').")
    return cls(student, teacher, method_options(name, options))


__all__ = [
    "Distiller",
    "StepContext",
    "StepInputs",
    "create_method",
    "get_method",
    "list_methods",
    "loss_weights",
    "method_options",
    "register_method",
]
