"""Sweeps: a grid of students x teachers x methods x scales x seeds, each cell one idempotent `execute_run`.

A method without a teacher (the no-KD student, method `none`) is one cell per student/scale/seed, shared by every
teacher. Because a run id follows from its configuration, re-running a sweep skips finished cells and resumes an
unfinished one from its checkpoint. A failing cell is recorded and the sweep goes on.

Time estimates (`--dry-run`, and the remaining time shown while sweeping) cover training only:
steps x seconds per step, where seconds per step come from, in order of preference,
1. finished runs under the runs root with the same student, teacher, presets, batch, patch and scale
   (the median logged step time, data loading included, so that a job stopped or suspended for an hour does not
   inflate it; `train_seconds / steps` for runs without such records; the same method preferred);
2. `ROUGH_STEP_SECONDS`: per-network CPU figures (ARCHITECTURES.md section 10, 2 threads, batch 4, 48x48 LR,
   official configuration), scaled by batch x patch area and, for other presets, by the ratio of MACs per patch
   (counted on the meta device; small networks run fewer MACs per second, so this under-estimates them, by about
   2x for RCAN-small against section 10; where the teacher zoo holds a small preset of the same network, its
   recorded training step corrects every small preset of that network). A distillation step costs the teacher's
   forward plus the student's forward+backward; a method with a measured step factor (`METHOD_STEP_FACTOR`) is
   scaled by it. Once any run has finished under the runs root or the records, these figures are multiplied by
   the median ratio of recorded to rough seconds per step over those runs, the runs of the same student network
   if there are any (shown as "rough x1.4, 14 runs"): that ratio carries what the table cannot know (this
   machine, `--threads`, cells running side by side).
A teacher the zoo does not hold yet adds its own training (`teacher.train.steps` of its forward+backward), once;
a zoo entry of the same network, preset, batch, patch and scale (any step count) gives a recorded figure.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kd.config import RunConfig, deep_merge, parse_override, run_id, run_prefix
from kd.errors import KdError
from kd.fileio import read_json_lines
from kd.profiles import profile_layer, resolve_layers
from kd.results.store import last_step

# (forward no_grad, forward+backward) seconds per step on 2 CPU threads at batch 4, 48x48 LR, x4, official
# configuration: minima of ARCHITECTURES.md section 10 (SwinIR-S measured at 64x64, rescaled to 48x48).
ROUGH_STEP_SECONDS: dict[str, tuple[float, float]] = {
    "asid": (0.31, 0.57),
    "asid_d8": (0.89, 1.37),
    "rcan": (1.40, 3.59),
    "han": (1.29, 4.39),
    "swinir": (2.97, 6.69),
    "swinir_light": (0.54, 1.27),
    # Not in section 10: ASID's figures times the ratio of single-thread CPU times (process time, so a loaded
    # machine does not skew it) of KDSR paper to ASID paper, same batch and patch: fwd 0.902 / 0.318, fwd+bwd
    # 3.02 / 0.888 (the teacher 0.952 / 0.318, 2.945 / 0.888).
    "kdsr": (0.88, 1.94),
    "kdsr_teacher": (0.93, 1.89),
    # The same way, paper presets, `benchmarks/bench_models.py --models asid,san,... --presets paper --threads 1
    # --clock cpu --repeats 2` (minima; ASID 0.315 / 0.808 s at one thread).
    "edsr": (9.51, 20.3),  # ASID 0.305 / 0.820 s in that run
    "san": (3.25, 7.51),
    "san_fakd": (3.22, 7.23),
    "swinfir": (8.74, 12.4),
    "emsrdpn": (3.43, 7.75),
    "mdsr": (1.53, 3.29),
    "a2n": (0.40, 0.87),
    "ncnet": (0.021, 0.044),
    "hpinet": (1.43, 2.93),
    "hsrnet": (0.83, 1.81),
    "ikm": (0.96, 2.00),
}
# Step cost of a method relative to `none` + teacher forward (benchmarks/bench_step.py, ASID + RCAN mini, CPU):
# meta-KD adds a virtual student step and a held-out forward+backward; FAKD its affinity matrices; MiPKD and DUKD
# extra student and teacher passes; the others stay within 1.07. Their extra work barely depends on the student,
# so beside a student smaller than ASID the factor is larger (RCAN mini pair of the DCKD miniature: DCKD 2.4x).
METHOD_STEP_FACTOR = {"krnet": 3.0, "fakd": 1.7, "mipkd": 2.0, "dckd": 1.2, "dukd": 2.1}
UNKNOWN_NETWORK_SECONDS = (0.5, 1.0)  # a network without a figure: a middling guess, flagged as such
REFERENCE_PIXELS = 4 * 48 * 48  # batch x LR patch area of the figures above
MIN_STEP_SECONDS = 0.005  # per network: tiny presets are dominated by per-step overhead, not by their MACs


@dataclass(frozen=True)
class Cell:
    student: str
    teacher: str | None  # None: a method without a teacher
    method: str
    scale: int
    seed: int

    @property
    def label(self) -> str:
        return f"{self.student} / {self.teacher or '-'} / {self.method} / x{self.scale} / seed {self.seed}"


@dataclass
class CellPlan:
    cell: Cell
    config: RunConfig | None
    run_id: str | None
    status: str  # finished | partial | new | invalid
    done_steps: int = 0
    error: str | None = None
    est_seconds: float | None = None  # remaining training time of this cell
    est_source: str = ""
    recorded_in: Path | None = None  # finished elsewhere: a folder of records (a report's records/), not the runs root
    extends: str | None = None  # the finished shorter run this cell's run continues (`kd.engine.run.resolve_run`)


@dataclass
class CellOutcome:
    plan: CellPlan
    status: str  # skipped | ran | resumed | failed
    seconds: float = 0.0
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def _split(values: str | list[str] | None) -> list[str]:
    if values is None:
        return []
    items = values.split(",") if isinstance(values, str) else [v for text in values for v in text.split(",")]
    return list(dict.fromkeys(v.strip() for v in items if v.strip()))


def parse_ints(text: str, option: str) -> list[int]:
    try:
        return [int(v) for v in _split(text)]
    except ValueError:
        raise KdError(f"{option} expects comma-separated integers (e.g. {option} 0,1,2), got '{text}'.") from None


def expand_grid(students: list[str], teachers: list[str], methods: list[str], scales: list[int],
                seeds: list[int]) -> list[Cell]:
    """Every cell of the grid, names checked against the registries and made canonical (aliases resolved)."""
    from kd.methods import get_method
    from kd.models import get_entry

    for option, values in (("--students", students), ("--methods", methods), ("--scales", scales),
                           ("--seeds", seeds)):
        if not values:
            raise KdError(f"{option} is empty; give at least one value.")
    students = list(dict.fromkeys(_canonical(get_entry, s, "--students") for s in students))
    teachers = list(dict.fromkeys(_canonical(get_entry, t, "--teachers") for t in teachers))
    method_classes = [_checked(get_method, m, "--methods") for m in methods]
    if any(cls.needs_teacher for cls in method_classes) and not teachers:
        raise KdError("--methods includes distillation methods but --teachers is empty; give e.g. --teachers rcan.")
    cells: list[Cell] = []
    for student in students:
        for scale in scales:
            for seed in seeds:
                for cls in method_classes:
                    for teacher in (teachers if cls.needs_teacher else [None]):
                        cells.append(Cell(student, teacher, cls.name, scale, seed))
    return list(dict.fromkeys(cells))


def _checked(lookup: Callable[[str], Any], name: str, option: str) -> Any:
    try:
        return lookup(name)
    except KdError as exc:
        raise KdError(f"{option}: {exc}") from None


def _canonical(lookup: Callable[[str], Any], name: str, option: str) -> str:
    return _checked(lookup, name, option).arch


def cell_config(cell: Cell, base_layers: list[tuple[str, dict[str, Any]]], overrides: list[str]) -> RunConfig:
    """The run configuration of one cell: base layers (profile, config file, common options), the cell, --set."""
    flags: dict[str, Any] = {"student": {"arch": cell.student}, "method": {"name": cell.method},
                             "scale": cell.scale, "seed": cell.seed}
    if cell.teacher is not None:
        flags["teacher"] = {"arch": cell.teacher}
    layers = [*base_layers, (f"sweep cell {cell.label}", flags)]
    layers += [(f"--set {text}", parse_override(text)) for text in overrides]
    return resolve_layers(layers)


def base_layers(profile: str, file_values: dict[str, Any] | None = None, file_name: str = "",
                common: dict[str, Any] | None = None) -> list[tuple[str, dict[str, Any]]]:
    layers = [profile_layer(profile)]
    if file_values:
        layers.append((f"config file '{file_name}'", {k: v for k, v in file_values.items() if k != "profile"}))
    if common:
        layers.append(("the command-line options", deep_merge({}, common)))
    return layers


# ------------------------------------------------------------------------------------------------ estimates


def _presets(config: RunConfig) -> tuple[str, str | None]:
    from kd.engine.teachers import teacher_preset
    from kd.models import get_entry

    student = config.student.preset or get_entry(config.student.arch).default_preset
    teacher = teacher_preset(config) if config.teacher.arch and config.method.name != "none" else None
    return student, teacher


def _frozen_network(config: RunConfig) -> tuple[str, str | None, int, float] | None:
    """(arch, preset, scale, input pixels per student input pixel) of the frozen network a step runs: a teacher
    assistant (`kd.engine.assistants`; TAS's sees a 2x larger input in mode `input`) or the configured teacher;
    None for a method without a teacher."""
    from kd.engine.assistants import assistant_config
    from kd.methods import get_method
    from kd.models import get_entry

    if not get_method(config.method.name).needs_teacher or not config.teacher.arch:
        return None
    stage = assistant_config(config)
    if stage is None:
        return config.teacher.arch, _presets(config)[1], config.scale, 1.0
    preset = stage.student.preset or get_entry(stage.student.arch).default_preset
    return stage.student.arch, preset, stage.scale, (stage.train.lr_patch / config.train.lr_patch) ** 2


def _step_factor(config: RunConfig) -> float:
    """`METHOD_STEP_FACTOR` of the method a step runs (a chain's stage method for the run it teaches)."""
    from kd.engine.assistants import assistant_config

    stage = assistant_config(config)
    return METHOD_STEP_FACTOR.get((stage or config).method.name, 1.0)


def _timing_key(config: RunConfig) -> tuple:
    student_preset, _ = _presets(config)
    return (config.student.arch, student_preset, _frozen_network(config), config.train.batch_size,
            config.train.lr_patch, config.scale)


def median_step_seconds(metrics: Path) -> float | None:
    """Median of step_time + data_time over a run's logged steps (metrics.jsonl); None without such records.
    Unlike `train_seconds / steps`, it ignores the time a stopped or suspended job spent paused."""
    seconds = []
    for record in read_json_lines(metrics):
        try:
            seconds.append(float(record["step_time"]) + float(record.get("data_time") or 0.0))
        except (ValueError, TypeError, KeyError):
            continue  # other records (health, validation)
    return _median(seconds) if seconds else None


class StepTimes:
    """Seconds per training step for a configuration: recorded by finished runs, else rough per-network figures."""

    def __init__(self, runs_dir: str | Path, *records: str | Path) -> None:
        """Timings of the finished runs under `runs_dir` and under each folder of `records`."""
        self.recorded: dict[tuple, list[tuple[str, float]]] = {}
        summaries = [path for root in map(Path, (runs_dir, *records)) if root.is_dir()
                     for path in sorted(root.glob("*/summary.json"))]
        recorded_configs: list[tuple[RunConfig, float]] = []
        for summary_path in summaries:
            try:
                summary = json.loads(summary_path.read_text(encoding="utf-8"))
                config = _read_run_config(summary_path.parent / "config.yaml")
                per_step = median_step_seconds(summary_path.parent / "metrics.jsonl")
                per_step = per_step or float(summary["train_seconds"]) / int(summary["steps"])
                self.recorded.setdefault(_timing_key(config), []).append((config.method.name, per_step))
                recorded_configs.append((config, per_step))
            except Exception:  # timings are a convenience: an unreadable run just does not contribute one
                continue
        self._recorded_configs = recorded_configs
        self._zoo = _zoo_entries()
        self.teacher_recorded: dict[tuple, float] = {}
        for info in self._zoo:
            try:
                recipe = info["recipe"]
                key = (info["arch"], info["preset"], recipe["batch_size"], recipe["lr_patch"], info["scale"])
                self.teacher_recorded[key] = float(info["train_seconds"]) / int(info["steps"])
            except (KeyError, TypeError, ValueError, ZeroDivisionError):
                continue

    # The rough figures count MACs (seconds per network), so they are worked out only when a cell needs one.
    @functools.cached_property
    def small_preset_ratio(self) -> dict[str, float]:
        """Per network: how far the MACs-scaled figure of a small preset is from a recorded one (teacher
        training in the zoo)."""
        from kd.models import get_entry

        small_ratios: dict[str, list[float]] = {}
        for info in self._zoo:
            try:
                recipe = info["recipe"]
                if info["preset"] == get_entry(info["arch"]).default_preset:
                    continue
                key = (info["arch"], info["preset"], recipe["batch_size"], recipe["lr_patch"], info["scale"])
                pixels = recipe["batch_size"] * recipe["lr_patch"] ** 2 / REFERENCE_PIXELS
                rough = pixels * self._network_seconds(info["arch"], info["preset"], info["scale"], backward=True,
                                                       corrected=False)
                small_ratios.setdefault(info["arch"], []).append(self.teacher_recorded[key] / rough)
            except (KdError, KeyError, TypeError, ValueError, ZeroDivisionError):
                continue
        return {arch: _median(r) for arch, r in small_ratios.items()}

    @functools.cached_property
    def rough_ratios(self) -> dict[str, list[float]]:
        """Per student network: recorded / rough seconds per step of the finished runs."""
        ratios: dict[str, list[float]] = {}
        for config, seconds in self._recorded_configs:
            try:
                ratios.setdefault(config.student.arch, []).append(seconds / self._rough(config))
            except KdError:  # a run of a network no longer registered: it cannot calibrate
                continue
        return ratios

    def calibration(self, student_arch: str) -> tuple[float, int] | None:
        """(median ratio of recorded to rough seconds per step, runs): over the finished runs of the same student
        network where there are some, else over all finished runs; None without a finished run."""
        ratios = self.rough_ratios.get(student_arch) or [r for rs in self.rough_ratios.values() for r in rs]
        return (_median(ratios), len(ratios)) if ratios else None

    def per_step(self, config: RunConfig) -> tuple[float, str]:
        """(seconds per step, where the figure comes from)."""
        try:
            samples = self.recorded.get(_timing_key(config), [])
        except KdError:
            samples = []
        same_method = [s for m, s in samples if m == config.method.name]
        factor = _step_factor(config)
        chosen = same_method or [s * factor / METHOD_STEP_FACTOR.get(m, 1.0) for m, s in samples]
        if chosen:
            return _median(chosen), f"recorded ({len(chosen)} run{'s' if len(chosen) > 1 else ''})"
        calibration = self.calibration(config.student.arch)
        if calibration is None:
            return self._rough(config), "rough"
        ratio, runs = calibration
        return self._rough(config) * ratio, f"rough x{ratio:.1f}, {runs} run{'s' if runs > 1 else ''}"

    def _rough(self, config: RunConfig) -> float:
        pixels = config.train.batch_size * config.train.lr_patch ** 2 / REFERENCE_PIXELS
        student_preset, _ = _presets(config)
        seconds = self._network_seconds(config.student.arch, student_preset, config.scale, backward=True)
        frozen = _frozen_network(config)
        if frozen is not None:
            arch, preset, scale, input_pixels = frozen
            seconds += input_pixels * self._network_seconds(arch, preset, scale, backward=False)
        return seconds * pixels * _step_factor(config)

    def teacher_training(self, config: RunConfig) -> float:
        recipe = config.teacher.train
        pixels = recipe.batch_size * recipe.lr_patch ** 2 / REFERENCE_PIXELS
        _, preset = _presets(config)
        from kd.models import get_entry

        key = (get_entry(config.teacher.arch).arch, preset, recipe.batch_size, recipe.lr_patch, config.scale)
        if key in self.teacher_recorded:
            return recipe.steps * self.teacher_recorded[key]
        return recipe.steps * pixels * self._network_seconds(config.teacher.arch, preset, config.scale,
                                                             backward=True)

    def _network_seconds(self, arch: str, preset: str | None, scale: int, *, backward: bool,
                         corrected: bool = True) -> float:
        from kd.models import get_entry

        entry = get_entry(arch)
        fwd, fwd_bwd = ROUGH_STEP_SECONDS.get(entry.arch, UNKNOWN_NETWORK_SECONDS)
        seconds = fwd_bwd if backward else fwd
        preset = preset or entry.default_preset
        if preset != entry.default_preset:
            official = _preset_macs(entry.arch, entry.default_preset, scale)
            if official:
                seconds *= _preset_macs(entry.arch, preset, scale) / official
            if corrected:
                seconds *= self.small_preset_ratio.get(entry.arch, 1.0)
        return max(seconds, MIN_STEP_SECONDS)


@functools.lru_cache(maxsize=64)  # seconds per large network; the same few networks in every estimate
def _preset_macs(arch: str, preset: str, scale: int) -> int:
    """MACs of one forward pass at a 48x48 LR input, counted on the meta device (0 where that fails)."""
    import torch

    from kd.metrics.cost import count_macs
    from kd.models import create

    try:
        with torch.device("meta"):  # shapes only: no memory, no compute
            model = create(arch, scale, preset=preset)
        return count_macs(model, (48, 48))
    except Exception:  # noqa: BLE001 - an estimate without it falls back to the per-network figure
        return 0


def _median(values: Sequence[float]) -> float:
    """The upper median: a value that was measured, never an average of two."""
    return sorted(values)[len(values) // 2]


def _zoo_entries() -> list[dict[str, Any]]:
    from kd.engine.teachers import list_zoo

    try:
        return list_zoo()
    except (OSError, ValueError):
        return []


def _read_run_config(path: Path) -> RunConfig:
    from kd.config import from_dict, read_config_file

    return from_dict(read_config_file(path), f"'{path}'")


def plan_sweep(cells: list[Cell], layers: list[tuple[str, dict[str, Any]]], overrides: list[str],
               out_dir: str | Path, records: Sequence[str | Path] = (), times: StepTimes | None = None
               ) -> list[CellPlan]:
    """Resolve, check and locate every cell's run; estimate the training time still to do. A cell whose run id has
    a finished record in one of `records` (e.g. a committed report's records/) counts as finished there. `times`:
    the timings to estimate with (default: those of `out_dir` and `records`)."""
    from kd.engine.run import check_names, check_pairing

    out_dir = Path(out_dir)
    times = times or StepTimes(out_dir, *records)
    plans = []
    for cell in cells:
        try:
            config = cell_config(cell, layers, overrides)
            check_names(config, pairing=False)
        except KdError as exc:
            plans.append(CellPlan(cell, None, None, "invalid", error=str(exc)))
            continue
        plan = _locate_cell(cell, config, out_dir, records, times)
        if plan.status != "finished":  # a finished cell has shown that its pair works; a check takes seconds
            try:
                check_pairing(config)
            except KdError as exc:
                plan = CellPlan(cell, None, None, "invalid", error=str(exc))
        plans.append(plan)
    return plans


def _locate_cell(cell: Cell, config: RunConfig, out_dir: Path, records: Sequence[str | Path],
                 times: StepTimes) -> CellPlan:
    """The cell's run: finished (here or in `records`), partial or new, with the training time still to do."""
    from kd.engine.identity import run_inputs
    from kd.engine.run import finished_summary, resolve_run

    try:
        inputs = run_inputs(config, strict=False)
    except KdError:  # its data is missing
        inputs = None
    missing_data = inputs is not None and any(d["manifest_sha256"] is None for d in inputs["data"].values())
    if inputs is None or missing_data or (inputs["teacher"] or {}).get("sha256", "") is None:
        # The run id covers the data and the teacher's weights: without them no run of this cell can exist.
        per_step, source = times.per_step(config)
        return CellPlan(cell, config, f"{run_prefix(config)}-?", "new", 0,
                        est_seconds=per_step * config.train.steps, est_source=source)
    rid = run_id(config, inputs)
    recorded = next((Path(d) for d in records if finished_summary(Path(d) / rid) is not None), None)
    if recorded is not None and finished_summary(out_dir / rid) is None:
        return CellPlan(cell, config, rid, "finished", config.train.steps, est_seconds=0.0, recorded_in=recorded)
    run_dir, resolved = resolve_run(config, out_dir, inputs)
    if finished_summary(run_dir) is not None:
        return CellPlan(cell, config, run_dir.name, "finished", config.train.steps, est_seconds=0.0)
    extends = resolved.get("extends")
    done = min(last_step(run_dir) or 0, config.train.steps) if run_dir.is_dir() else 0
    status = "partial" if done else "new"
    done = done or (extends or {}).get("steps", 0)
    per_step, source = times.per_step(config)
    return CellPlan(cell, config, run_dir.name, status, done, est_seconds=per_step * (config.train.steps - done),
                    est_source=source, extends=(extends or {}).get("run_id"))


def finished_cell_summary(plan: CellPlan, out_dir: str | Path) -> dict[str, Any]:
    """summary.json of a finished cell, from its record when it was finished elsewhere."""
    from kd.engine.run import finished_summary

    return finished_summary((plan.recorded_in or Path(out_dir)) / str(plan.run_id)) or {}


@dataclass(frozen=True)
class TeacherPlan:
    key: str  # zoo key
    seconds: float  # estimated training time
    export: Path | None = None  # an exported copy `kdbench teacher import` can add instead of training it


def teachers_to_train(plans: list[CellPlan], times: StepTimes,
                      exports: dict[str, Path] | None = None) -> list[TeacherPlan]:
    """Each teacher the pending cells need and the zoo does not hold yet (for a cell taught by an assistant, the
    assistant's teacher), with its estimated training time and the export among `exports` (zoo key -> folder,
    `kd.engine.teachers.exported_teachers`) that holds it, if any."""
    from kd.engine.assistants import teacher_source
    from kd.engine.teachers import zoo_dir
    from kd.methods import get_method

    pending: dict[str, TeacherPlan] = {}
    for plan in plans:
        if plan.status in ("finished", "invalid") or plan.config is None:
            continue
        config = teacher_source(plan.config)
        if config.teacher.ckpt:
            continue
        if not get_method(config.method.name).needs_teacher:
            continue
        folder = zoo_dir(config)
        if not (folder / "teacher.pt").is_file() and folder.name not in pending:
            pending[folder.name] = TeacherPlan(folder.name, times.teacher_training(config),
                                               (exports or {}).get(folder.name))
    return list(pending.values())


def assistants_to_train(plans: list[CellPlan], runs_dir: str | Path,
                        records: Sequence[str | Path] = ()) -> list[tuple[str, float, str]]:
    """(label, estimated seconds still to train, where the figure comes from) of each teacher assistant the pending
    cells need and the cache does not hold finished (`kd.engine.assistants`); the label is the assistant's run id
    (ending in `-?` while its own teacher or its data is missing, which the id covers) and what it is. Step times
    come from the runs under `runs_dir` and `records`, as the cells'."""
    from kd.config import config_hash
    from kd.engine.assistants import assistant_config, assistant_root
    from kd.engine.identity import run_inputs
    from kd.engine.run import finished_summary

    times = StepTimes(runs_dir, *records)
    pending: dict[str, tuple[str, float, str]] = {}
    seen: set[str] = set()
    for plan in plans:
        if plan.status in ("finished", "invalid") or plan.config is None:
            continue
        stage = assistant_config(plan.config)
        while stage is not None:
            key = config_hash(stage)
            if key not in seen:
                seen.add(key)
                inputs = run_inputs(stage, strict=False)
                rid = f"{run_prefix(stage)}-?"
                done = 0
                missing_data = any(d["manifest_sha256"] is None for d in inputs["data"].values())
                if not missing_data and (inputs["teacher"] or {}).get("sha256", "") is not None:
                    rid = run_id(stage, inputs)
                    done = min(last_step(assistant_root() / rid) or 0, stage.train.steps)
                if finished_summary(assistant_root() / rid) is None:
                    per_step, source = times.per_step(stage)
                    label = (f"{rid} ({stage.student.arch} x{stage.scale} from {stage.teacher.arch} x{stage.scale} "
                             f"by {stage.method.name}, {stage.train.steps} steps)")
                    pending[key] = (label, per_step * (stage.train.steps - done), source)
            stage = assistant_config(stage)
    return list(pending.values())


# ------------------------------------------------------------------------------------------------ running


def run_sweep(plans: list[CellPlan], out_dir: str | Path, *, console: Any, progress: bool = True,
              on_cell: Callable[[int, CellPlan, float | None], None] | None = None,
              services: Any = None) -> list[CellOutcome]:
    """Run the cells in order through `execute_run`; failures are recorded, not raised (Ctrl-C still stops).

    `on_cell(index, plan, remaining_estimate)` is called before each cell (the whole grid's progress)."""
    from kd.engine import TrainingInterrupted, execute_run

    outcomes: list[CellOutcome] = []
    # Observed / estimated time of the cells run so far corrects the estimate of the remaining ones.
    spent, estimated = 0.0, 0.0
    for index, plan in enumerate(plans):
        remaining = sum(p.est_seconds or 0.0 for p in plans[index:] if p.status != "invalid")
        if estimated >= 60:  # below a minute of estimates, evaluation and start-up dominate the ratio
            remaining *= spent / estimated
        if on_cell:
            on_cell(index, plan, remaining)
        if plan.status == "invalid" or plan.config is None:
            outcomes.append(CellOutcome(plan, "failed", error=plan.error))
            continue
        if plan.recorded_in is not None:
            outcomes.append(CellOutcome(plan, "skipped", summary=finished_cell_summary(plan, out_dir)))
            continue
        began = time.perf_counter()
        try:
            kwargs = {"services": services} if services is not None else {}
            record = execute_run(plan.config, out_dir=out_dir, console=console, progress=progress, **kwargs)
        except (KeyboardInterrupt, TrainingInterrupted):
            raise
        except KdError as exc:
            outcomes.append(CellOutcome(plan, "failed", time.perf_counter() - began, str(exc)))
            continue
        except Exception as exc:  # one broken cell must not lose the rest of a long sweep
            outcomes.append(CellOutcome(plan, "failed", time.perf_counter() - began,
                                        f"{type(exc).__name__}: {exc}"))
            continue
        seconds = time.perf_counter() - began
        if record.already_finished:
            outcomes.append(CellOutcome(plan, "skipped", seconds, summary=record.summary))
            continue
        if plan.est_seconds:
            spent += seconds
            estimated += plan.est_seconds
        status = "resumed" if plan.status == "partial" else "ran"
        outcomes.append(CellOutcome(plan, status, seconds, summary=record.summary))
    return outcomes
