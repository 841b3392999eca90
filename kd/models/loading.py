"""Load official checkpoints (ASID, RCAN, HAN, SwinIR, EDSR) into kdbench networks, strictly, with readable errors.

Every kdbench network keeps the official state_dict key names, so loading needs no key map. This module only
unwraps the packaging, strips a DataParallel `module.` prefix, lets the network adapt size-dependent buffers
(SwinIR `attn_mask`) and explains a mismatch in terms a user can act on:

    missing 4 keys (...), unexpected 2 keys (...), wrong shape 1 (...)
    checkpoint is x2: upsampler has 12 output channels; model is x4

Packagings understood (the first that applies wins):

* a raw state_dict (ASID `epoch0_ASID.pth`, RCAN/HAN `*_BIX{s}.pt`);
* `{'params_ema': sd, ...}` and/or `{'params': sd, ...}` (SwinIR / KAIR / BasicSR). When both are present the EMA
  weights are used, as BasicSR's test configs and SwinIR's `main_test_swinir.py` do for models trained with EMA;
  pass `param_key='params'` to choose the raw weights instead. Official SwinIR releases hold only one of the two;
* `{'state_dict': sd, ...}` (generic trainer checkpoints).

Files are always read with `torch.load(..., map_location="cpu", weights_only=True)`: a checkpoint that needs
arbitrary Python objects to unpickle is refused, never executed.

A network module can help with two hooks:

* `describe_state_dict(state_dict) -> dict` (module-level function or static method): what a state dict is, at
  least `{"scale": s}`, e.g. also `img_size`, `window_size`, and optionally `"evidence"` (a short phrase such as
  "upsampler has 12 output channels") used in the error message;
* `model.adapt_official_state_dict(state_dict) -> state_dict`: adjust entries that depend on how the checkpoint
  was trained rather than on the architecture (SwinIR masks built for another training patch size).
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable, Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kd.errors import KdError

StateDict = dict[str, torch.Tensor]

PACKAGING_KEYS = ("params_ema", "params", "state_dict")
PREFIXES_TO_STRIP = ("module.",)
SHOW_PER_KIND = 5

# Architecture fingerprints, checked in order: HAN contains every RCAN key, so HAN comes first; MDSR has EDSR's keys
# plus `pre_process.*`, so MDSR comes before EDSR. SAN and FAKD's SAN copy share key names (one family, "san").
_FINGERPRINTS: tuple[tuple[str, str, Callable[[set[str]], bool]], ...] = (
    ("asid", "keys 'input.weight' and 'block0.*'", lambda k: "input.weight" in k and _any_prefix(k, "block0.")),
    ("a2n", "keys 'AAB_trunk.*'", lambda k: _any_prefix(k, "AAB_trunk.")),
    ("ncnet", "plain convs 'body.0.weight' .. 'body.12.weight' at even indices",
     lambda k: {"body.0.weight", "body.12.weight"} <= k and "body.1.weight" not in k),
    # HSRNet also has 'sub_mean.*' and 'body.*' (RCAN's fingerprint), so it comes before RCAN.
    ("hsrnet", "keys 'SolverLS.*' / 'Denoiser.*'",
     lambda k: _any_prefix(k, "SolverLS.") or _any_prefix(k, "Denoiser.")),
    ("ikm", "keys 'input.weight' and '*.Conv2d.weight'",
     lambda k: "input.weight" in k and any(key.endswith(".Conv2d.weight") for key in k)),
    ("san", "keys 'RG.*' and 'non_local.non_local.*'",
     lambda k: _any_prefix(k, "RG.") and _any_prefix(k, "non_local.non_local.")),
    ("emsrdpn", "keys 'SFENet1.*' and 'SRDPBs.*'", lambda k: _any_prefix(k, "SFENet1.") and _any_prefix(k, "SRDPBs.")),
    ("mdsr", "keys 'pre_process.*' beside an EDSR trunk", lambda k: _any_prefix(k, "pre_process.")),
    ("han", "keys 'la.*' / 'csa.*' beside an RCAN trunk", lambda k: _any_prefix(k, "la.") or _any_prefix(k, "csa.")),
    # EDSR's blocks sit directly in the body (`body.0.body.0`); RCAN's inside groups (`body.0.body.0.body.0`).
    # `body.0.body.2.*`: `.weight`, or `.primary_conv.weight` where the ResBlock convs are GhostSR ghost convs.
    ("edsr", "keys 'sub_mean.*' and 'body.0.body.2.weight' without 'body.0.body.0.body.*'",
     lambda k: "sub_mean.weight" in k and _any_prefix(k, "body.0.body.2.")
     and not _any_prefix(k, "body.0.body.0.body.")),
    ("rcan", "keys 'sub_mean.*' and 'body.*'", lambda k: _any_prefix(k, "sub_mean.") and _any_prefix(k, "body.")),
    ("hpinet", "keys 'first_conv.*' and 'cross_match.*'",
     lambda k: "first_conv.weight" in k and _any_prefix(k, "cross_match.")),
    # SwinFIR holds every SwinIR key plus the spatial-frequency blocks, so it comes before SwinIR.
    ("swinfir", "keys 'layers.*.conv.F.fu.*' (spatial-frequency blocks)",
     lambda k: any(".conv.F.fu." in key for key in k)),
    ("swinir", "keys 'patch_embed.*' / 'layers.*'", lambda k: _any_prefix(k, "patch_embed.") or _any_prefix(k, "layers.")),
    ("kdsr_teacher", "keys 'G.*' beside an encoder 'E.*'",
     lambda k: _any_prefix(k, "G.body.") and _any_prefix(k, "E.E.")),
    ("kdsr", "keys 'G.*' beside an encoder 'E_st.*'",
     lambda k: _any_prefix(k, "G.body.") and _any_prefix(k, "E_st.E.")),
)

# `_family` takes the first name that `arch` equals or extends: `kdsr_teacher` is listed before `kdsr`, and FAKD's SAN
# copy (`san_fakd`) is of the "san" family.
_DISPLAY_NAMES = {"asid": "ASID", "han": "HAN", "edsr": "EDSR", "rcan": "RCAN", "swinir": "SwinIR",
                  "swinfir": "SwinFIR", "hpinet": "HPINet", "kdsr_teacher": "KDSR teacher", "kdsr": "KDSR",
                  "a2n": "A2N", "ncnet": "NCNet", "hsrnet": "HSRNet", "ikm": "U-HDN+IKM", "san": "SAN",
                  "emsrdpn": "EMSRDPN", "mdsr": "MDSR"}
_WITH_ARTICLE = {"asid": "an ASID", "han": "a HAN", "edsr": "an EDSR", "rcan": "an RCAN", "swinir": "a SwinIR",
                 "swinfir": "a SwinFIR", "hpinet": "an HPINet", "kdsr_teacher": "a KDSR teacher", "kdsr": "a KDSR",
                 "a2n": "an A2N", "ncnet": "an NCNet", "hsrnet": "an HSRNet", "ikm": "a U-HDN+IKM", "san": "a SAN",
                 "emsrdpn": "an EMSRDPN", "mdsr": "an MDSR"}


def _any_prefix(keys: set[str], prefix: str) -> bool:
    return any(key.startswith(prefix) for key in keys)


# ---------------------------------------------------------------------------------------------------- reading


def read_checkpoint(path: str | PathLike, *, param_key: str | None = None) -> StateDict:
    """The state dict stored in a checkpoint file, unwrapped and with a `module.` prefix stripped."""
    path = Path(path)
    if not path.is_file():
        raise KdError(f"checkpoint '{path}' not found (or not a file); check the path.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise KdError(
                f"checkpoint '{path}' was refused: it contains Python objects other than tensors and plain "
                "containers, which kdbench never unpickles (torch.load weights_only=True). Re-save the state dict "
                "alone, e.g. torch.save(model.state_dict(), path), from a trusted environment."
            ) from None
        raise KdError(f"'{path}' is not a readable PyTorch checkpoint ({exc}).") from None
    except Exception as exc:  # torch.load raises many types for non-checkpoint files
        raise KdError(
            f"'{path}' is not a PyTorch checkpoint ({type(exc).__name__}: {exc}); "
            "expected a .pt/.pth file written by torch.save."
        ) from None
    return unwrap_state_dict(obj, source=f"'{path}'", param_key=param_key)


def unwrap_state_dict(obj: Any, *, source: str = "checkpoint", param_key: str | None = None) -> StateDict:
    """The state dict inside a checkpoint object (raw, `params_ema`, `params` or `state_dict` packaging)."""
    if not isinstance(obj, Mapping):
        raise KdError(f"{source} holds a {type(obj).__name__}, not a state dict; expected a dict of tensors.")
    if param_key is not None:
        if param_key not in obj:
            keys = ", ".join(repr(k) for k in list(obj)[:8])
            raise KdError(f"{source} has no entry '{param_key}'; its top-level keys are {keys}.")
        obj = obj[param_key]
    elif not _is_tensor_dict(obj):
        for key in PACKAGING_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not _is_tensor_dict(obj):
        keys = ", ".join(repr(k) for k in list(obj)[:8]) if isinstance(obj, Mapping) else type(obj).__name__
        raise KdError(
            f"{source} is not a state dict: expected a dict of tensors, or one wrapped as "
            f"{' / '.join(repr(k) for k in PACKAGING_KEYS)}; found {keys}."
        )
    return strip_prefixes(dict(obj))


def _is_tensor_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def strip_prefixes(state_dict: StateDict, prefixes: tuple[str, ...] = PREFIXES_TO_STRIP) -> StateDict:
    """Remove a prefix (DataParallel's `module.`) when every key carries it."""
    for prefix in prefixes:
        if state_dict and all(key.startswith(prefix) for key in state_dict):
            state_dict = {key[len(prefix):]: value for key, value in state_dict.items()}
    return state_dict


# ---------------------------------------------------------------------------------------------------- knowing


def identify_architecture(state_dict: Mapping[str, Any]) -> str | None:
    """Which official architecture a state dict belongs to ('asid', 'han', 'rcan', 'swinir'), from key fingerprints."""
    keys = set(state_dict)
    for arch, _, matches in _FINGERPRINTS:
        if matches(keys):
            return arch
    return None


def _fingerprint_phrase(arch: str) -> str:
    return next(phrase for name, phrase, _ in _FINGERPRINTS if name == arch)


def describe_hook(model_or_arch: nn.Module | str) -> Callable[[Mapping[str, torch.Tensor]], dict] | None:
    """The `describe_state_dict` hook of a network (given a model, or an architecture name in the registry)."""
    if isinstance(model_or_arch, str):
        from kd.models.registry import get_entry

        try:
            builder = get_entry(model_or_arch).builder
        except KdError:
            return None
        hook = getattr(builder, "describe_state_dict", None)
        module_name = builder.__module__
    else:
        hook = getattr(model_or_arch, "describe_state_dict", None)
        module_name = type(model_or_arch).__module__
    if hook is None:
        hook = getattr(sys.modules.get(module_name), "describe_state_dict", None)
    return hook if callable(hook) else None


def _safe_describe(hook, state_dict: Mapping[str, torch.Tensor]) -> dict:
    if hook is None:
        return {}
    try:
        return dict(hook(state_dict) or {})
    except Exception:  # a hook must never hide the real error behind its own
        return {}


_NOT_COMPARED = ("arch", "evidence", "prefix")


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool)) or (
        isinstance(value, (list, tuple)) and all(isinstance(v, (int, float, str)) for v in value)
    )


