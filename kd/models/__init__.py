"""Networks: registry and factory, official checkpoint loading, feature taps."""

from kd.models.loading import identify_architecture, load_official, read_checkpoint
from kd.models.registry import (
    ModelEntry, create, get_entry, list_entries, probe_inputs, register_model, resolve_fields, sr_inputs,
)
from kd.models.taps import TapPoint, capture, resolve_taps

__all__ = [
    "ModelEntry",
    "TapPoint",
    "capture",
    "create",
    "get_entry",
    "identify_architecture",
    "list_entries",
    "load_official",
    "probe_inputs",
    "read_checkpoint",
    "register_model",
    "resolve_fields",
    "resolve_taps",
    "sr_inputs",
]
