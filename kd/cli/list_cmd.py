"""`kdbench list <what>`: what kdbench knows about. One sub-parser per thing (`models`; more can be added).

    kdbench list models           networks, roles, aliases, presets and parameter counts at x4
    kdbench list models --taps    the documented distillation taps of every network

To add a thing, write `_register_<thing>(things)` adding a sub-parser with its own handler, and call it in
`register`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from kd.errors import KdError
from kd.output import TextTable, print_table

if TYPE_CHECKING:
    from torch import nn

    from kd.models.registry import ModelEntry

LIST_SCALE = 4


def register(subparsers) -> None:
    parser = subparsers.add_parser("list", help="list networks (and other registered things)",
                                   description="List what kdbench knows about.")
    things = parser.add_subparsers(dest="what", metavar="WHAT")
    parser.set_defaults(handler=lambda args: _missing_what(parser))
    _register_models(things)
    _register_methods(things)


def _missing_what(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


# ---------------------------------------------------------------------------------------------------- models


def _register_models(things) -> None:
    parser = things.add_parser(
        "models",
        help="registered networks with their presets and parameter counts",
        description=f"Registered networks: role, aliases, presets and parameters of each preset at x{LIST_SCALE} "
        "(counted on the meta device, no weights allocated).",
    )
    parser.add_argument("--taps", action="store_true", help="list each network's documented feature taps instead")
    parser.set_defaults(handler=list_models)


def _meta_model(entry: ModelEntry, preset: str) -> nn.Module | None:
    import torch

    from kd.models import create

    scale = LIST_SCALE if LIST_SCALE in entry.scales else max(entry.scales)
    try:
        with torch.device("meta"):
            return create(entry.arch, scale, preset=preset)
    except Exception:  # a listing must not fail because one preset does not build; it shows "?" instead
        return None


def _format_count(model: nn.Module | None) -> str:
    return "?" if model is None else f"{sum(p.numel() for p in model.parameters()):,}"


def _short_count(model: nn.Module | None) -> str:
    if model is None:
        return "?"
    count = sum(p.numel() for p in model.parameters())
    return f"{count / 1e6:.2f}M" if count >= 1e6 else f"{count / 1e3:.0f}K"


def models_table(entries: list[ModelEntry]) -> TextTable:
    from kd.models.registry import PRESET_KINDS

    # One column per common preset kind; a network's other presets (the students of published tables) share one
    # column ("name=count", so a count is never separated from its preset when the column wraps).
    presets = [name for name in PRESET_KINDS if any(name in entry.presets for entry in entries)]
    table = TextTable(title=f"kdbench networks (parameters of each preset at x{LIST_SCALE})")
    table.add_column("name")
    table.add_column("role")
    table.add_column("aliases", wrap=True)
    for name in presets:
        table.add_column(name, justify="right")
    table.add_column("others", wrap=True)
    table.add_column("description", wrap=True)
    for entry in entries:
        counts = [_format_count(_meta_model(entry, name)) if name in entry.presets else "-" for name in presets]
        others = ", ".join(f"{name}={_short_count(_meta_model(entry, name))}"
                           for name in entry.presets if name not in PRESET_KINDS) or "-"
        table.add_row(entry.arch, entry.role, ", ".join(entry.aliases) or "-", *counts, others, entry.description)
    return table


def taps_table(entries: list[ModelEntry]) -> TextTable:
    table = TextTable(title="documented feature taps (glob patterns over module names)")
    table.add_column("network")
    table.add_column("tap pattern")
    table.add_column("what it is", wrap=True)
    for entry in entries:
        model = _meta_model(entry, entry.default_preset)
        taps = getattr(model, "TAPS", None) or {}
        if not taps:
            table.add_row(entry.arch, "-", "no documented taps")
        for i, (pattern, description) in enumerate(taps.items()):
            table.add_row(entry.arch, pattern, description, end_section=i == len(taps) - 1)
    return table


def list_models(args: argparse.Namespace) -> int:
    from kd.models import list_entries

    entries = list_entries()
    print_table(taps_table(entries) if args.taps else models_table(entries))
    return 0


# ---------------------------------------------------------------------------------------------------- methods


def _register_methods(things) -> None:
    parser = things.add_parser("methods", help="distillation methods with their loss terms",
                               description="Registered distillation methods (`kdbench run --method NAME`).")
    parser.add_argument("--taps", action="store_true", help="show which student tap each teacher tap is paired "
                        "with (feature methods and attention KD) instead")
    parser.add_argument("--student", default="asid", help="student for --taps (default: asid)")
    parser.set_defaults(handler=list_methods_command)


PAIRING_TEACHERS = (("rcan", "mini"), ("han", "mini"), ("swinir", "mini"), ("swinfir", "mini"), ("rcan", "paper"),
                    ("han", "paper"), ("swinir", "paper"), ("swinir_light", "paper"), ("edsr", "paper"))


def pairing_table(student_arch: str) -> TextTable:
    """Tap pairs of the feature methods (fitnet, lsfd, facd, krnet: 3 pairs by relative depth, the last tail to
    tail) and of attention KD, for each teacher kind, on meta-device networks (no weights allocated)."""
    import torch

    from kd.methods.attention import attention_pairs
    from kd.methods.pairing import pair_by_depth
    from kd.models import create

    table = TextTable(title=f"tap pairing with student {student_arch} (student tap -> teacher tap)")
    table.add_column("teacher")
    table.add_column("fitnet, lsfd, facd, krnet", wrap=True)
    table.add_column("attention", wrap=True)
    for arch, preset in PAIRING_TEACHERS:
        with torch.device("meta"):
            student = create(student_arch, LIST_SCALE)
            teacher = create(arch, LIST_SCALE, preset)
        feature = "; ".join(f"{s} -> {t}" for s, t in zip(*pair_by_depth(student, teacher, 3)))
        try:
            mode, s_taps, t_taps = attention_pairs(student, teacher)
            attention = f"{mode} mode, {len(s_taps)} pairs: " + "; ".join(
                f"{s} -> {t}" for s, t in zip(s_taps, t_taps))
        except KdError as exc:
            attention = f"not available: {exc}"
        table.add_row(f"{arch} {preset}", feature, attention)
    return table


def list_methods_command(args: argparse.Namespace) -> int:
    from kd.methods import get_method, list_methods

    if args.taps:
        print_table(pairing_table(args.student))
        return 0

    table = TextTable(title="kdbench distillation methods")
    table.add_column("name")
    table.add_column("teacher")
    table.add_column("loss terms (default weights)", wrap=True)
    table.add_column("description", wrap=True)
    loaded = []
    for name, description in list_methods():
        try:
            method = get_method(name)
        except KdError:  # a broken plugin: its description already says why
            table.add_row(name, "?", "?", description)
            continue
        loaded.append(method)
        weights = ", ".join(f"{term} {weight:g}" for term, weight in method.default_weights.items())
        table.add_row(name, "yes" if method.needs_teacher else "no", weights, description)
    print_table(table)
    releases = releases_table(loaded)
    if releases.rows:
        print_table(releases)
    return 0


def releases_table(methods: list) -> TextTable:
    """Per-pair settings of the methods' released configurations, which a run from that teacher gets over the
    method's defaults (its saved config.yaml shows them)."""
    from kd.models import list_entries

    architectures = {entry.arch for entry in list_entries()}
    table = TextTable(title="released settings per teacher (layered over the defaults; the run's config.yaml shows "
                      "them)", key=3)
    table.add_column("method")
    table.add_column("teacher")
    table.add_column("scale")
    table.add_column("settings", wrap=True)
    for method in methods:
        for teacher, by_scale in method.releases.items():
            for scale, release in by_scale.items():
                weights = ", ".join(f"{term} {weight:g}" for term, weight in release.weights.items())
                options = ", ".join(f"{key}={value}" for key, value in release.options.items())
                table.add_row(method.name, teacher if teacher in architectures else f"other {teacher}",
                              f"x{scale}" if scale else "all", f"{weights}; {options} ({release.source})")
    return table
