"""Typed run configuration: dataclasses, strict loading from nested dicts, dotted overrides, run ids.

A configuration is resolved in layers, later ones winning: the profile (`kd.profiles`), a YAML/TOML file
(`--config`), command-line flags (`--student`, `--scale`, ...) and `--set key=value` overrides. Every layer is
checked against the dataclasses, so a misspelt key is reported with its dotted name and the valid keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import tomllib
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kd.errors import KdError


@dataclass
class ModelConfig:
    arch: str = "asid"
    preset: str | None = None  # None: the architecture's default preset (the official configuration)
    # Weights the student starts from instead of its seeded initialisation (a kdbench student.pt or an official
    # checkpoint of this network; BasicSR's pretrain_network_g). In the run id by content, not by path.
    init: str | None = None


@dataclass
class TrainConfig:
    """One training recipe; used for the student and (under `teacher.train`) for training a teacher."""

    steps: int = 1000
    batch_size: int = 16
    lr_patch: int = 48  # LR patch side; the HR patch is lr_patch * scale
    optimizer: str = "adam"  # adam | adamw
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    schedule: str = "multistep"  # multistep | cosine | constant
    # Multi-step decay points: values below 1 are fractions of `steps`, others absolute step numbers.
    milestones: list[float] = field(default_factory=list)
    gamma: float = 0.5
    min_lr: float = 0.0  # cosine floor
    ema_decay: float = 0.0  # 0 disables the EMA of the trained network
    grad_clip: float = 0.0  # max global grad norm; 0 disables
    log_every: int = 10
    val_every: int = 0  # 0: validate only at the end
    ckpt_every: int = 100


@dataclass
class TeacherConfig:
    arch: str | None = "rcan"  # None: no teacher (method `none`)
    preset: str | None = "mini"
    ckpt: str | None = None  # official or kdbench checkpoint; None: the teacher zoo (trained on demand)
    seed: int = 0  # seed of a zoo-trained teacher; kept apart from the run seed so all seeds share one teacher
    train: TrainConfig = field(default_factory=TrainConfig)  # recipe used when the zoo has to train it


# The reconstruction term of every method (`method.rec`): pixel L1, or the weighted 8x8 block-DCT L1 of
# `kd.methods.dct`.
RECONSTRUCTION_LOSSES = ("l1", "dct")


@dataclass
class MethodConfig:
    name: str = "none"
    weights: dict[str, float] = field(default_factory=dict)  # loss-term weights over the method's defaults
    options: dict[str, Any] = field(default_factory=dict)  # method-specific options
    rec: str = "l1"  # the reconstruction loss of every method: one of RECONSTRUCTION_LOSSES


@dataclass
class DataConfig:
    train: str = "default"  # training patches come from this dataset (`291`, `default`, `DIV2K`, ...)
    augment: bool = True
    root: str | None = None  # data root; None: kd.data.roots default
    workers: int = 0  # DataLoader workers
    # bicubic (the classical track) or a blind-SR protocol of `kd.data.degradations` (iso_gaussian: Gaussian blur
    # for training, Gaussian8 test kernels; aniso_gaussian), applied to the training patches and the test images
    degradation: str = "bicubic"


@dataclass
class EvalConfig:
    datasets: list[str] = field(default_factory=lambda: ["Set5", "Set14", "B100"])
    lpips: bool = True
    val_dataset: str | None = None  # periodic validation on a held-out split (e.g. 291-val), never a test set
    weights: str = "last"  # which weights the final evaluation uses: last | best


@dataclass
class AccelConfig:
    """Speed options for GPUs (see `kd.engine.accel`); the defaults are plain fp32 eager execution."""

    precision: str = "fp32"  # fp32 | bf16 (autocast of the forward passes and losses)
    # fp32 | bf16 | fp16 | auto: the frozen teacher's weights and forward pass. auto: bf16 in channels_last where
    # the device computes bf16 natively (CPUs with AVX512-BF16 or AMX, GPUs from Ampere on), else fp32.
    teacher_dtype: str = "fp32"
    channels_last: bool = False  # NHWC memory format for networks and batches
    compile: str = ""  # "" off, else a torch.compile backend (inductor, eager, ...); methods without taps only
    pin_memory: bool = False  # page-locked batches for faster host-to-GPU copies


@dataclass
class ClusterConfig:
    """Resources of one sweep cell on a Slurm cluster (`kdbench sweep --executor slurm`, through submitit)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    timeout_min: int = 240  # a cell past its time is requeued and resumes from its checkpoint
    gpus_per_node: int = 1  # > 1: one task per GPU, the cell trains with DDP across them
    cpus_per_task: int = 8
    mem_gb: int = 32
    log_dir: str = "runs/_slurm"  # submitit's job scripts and logs