def _format_facts(facts: Mapping[str, Any], keys: list[str]) -> str:
    parts = []
    for key in keys:
        value = facts[key]
        parts.append(f"x{value}" if key == "scale" else f"{key} {value}")
    return ", ".join(parts)


def explain_mismatch(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> str:
    """One sentence on what the checkpoint is when it does not fit the model ('' when nothing can be said)."""
    spec_arch = getattr(model, "kd_spec", {}).get("arch")
    model_family = _family(spec_arch) if spec_arch else identify_architecture(model.state_dict())
    ckpt_arch = identify_architecture(state_dict)
    if ckpt_arch and ckpt_arch != model_family:
        name = _WITH_ARTICLE.get(ckpt_arch, ckpt_arch)
        facts = _safe_describe(describe_hook(ckpt_arch), state_dict)
        shown = [k for k in facts if k not in _NOT_COMPARED and _is_scalar(facts[k])]
        extra = f" ({_format_facts(facts, shown)})" if shown else ""
        return (
            f"checkpoint looks like {name} checkpoint{extra} ({_fingerprint_phrase(ckpt_arch)}), "
            f"but the model is {spec_arch or type(model).__name__}; build the model with "
            f"create('{ckpt_arch}', ...) instead."
        )
    hook = describe_hook(model)
    ckpt_facts = _safe_describe(hook, state_dict)
    model_facts = _safe_describe(hook, model.state_dict())
    differing = [
        k for k in ckpt_facts
        if k not in _NOT_COMPARED and k in model_facts and ckpt_facts[k] != model_facts[k]
    ]
    # A different scale explains every upsampler difference; other differing fields would only repeat it.
    headline = ["scale"] if "scale" in differing else [k for k in differing if _is_scalar(ckpt_facts[k])]
    if ckpt_facts.get("evidence"):
        details = [str(ckpt_facts["evidence"])]
    else:
        details = [f"{k} {ckpt_facts[k]}" for k in differing if k not in headline]
    if not headline:
        return ""
    because = f": {'; '.join(details)}" if details else ""
    return (
        f"checkpoint is {_format_facts(ckpt_facts, headline)}{because}; "
        f"model is {_format_facts(model_facts, headline)}."
    )


def _family(arch: str) -> str:
    """Fingerprint family of a registered architecture name (variants such as 'asid_d8' share their base's keys)."""
    for family in _DISPLAY_NAMES:
        if arch == family or arch.startswith(family + "_") or arch.startswith(family + "-"):
            return family
    return arch


# ---------------------------------------------------------------------------------------------------- checking


def state_dict_diff(
    model_sd: Mapping[str, torch.Tensor], ckpt_sd: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[tuple[str, tuple, tuple]]]:
    """(missing, unexpected, wrong_shape) keys of a checkpoint relative to a model's state dict."""
    missing = [k for k in model_sd if k not in ckpt_sd]
    unexpected = [k for k in ckpt_sd if k not in model_sd]
    wrong = [
        (k, tuple(ckpt_sd[k].shape), tuple(model_sd[k].shape))
        for k in model_sd
        if k in ckpt_sd and tuple(ckpt_sd[k].shape) != tuple(model_sd[k].shape)
    ]
    return missing, unexpected, wrong


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:SHOW_PER_KIND])
    more = f", ... ({len(items) - SHOW_PER_KIND} more)" if len(items) > SHOW_PER_KIND else ""
    return f"  {title} ({len(items)}): {shown}{more}"


