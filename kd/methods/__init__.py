"""Distillation methods: registry and factory.

    method = create_method("fitnet", student, teacher, options={"distance": "mse"})
    list_methods()  # [(name, description), ...]

Where methods come from:

* built-ins: every module of this package is imported on first use (pkgutil), and each method module registers
  its class with `@register_method`, so adding a built-in method is one new file;
* plugins: installed packages declare entry points in the group `kdbench.methods`, one per method, named after
  the method and pointing at its `Distiller` subclass (or at a module that registers it):

      [project.entry-points."kdbench.methods"]
      my_method = "my_package.my_method:MyMethod"

  A plugin is loaded when its method is asked for (and by `list_methods`); one that fails to import is an error
  naming the plugin and its package, never a traceback, and it does not stop the other methods from working.
  Built-in names come first: a plugin cannot replace a built-in method.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from typing import Any

from torch import nn

from kd.errors import KdError, unknown_choice
from kd.methods.base import Distiller, StepContext, StepInputs

PLUGIN_GROUP = "kdbench.methods"

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
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")


def plugin_entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """Installed `kdbench.methods` entry points by name (read afresh: packages may be installed meanwhile)."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP)}


def _plugin_label(ep: importlib.metadata.EntryPoint) -> str:
    package = f" from package '{ep.dist.name}'" if getattr(ep, "dist", None) is not None else ""
    return f"method plugin '{ep.name}' ({ep.value}){package}"


def load_plugin(ep: importlib.metadata.EntryPoint) -> type[Distiller]:
    """Import one plugin and return its method class; any failure is a KdError naming the plugin."""
    label = _plugin_label(ep)
    try:
        target = ep.load()
    except Exception as exc:  # a broken third-party package: report it, whatever it raised
        raise KdError(
            f"{label} failed to load ({type(exc).__name__}: {exc}); fix or uninstall that package."
        ) from None
    if isinstance(target, type) and issubclass(target, Distiller):
        cls = target
    elif ep.name in _METHODS:  # the entry point named a module whose import registered the method
        cls = _METHODS[ep.name]
    else:
        raise KdError(f"{label} is neither a Distiller subclass nor a module registering method '{ep.name}'.")
    if cls.name != ep.name:
        raise KdError(f"{label} provides a method named '{cls.name}'; the entry point must carry the same name.")
    return register_method(cls)


def get_method(name: str) -> type[Distiller]:
    _load_builtins()
    if name not in _METHODS:
        plugin = plugin_entry_points().get(name)
        if plugin is None:
            raise unknown_choice("method", name, {**_METHODS, **plugin_entry_points()})
        return load_plugin(plugin)
    return _METHODS[name]


def list_methods() -> list[tuple[str, str]]:
    """(name, description) of every method, built-in and plugin, sorted by name (for `kdbench list methods`).

    A plugin that fails to load is listed with the reason instead of hiding every other method.
    """
    _load_builtins()
    described = {name: cls.description for name, cls in _METHODS.items()}
    for name, ep in plugin_entry_points().items():
        if name not in _METHODS:
            try:
                described[name] = load_plugin(ep).description
            except KdError as exc:
                described[name] = f"(not loaded) {exc}"
    return sorted(described.items())


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
                 method: Distiller | None = None, options: dict[str, Any] | None = None) -> dict[str, float]:
    """The method's default loss-term weights updated by `method.weights`; an unknown term is an error.

    A built method may set its own defaults (e.g. per mode); pass it as `method` to start from those, or its
    `options` to check the terms they give it before it is built.
    """
    cls = get_method(name)
    if method is not None:
        weights = dict(method.default_weights)
    elif options is not None:
        weights = cls.weights_for(method_options(name, options))
    else:
        weights = dict(cls.default_weights)
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
    "plugin_entry_points",
    "register_method",
]