@dataclass
class LogConfig:
    tensorboard: bool = False  # also write metrics.jsonl's scalars as TensorBoard events (the `tensorboard` extra)


@dataclass
class LabelConfig:
    """A run's name and tags (`kdbench run --name/--tag`): labels to find runs by (`results`/`report --filter
    name=...`, `tag=...`), recorded in config.yaml and summary.json; never part of the run id."""

    name: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class RunConfig:
    profile: str = "cpu"
    scale: int = 4
    seed: int = 0
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    device: str = "auto"  # auto (cuda when available, else cpu), cpu, cuda, cuda:1, ...
    student: ModelConfig = field(default_factory=ModelConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    accel: AccelConfig = field(default_factory=AccelConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    log: LogConfig = field(default_factory=LogConfig)
    label: LabelConfig = field(default_factory=LabelConfig)


# Keys that change how a run executes but not what it computes (up to float summation order, for the thread count
# and the device), and the run's labels; left out of the run id, so a grid finished on one machine is found on
# another and naming a run never makes it another run.
NON_RESULT_KEYS = ("data.root", "data.workers", "train.log_every", "eval.lpips", "device", "threads",
                   "accel.pin_memory", "cluster", "log", "label")
# Keys added after runs were recorded: left out of the run id while they hold their default value, so the runs
# recorded before each existed keep their ids.
HASHED_UNLESS_DEFAULT = ("accel", "method.rec", "data.degradation")
# Paths of files that enter the run id by their content, as run inputs (`kd.engine.identity`), never by their path:
# the same weights under another name or on another machine give the same run.
CONTENT_KEYS = ("student.init",)


# ----------------------------------------------------------------------------------------------- loading


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fail_unknown(path: str, key: str, valid: list[str], source: str) -> KdError:
    full = f"{path}.{key}" if path else key
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f" Did you mean '{(path + '.') if path else ''}{close[0]}'?" if close else ""
    where = f"'{path}'" if path else "the top level"
    return KdError(
        f"unknown config key '{full}' in {source}.{hint} Valid keys at {where}: {', '.join(valid)}."
    )


def _coerce(value: Any, hint: Any, path: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], path, source)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise KdError(f"config key '{path}' in {source} is a section; give its fields (e.g. {path}.<field>=...).")
        return build_section(hint, value, path, source)
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
                return value.lower() in ("true", "yes", "on", "1")
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError
        if hint is int:
            if isinstance(value, bool):
                raise ValueError
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, float) and not number.is_integer():
                raise ValueError
            return int(number)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if hint is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
        if origin in (list, tuple):
            items = value.split(",") if isinstance(value, str) else value
            items = [items] if not isinstance(items, (list, tuple)) else list(items)
            if isinstance(value, str) and value.strip() == "":
                items = []
            if origin is tuple:
                if len(items) != len(args):
                    raise ValueError
                return tuple(_coerce(v, a, path, source) for v, a in zip(items, args))
            return [_coerce(v.strip() if isinstance(v, str) else v, args[0], path, source) for v in items]
        if origin is dict:
            if not isinstance(value, dict):
                raise ValueError
            return {str(k): _coerce(v, args[1], f"{path}.{k}", source) for k, v in value.items()}
    except (TypeError, ValueError):
        pass
    else:
        raise TypeError(f"unsupported config type {hint!r} at {path}")
    shown = getattr(hint, "__name__", str(hint))
    raise KdError(f"config key '{path}' in {source} expects {shown}, got {value!r}.")