def format_diff(missing: list[str], unexpected: list[str], wrong: list[tuple[str, tuple, tuple]]) -> str:
    lines = []
    if missing:
        lines.append(_listing("missing from checkpoint", missing))
    if unexpected:
        lines.append(_listing("unexpected in checkpoint", unexpected))
    if wrong:
        lines.append(
            _listing("wrong shape", [f"{k} checkpoint {list(c)} vs model {list(m)}" for k, c, m in wrong])
        )
    return "\n".join(lines)


def matching_presets(arch: str, state_dict: Mapping[str, torch.Tensor], *, skip: tuple[str, int] | None = None,
                     scale: int | None = None) -> list[tuple[str, int]]:
    """(preset, scale) of the registry presets of `arch` whose state dict has exactly the checkpoint's keys and
    shapes; `skip`: a (preset, scale) already known not to fit. The presets
    at `scale` are tried first, and the other scales only when none of them fits."""
    from kd.models.registry import create, get_entry

    try:
        entry = get_entry(arch)
    except KdError:
        return []
    if identify_architecture(state_dict) not in (None, _family(entry.arch)):
        return []  # another network's checkpoint: no preset of this one can fit
    scales = sorted(entry.scales, key=lambda s: s != scale)
    for at in scales:
        found = []
        for preset in entry.presets:
            if (preset, at) == skip:
                continue
            try:
                # Built on the CPU: the meta device's first use costs seconds of imports, more than every preset.
                with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
                    candidate = create(entry.arch, at, preset)
            except Exception:  # noqa: BLE001 - a preset that cannot be built is simply not suggested
                continue
            if state_dict_diff(candidate.state_dict(), state_dict) == ([], [], []):
                found.append((preset, at))
        if found:
            return found
    return []