def build_section(cls: type, values: dict[str, Any], path: str, source: str) -> Any:
    """Instantiate dataclass `cls` from a dict, coercing types; `path` is its dotted name in error messages."""
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            raise _fail_unknown(path, str(key), names, source)
    kwargs = {}
    for key, value in values.items():
        kwargs[key] = _coerce(value, hints[key], f"{path}.{key}" if path else key, source)
    return cls(**kwargs)


def from_dict(values: dict[str, Any], source: str = "the configuration") -> RunConfig:
    """A RunConfig from a nested dict; missing keys take the dataclass defaults, unknown keys are an error."""
    return build_section(RunConfig, values, "", source)


def to_dict(config: RunConfig) -> dict[str, Any]:
    """Plain nested dict (lists instead of tuples), the inverse of `from_dict`."""
    return json.loads(json.dumps(asdict(config)))


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> dict[str, Any]:
    """`train.lr=2e-4` -> {"train": {"lr": "2e-4"}}; the value is parsed as YAML (lists, numbers, null)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise KdError(f"--set expects KEY=VALUE with a dotted key (e.g. train.lr=2e-4), got '{text}'.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    nested: dict[str, Any] = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return nested


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise KdError(f"config file '{path}' not found; pass an existing YAML or TOML file to --config.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise KdError(f"config file '{path}' is not UTF-8 text (byte {exc.start}); save it as UTF-8 YAML or "
                      "TOML.") from None
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise KdError(f"config file '{path}' could not be parsed: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KdError(f"config file '{path}' must hold a mapping of sections (student, train, ...).")
    return data


def resolve(layers: list[tuple[str, dict[str, Any]]]) -> RunConfig:
    """Merge (source, nested dict) layers in order, checking each one's keys and types on its own."""
    merged: dict[str, Any] = {}
    for source, layer in layers:
        from_dict(deep_merge(to_dict(RunConfig()), layer), source)  # reports errors against their source
        merged = deep_merge(merged, layer)
    config = from_dict(merged)
    validate(config)
    return config


# The smallest value of each integer field (0 where not named; cluster.gpus_per_node=0 is a CPU-only cluster); seeds
# also have a largest (numpy and torch take unsigned 32- and 64-bit seeds, and a run derives further seeds from its
# own by adding offsets).
_INT_MINIMUM = {"scale": 1, "steps": 1, "batch_size": 1, "lr_patch": 1, "log_every": 1, "ckpt_every": 1,
                "timeout_min": 1, "cpus_per_task": 1, "mem_gb": 1}
_INT_MAXIMUM = 2**31 - 1
_SEED_MAXIMUM = 2**32 - 1
_INT_FLAGS = {"seed": "--seed", "threads": "--threads", "scale": "--scale"}


def _check_integers(section: Any, path: str = "") -> None:
    """Every integer field within its range, named by its dotted key (and its flag, where it has one)."""
    hints = _hints(type(section))
    for item in dataclasses.fields(section):
        value, name = getattr(section, item.name), f"{path}{item.name}"
        if dataclasses.is_dataclass(value):
            _check_integers(value, f"{name}.")
        elif hints[item.name] is int:
            low = _INT_MINIMUM.get(item.name, 0)
            high = _SEED_MAXIMUM if item.name == "seed" else _INT_MAXIMUM
            if not low <= value <= high:
                flag = f" ({_INT_FLAGS[name]})" if name in _INT_FLAGS else ""
                raise KdError(f"{name}{flag} must be an integer from {low} to {high}, got {value}.")