def _preset_hint(spec: Mapping[str, Any] | None, state_dict: Mapping[str, torch.Tensor]) -> str:
    """' Its keys and shapes are those of preset ...' for a registry network another of whose presets (or
    scales) fits the checkpoint; '' otherwise."""
    if not spec or "arch" not in spec:
        return ""
    fits = matching_presets(spec["arch"], state_dict, skip=(spec.get("preset"), spec.get("scale")),
                            scale=spec.get("scale"))
    if not fits:
        return ""
    preset, scale = fits[0]
    shown = " or ".join(f"'{p}'" for p, _ in fits)
    return (f" Its keys and shapes are those of {spec['arch']} preset {shown} at x{scale}: build that one "
            f"(kd.load_official('{spec['arch']}', path, preset='{preset}', scale={scale}); --preset {preset} "
            f"--scale {scale} on the command line).")


# ---------------------------------------------------------------------------------------------------- loading


def load_official(
    model: nn.Module,
    path_or_state_dict: str | PathLike | Mapping[str, Any],
    *,
    strict: bool = True,
    param_key: str | None = None,
) -> nn.Module:
    """Load an official checkpoint (file or already-loaded dict) into `model`, in place; returns `model`.

    strict=True (the default) requires the exact key set and shapes. strict=False tolerates missing and
    unexpected keys but never a wrong shape. Mismatches raise `KdError` listing what differs and, where the
    checkpoint's own structure tells, what it is (another scale, another architecture).
    """
    if isinstance(path_or_state_dict, Mapping):
        source = "(given as a state dict)"
        state_dict = unwrap_state_dict(path_or_state_dict, source="the given state dict", param_key=param_key)
    else:
        source = f"'{path_or_state_dict}'"
        state_dict = read_checkpoint(path_or_state_dict, param_key=param_key)

    as_read = state_dict
    adapt = getattr(model, "adapt_official_state_dict", None)
    if callable(adapt):
        state_dict = adapt(state_dict)

    model_sd = model.state_dict()
    missing, unexpected, wrong = state_dict_diff(model_sd, state_dict)
    if wrong or (strict and (missing or unexpected)):
        what = getattr(model, "kd_spec", None)
        model_name = (
            f"{what['arch']} x{what['scale']}" if what and "arch" in what and "scale" in what else type(model).__name__
        )
        explanation = explain_mismatch(model, state_dict)
        raise KdError(
            f"checkpoint {source} does not fit the {model_name} model"
            + (f": {explanation}" if explanation else ".")
            + _preset_hint(what, as_read)
            + "\n"
            + format_diff(missing, unexpected, wrong)
        )
    broken = [key for key, value in state_dict.items()
              if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:
        raise KdError(f"checkpoint {source} holds NaN or infinite weights ({len(broken)} tensor(s), e.g. "
                      f"'{broken[0]}'): it is damaged or its training diverged; use another checkpoint or train it "
                      "again.")
    model.load_state_dict(state_dict, strict=strict)
    return model


# ------------------------------------------------------------------------------------------ self-describing files

MODEL_SPEC_KEY = "kdbench_model"


def package_model(model: nn.Module) -> dict[str, Any]:
    """What kdbench writes as `student.pt`: `{"state_dict": weights, "kdbench_model": spec}` where spec names the
    architecture, scale, preset and every constructor field, so `model_from_checkpoint` rebuilds the network with
    no flags. A network built outside the registry (no `kd_spec`) is saved with `kdbench_model: None`."""
    spec = getattr(model, "kd_spec", None)
    described = None
    if spec is not None:
        fields = {k: v for k, v in spec.items() if k not in ("arch", "scale", "preset")}
        described = {"arch": spec["arch"], "scale": int(spec["scale"]), "preset": spec["preset"], "fields": fields}
    return {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, MODEL_SPEC_KEY: described}


def read_model_spec(path: str | PathLike) -> dict[str, Any] | None:
    """The `kdbench_model` entry of a checkpoint written by kdbench, or None (official and older kdbench files)."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - read_checkpoint explains an unreadable file when the weights are loaded
        return None
    spec = obj.get(MODEL_SPEC_KEY) if isinstance(obj, Mapping) else None
    return dict(spec) if isinstance(spec, Mapping) and "arch" in spec and "scale" in spec else None


def model_from_checkpoint(
    path: str | PathLike, *, arch: str | None = None, scale: int | None = None, preset: str | None = None
) -> nn.Module:
    """Build the network a checkpoint holds and load it. A kdbench `student.pt` describes itself; for any other file
    (official checkpoints, runs recorded before kdbench stored the description) `arch` is required and `preset`
    and `scale` default to the registry's (`paper`) and 4. Explicit arguments win over the file's description."""
    from kd.models.registry import create

    if not Path(path).is_file():
        raise KdError(f"checkpoint '{path}' not found (or not a file); check the path.")
    spec = read_model_spec(path)
    if spec is None and arch is None:
        raise KdError(
            f"checkpoint '{path}' does not say which network it holds (an official file, or a run recorded before "
            "kdbench stored it): name the architecture and preset, e.g. --model asid --preset paper."
        )
    fields: dict[str, Any] = {}
    if spec is not None:
        same_net = arch in (None, spec["arch"]) and preset in (None, spec.get("preset"))
        fields = dict(spec.get("fields") or {}) if same_net else {}
        arch, preset = arch or spec["arch"], preset or spec.get("preset")
        scale = scale or int(spec["scale"])
    model = create(arch, scale or 4, preset, **fields)
    return load_official(model, path)