def validate(config: RunConfig) -> None:
    """Value checks that types alone cannot express."""
    for name, train in (("train", config.train), ("teacher.train", config.teacher.train)):
        if train.steps < 1 or train.batch_size < 1 or train.lr_patch < 1:
            raise KdError(f"{name}.steps, {name}.batch_size and {name}.lr_patch must be positive.")
        if train.optimizer not in ("adam", "adamw"):
            raise KdError(f"{name}.optimizer must be 'adam' or 'adamw', got '{train.optimizer}'.")
        if train.schedule not in ("multistep", "cosine", "constant"):
            raise KdError(f"{name}.schedule must be multistep, cosine or constant, got '{train.schedule}'.")
        if not 0.0 <= train.ema_decay < 1.0:
            raise KdError(f"{name}.ema_decay must be in [0, 1), got {train.ema_decay}.")
        for key in ("lr", "weight_decay", "gamma", "min_lr", "grad_clip", "ema_decay"):
            value = getattr(train, key)
            if not math.isfinite(value) or value < 0:
                raise KdError(f"{name}.{key} must be a finite number >= 0, got {value}.")
        if train.lr == 0:
            raise KdError(f"{name}.lr must be positive, got 0 (nothing would be learned).")
        if not all(math.isfinite(beta) and 0 <= beta < 1 for beta in train.betas):
            raise KdError(f"{name}.betas must be two numbers in [0, 1), got {list(train.betas)}.")
        if not all(math.isfinite(m) and m > 0 for m in train.milestones):
            raise KdError(f"{name}.milestones must be positive numbers, got {train.milestones}.")
        if train.ckpt_every < 1 or train.log_every < 1 or train.val_every < 0:
            raise KdError(f"{name}.ckpt_every and {name}.log_every must be >= 1, {name}.val_every >= 0.")
    if config.accel.precision not in ("fp32", "bf16"):
        raise KdError(f"accel.precision must be fp32 or bf16, got '{config.accel.precision}' (fp16 autocast needs "
                      "loss scaling; use bf16).")
    if config.accel.teacher_dtype not in ("fp32", "bf16", "fp16", "auto"):
        raise KdError(f"accel.teacher_dtype must be fp32, bf16, fp16 or auto, got '{config.accel.teacher_dtype}'.")
    if config.eval.weights not in ("last", "best"):
        raise KdError(f"eval.weights must be 'last' or 'best', got '{config.eval.weights}'.")
    _check_integers(config)
    if config.method.rec not in RECONSTRUCTION_LOSSES:
        raise KdError(f"method.rec must be one of {', '.join(RECONSTRUCTION_LOSSES)}, got '{config.method.rec}'.")
    if config.data.degradation != DataConfig.degradation:
        from kd.data.degradations import check_degradation  # imports torch: only for the blind-SR track

        check_degradation(config.data.degradation, config.scale)


# ----------------------------------------------------------------------------------------------- identity


def config_hash(config: RunConfig, length: int = 8, inputs: dict[str, Any] | None = None) -> str:
    """Hash of the result-relevant configuration; `inputs` (teacher weights, data fingerprints, method version, see
    `kd.engine.identity`) are hashed with it when given."""
    data = to_dict(config)
    if config.method.name == "none":
        data.pop("teacher")  # a no-KD run is the same run whichever teacher the command line names
    defaults = to_dict(RunConfig())
    for dotted in HASHED_UNLESS_DEFAULT:
        node, default = _parent(data, dotted), _parent(defaults, dotted)
        leaf = dotted.rsplit(".", 1)[-1]
        if leaf in node and node[leaf] == default.get(leaf):
            node.pop(leaf)
    for dotted in (*NON_RESULT_KEYS, *CONTENT_KEYS):
        _parent(data, dotted).pop(dotted.rsplit(".", 1)[-1], None)
    if inputs is not None:
        data = {"config": data, "inputs": inputs}
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def _parent(data: dict[str, Any], dotted: str) -> dict[str, Any]:
    """The mapping that holds the last part of a dotted key (empty when a section is missing)."""
    node = data
    for part in dotted.split(".")[:-1]:
        node = node.get(part, {})
    return node


def run_id(config: RunConfig, inputs: dict[str, Any] | None = None) -> str:
    """Readable prefix plus a hash of everything that affects the result: the same command finds the same run.

    `kd.engine.run.locate_run` passes the run's `inputs` (teacher weights, data, method version); without them the
    hash covers the configuration only."""
    return f"{run_prefix(config)}-{config_hash(config, inputs=inputs)}"


def run_prefix(config: RunConfig) -> str:
    """The readable part of the run id: student, method, teacher, scale, profile, the blind-SR degradation (when not
    bicubic), seed."""
    teacher = config.teacher.arch if config.method.name != "none" and config.teacher.arch else "noteacher"
    track = "" if config.data.degradation == DataConfig.degradation else f"-{config.data.degradation}"
    return (f"{config.student.arch}-{config.method.name}-{teacher}-x{config.scale}-{config.profile}{track}"
            f"-s{config.seed}")


def dump_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
