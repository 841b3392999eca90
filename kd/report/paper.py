"""Published tables in their original layout, with our measured cell, the difference and the evidence level.

    table = paper_table("fakd", runs_dir="runs", eval_csvs=[...])
    print(to_text(table, "markdown"))

Our cells come from `kdbench eval --out` CSVs (`--eval-csv`, model rows) and from finished runs (students, and the
teachers they were distilled from). A cell we have not measured shows a dash and a footnote with the command that
would fill it.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pandas as pd

from kd.errors import KdError, unknown_choice
from kd.fileio import checkout_root
from kd.output import markdown_table
from kd.reference_data import (
    canonical_dataset, published_results, published_results_lightweight, published_results_seed,
)
from kd.report.miniature import DCKD, FAKD, KDSR, Miniature, build_miniature, default_dirs
from kd.report.miniature import to_markdown as miniature_markdown
from kd.report.runs import RunSet, scan_runs

PAPER_DATASETS = ["Set5", "Set14", "B100", "Urban100", "Manga109"]
BICUBIC = "bicubic"  # the classical track; KDSR's table is blind SR (`data.degradation`, kd.data.degradations)
# Published model names -> (kdbench architecture, preset). Presets not registered yet are named in the footnotes.
MODEL_MAP = {"bicubic": ("bicubic", None), "rcan": ("rcan", "paper"), "han": ("han", "paper"),
             "swinir": ("swinir", "paper"), "swinir_light": ("swinir_light", "paper"), "asid": ("asid", "paper"),
             "rcan_10x6": ("rcan", "10x6"), "swinir_e60": ("swinir", "e60"), "KDSR_S-M": ("kdsr", "paper"),
             "KDSR_S-L": ("kdsr", "l"), "san_fakd": ("san_fakd", "paper"), "san_fakd_6x10": ("san_fakd", "6x10")}
TEACHER_OF = {"rcan_10x6": "rcan", "swinir_e60": "swinir", "san_fakd_6x10": "san_fakd"}
# The student cells of a table come from runs of its paper's own training recipe (kd.profiles).
FAKD_PROFILE, DCKD_PROFILE = "paper-fakd", "paper-dckd"


@dataclass(frozen=True)
class Score:
    psnr: float
    ssim: float | None = None

    def text(self) -> str:
        if self.ssim is None or not math.isfinite(self.ssim):
            return f"{self.psnr:.2f}"
        return f"{self.psnr:.2f}/{self.ssim:.4f}"


@dataclass
class Cell:
    row: tuple[str, ...]
    column: str
    published: Score | None
    ours: Score | None
    evidence: str = ""
    command: str | None = None

    @property
    def delta(self) -> float | None:
        return self.ours.psnr - self.published.psnr if self.ours and self.published else None


@dataclass
class PaperTable:
    name: str
    title: str
    row_names: list[str]
    columns: list[str]
    cells: list[Cell]
    notes: list[str] = field(default_factory=list)
    # Cost columns (parameters, MACs) of some rows, shown as a table of their own before the scores.
    extra: dict[tuple[str, ...], dict[str, str]] = field(default_factory=dict)
    extra_caption: str = ""  # what the cost columns count
    terminal_ssim: bool = False  # the terminal shows SSIM as a second block (markdown and CSV always have it)
    miniature: Miniature | None = None  # stands in while no student run of the table's paper profile exists
    # (title, columns) of column groups printed as tables of their own (a published table's sub-tables); empty: one
    # table of all the columns
    blocks: list[tuple[str, list[str]]] = field(default_factory=list)

    def parts(self) -> list[tuple[str, list[str]]]:
        """(title, columns) of each printed table: the blocks, or the whole table under its title."""
        return self.blocks or [(self.title, self.columns)]


# ------------------------------------------------------------------------------------------------ measurements


def _on_track(rows: pd.DataFrame, degradation: str) -> pd.DataFrame:
    """The rows measured on `degradation` (a frame without the column holds bicubic measurements only)."""
    if "degradation" not in rows:
        return rows if degradation == BICUBIC else rows.iloc[0:0]
    return rows[rows["degradation"].fillna(BICUBIC) == degradation]


@dataclass
class Measured:
    """Our numbers: `models` (arch, preset, scale, dataset_key, psnr, ssim, and optionally degradation) and
    `students` (arch, preset, method, teacher, scale, dataset_key, psnr, ssim, and optionally profile and
    degradation; mean over seeds). A cell takes only the measurements of its track (bicubic unless it says)."""

    models: pd.DataFrame
    students: pd.DataFrame
    miniature: RunSet | None = None  # finished runs of the miniature pairs (kd/report/miniature.py), with seeds
    miniature_source: str = ""  # where they were read from, for the reader

    def model(self, arch: str, preset: str | None, scale: int, dataset: str,
              degradation: str = BICUBIC) -> Score | None:
        rows = self.models[(self.models["arch"] == arch) & (self.models["scale"] == scale)
                           & (self.models["dataset_key"] == dataset)]
        if preset is not None and arch != "bicubic":
            rows = rows[rows["preset"].isna() | (rows["preset"] == preset)]
        return _score(_on_track(rows, degradation))

    def student(self, arch: str, preset: str | None, method: str, teacher: str | None, scale: int,
                dataset: str, profile: str | None = None, degradation: str = BICUBIC) -> Score | None:
        """Mean over seeds; with `profile`, only runs of that profile (a published cell needs its protocol)."""
        s = self.students
        rows = s[(s["arch"] == arch) & (s["preset"] == preset) & (s["method"] == method) & (s["scale"] == scale)
                 & (s["dataset_key"] == dataset)]
        if method != "none":
            rows = rows[rows["teacher"] == teacher]
        if profile is not None:
            rows = rows[rows["profile"] == profile] if "profile" in rows else rows.iloc[0:0]
        return _score(_on_track(rows, degradation))


def _score(rows: pd.DataFrame) -> Score | None:
    if rows.empty:
        return None
    ssim = rows["ssim"].mean()
    return Score(float(rows["psnr"].mean()), float(ssim) if pd.notna(ssim) else None)


def read_eval_csv(path: Path) -> pd.DataFrame:
    """A `kdbench eval --out` CSV as model rows; the preset comes from its `.meta.json` when present."""
    if not path.is_file():
        raise KdError(f"--eval-csv {path}: no such file; write one with kdbench eval --model ... --out {path}")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise KdError(f"--eval-csv {path} could not be read as CSV ({exc})") from None
    missing = {"model", "dataset", "scale", "psnr_y", "ssim_y"} - set(table.columns)
    if missing:
        raise KdError(f"--eval-csv {path} lacks column(s) {', '.join(sorted(missing))}; "
                      "pass a per-dataset CSV written by kdbench eval --out")
    preset, degradation = None, BICUBIC
    meta = path.with_name(path.name + ".meta.json")
    if meta.is_file():
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
            preset = (info.get("model") or {}).get("preset")
            degradation = str(info.get("degradation") or BICUBIC)
        except (ValueError, AttributeError):  # not JSON, not UTF-8, not an object
            preset = None
    return pd.DataFrame({"arch": table["model"], "preset": preset, "scale": table["scale"].astype(int),
                         "dataset_key": table["dataset"].map(canonical_dataset), "psnr": table["psnr_y"],
                         "ssim": table["ssim_y"], "degradation": degradation})


def _shown(folder: Path) -> str:
    """A folder as the reader can find it: relative to the working folder, or to the repository, where it is in."""
    resolved = folder.resolve()
    for base, prefix in ((Path.cwd(), ""), (checkout_root(), "the repository's ")):
        if base is not None and resolved.is_relative_to(base):
            return prefix + str(resolved.relative_to(base))
    return str(folder)


def collect_measured(runs_dir: Path | None, eval_csvs: list[Path],
                     miniature_dirs: Sequence[Path] | None = None) -> tuple[Measured, list[str]]:
    """Our cells from eval CSVs and the runs under `runs_dir`; the miniature pairs' runs from `miniature_dirs`
    (default `miniature.default_dirs()`: the local runs of its sweeps and the records committed to the repository;
    those that do not exist are skipped; a folder named in `miniature_dirs` must exist). A note says which folders
    the miniature came from."""
    for folder in miniature_dirs or []:
        if not Path(folder).is_dir():
            raise KdError(f"--miniature-runs {folder}: no such folder; give a folder of the miniature's runs (where "
                          "the sweep commands of `kdbench paper fakd|dckd|kdsr` write them), or leave the option out "
                          "to read the default folders.")
    notes: list[str] = []
    models = [read_eval_csv(Path(p)) for p in eval_csvs]
    students = []
    if runs_dir is not None and Path(runs_dir).is_dir():
        try:
            runset = scan_runs(runs_dir)
        except KdError:  # no finished run there: the table's own note says which cells stay empty and why
            runset = None
        if runset is not None:
            notes += [*runset.notes, *runset.warnings]
            for run in runset.runs:
                info = run.teacher_info
                degradation = run.summary.get("degradation") or BICUBIC
                for dataset, scores in run.summary["datasets"].items():
                    students.append({"arch": run.summary["student"], "preset": run.summary.get("student_preset"),
                                     "method": run.method, "teacher": info.get("arch"), "scale": run.scale,
                                     "profile": run.summary.get("profile"), "degradation": degradation,
                                     "dataset_key": canonical_dataset(dataset), "psnr": scores.get("psnr_y"),
                                     "ssim": scores.get("ssim_y")})
                for dataset, scores in (info.get("eval") or {}).items():
                    models.append(pd.DataFrame([{"arch": info.get("arch"), "preset": info.get("preset"),
                                                 "scale": run.scale, "dataset_key": canonical_dataset(dataset),
                                                 "psnr": scores.get("psnr_y"), "ssim": scores.get("ssim_y"),
                                                 "degradation": degradation}]))
    model_cols = ["arch", "preset", "scale", "dataset_key", "psnr", "ssim", "degradation"]
    model_frame = pd.concat(models, ignore_index=True) if models else pd.DataFrame(columns=model_cols)
    student_frame = pd.DataFrame(students, columns=["arch", "preset", "method", "teacher", "scale", "dataset_key",
                                                    "psnr", "ssim", "profile", "degradation"])
    for frame in (model_frame, student_frame):
        frame["psnr"] = pd.to_numeric(frame["psnr"], errors="coerce")
        frame["ssim"] = pd.to_numeric(frame["ssim"], errors="coerce")
    miniature = None
    folders = default_dirs() if miniature_dirs is None else [Path(d) for d in miniature_dirs]
    existing = [folder for folder in folders if folder.is_dir()]
    if existing:
        try:
            miniature = scan_runs(existing)
        except KdError as exc:  # nothing finished there yet: the miniature says which sweeps fill it
            notes.append(str(exc))
    source = ""
    if miniature is not None:
        notes += [f"miniature runs: {note}" for note in [*miniature.notes, *miniature.warnings]]
        counts = {folder: sum(run.run_dir.parent == folder for run in miniature.runs) for folder in existing}
        source = ("Runs: " + "; ".join(f"{count} finished in {_shown(folder)}" for folder, count in counts.items())
                  + (" (the default folders: --miniature-runs names others)." if miniature_dirs is None else "."))
    return Measured(model_frame, student_frame, miniature, source), notes


# ------------------------------------------------------------------------------------------------ commands


def _preset_note(arch: str, preset: str | None) -> str:
    from kd.models import get_entry

    if preset is None or preset in get_entry(arch).presets:
        return ""
    return f" (needs a '{preset}' preset of {arch}, not registered yet)"


def eval_command(published_model: str, scale: int, table: str) -> str:
    arch, preset = MODEL_MAP[published_model]
    return network_eval_command(arch, preset, scale, table)


def network_eval_command(arch: str, preset: str | None, scale: int, table: str, official: bool = True,
                         degradation: str | None = None) -> str:
    """The evaluation that fills a network's cells of `table`; `official=False` where the checkpoint may as well be
    a kdbench run's (no official weights at this scale, or not known); `degradation`: the blind-SR track it is
    scored on (`kdbench eval --degradation`), bicubic when None."""
    out = f"{arch}{'' if preset in (None, 'paper') else '_' + preset}_x{scale}.csv"
    weights = f"<{'official ' if official else ''}{arch} x{scale} weights>"
    ckpt = "" if arch == "bicubic" else f" --ckpt {weights}"
    shown_preset = "" if arch == "bicubic" else f" --preset {preset}"
    datasets = ",".join(PAPER_DATASETS)
    track = f" --degradation {degradation}" if degradation else ""
    return (f"kdbench eval --model {arch}{shown_preset}{ckpt} --data {datasets} --scale {scale}{track} --out {out}, "
            f"then kdbench paper {table} --eval-csv {out}") + _preset_note(arch, preset)


def run_command(published_model: str, method: str, scale: int, profile: str) -> str:
    from kd.methods import list_methods

    arch, preset = MODEL_MAP[published_model]
    teacher = TEACHER_OF.get(published_model, "rcan")
    kd_part = "--method none" if method == "none" else f"--teacher {teacher} --method {method}"
    known = {name for name, _ in list_methods()}
    missing = [m for m in method.split("+") if m not in known]
    note = f" (method {', '.join(missing)} not implemented in kdbench yet)" if missing else ""
    if "+" in method and not missing:
        note = f" (a combination of {', '.join(method.split('+'))}: kdbench runs one method per run, not both)"
    return (f"kdbench run --profile {profile} --student {arch} --student-preset {preset} {kd_part} --scale {scale}"
            + note + _preset_note(arch, preset))


# ------------------------------------------------------------------------------------------------ tables


def _published(**match) -> pd.DataFrame:
    table = published_results(with_seed=True)
    for column, value in match.items():
        table = table[table[column] == value]
    return table


def _pub_score(row) -> Score:
    return Score(float(row["psnr"]), float(row["ssim"]) if pd.notna(row["ssim"]) else None)


def _bicubic(measured: Measured) -> PaperTable:
    cells = []
    for _, row in _published(source="RCAN (Zhang et al., ECCV 2018)", model="bicubic").iterrows():
        scale, dataset = int(row["scale"]), row["dataset_key"]
        ours = measured.model("bicubic", None, scale, dataset)
        cells.append(Cell((f"x{scale}", "Bicubic"), dataset, _pub_score(row), ours, row["evidence"],
                          None if ours else eval_command("bicubic", scale, "bicubic")))
    return PaperTable("bicubic", "RCAN (ECCV 2018) Table 3: Bicubic rows (PSNR/SSIM on Y)", ["Scale", "Method"],
                      PAPER_DATASETS, cells)


def _teachers(measured: Measured) -> PaperTable:
    cells = []
    for source, label in (("RCAN (Zhang", "RCAN"), ("HAN (Niu", "HAN"), ("SwinIR (Liang", "SwinIR")):
        table = published_results()
        table = table[table["source"].str.startswith(source) & (table["role"] == "teacher")]
        for _, row in table.iterrows():
            scale, dataset, model = int(row["scale"]), row["dataset_key"], row["model"]
            arch, preset = MODEL_MAP[model]
            ours = measured.model(arch, preset, scale, dataset)
            cells.append(Cell((f"x{scale}", f"{label} ({row['train_set']})", row["source"].split(",")[0] + ")"),
                              dataset, _pub_score(row), ours, row["evidence"],
                              None if ours else eval_command(model, scale, "teachers")))
    return PaperTable("teachers", "Teachers: RCAN Table 3, HAN (as quoted in SwinIR Table 2), SwinIR Table 2",
                      ["Scale", "Model", "Source"], PAPER_DATASETS, cells)


# FAKD Table 3's two column groups, by teacher: its title and the column of each (role, method). The SAN columns
# (published_results_seed.csv) were produced by FAKD's own copy of SAN, arch san_fakd (SEED_NETWORKS.md section 1).
FAKD_BLOCKS = {
    "rcan": ("FAKD (ICIP 2020) Table 3, RCAN: teacher (10x20) / student (10x6) / student + FAKD",
             {("teacher", "none"): "TN (RCAN 10x20)", ("student", "none"): "SN without FAKD",
              ("student", "fakd"): "SN with FAKD"}),
    "san_fakd": ("FAKD (ICIP 2020) Table 3, SAN (FAKD's copy): teacher (20x10) / student (6x10) / student + FAKD",
                 {("teacher", "none"): "TN (SAN 20x10)", ("student", "none"): "SN (6x10) without FAKD",
                  ("student", "fakd"): "SN (6x10) with FAKD"}),
}


def _fakd(measured: Measured) -> PaperTable:
    cells, students = [], []
    for _, row in _published(source="FAKD (He et al., ICIP 2020)").iterrows():
        scale, dataset, model = int(row["scale"]), row["dataset_key"], row["model"]
        arch, preset = MODEL_MAP[model]
        if row["role"] == "teacher":
            column = FAKD_BLOCKS[model][1][("teacher", "none")]
            ours = measured.model(arch, preset, scale, dataset)
            command = None if ours else eval_command(model, scale, "fakd")
        else:
            teacher = TEACHER_OF[model]
            column = FAKD_BLOCKS[teacher][1][("student", row["method"])]
            ours = measured.student(arch, preset, row["method"], MODEL_MAP[teacher][0], scale, dataset,
                                    profile=FAKD_PROFILE)
            command = None if ours else run_command(model, row["method"], scale, FAKD_PROFILE)
        cells.append(Cell((dataset, f"x{scale}"), column, _pub_score(row), ours, row["evidence"], command))
        if row["role"] != "teacher":
            students.append(cells[-1])
    blocks = [(title, list(columns.values())) for title, columns in FAKD_BLOCKS.values()]
    table = PaperTable("fakd", "FAKD (ICIP 2020) Table 3: teachers / students / students + FAKD, RCAN and SAN",
                       ["Dataset", "Scale"], [column for _, columns in blocks for column in columns], cells,
                       blocks=blocks)
    return _with_miniature(table, students, FAKD_PROFILE, lambda: build_miniature(measured.miniature, FAKD),
                           measured.miniature_source)


DCKD_METHODS = {"none": "Scratch", "logits": "Logits", "fakd": "FAKD", "mipkd": "MiPKD", "dckd": "DCKD",
                "dckd+dukd": "DCKD* (+DUKD)"}


def _dckd(measured: Measured) -> PaperTable:
    cells = []
    families = {"swinir": "SwinIR", "swinir_e60": "SwinIR", "rcan": "RCAN", "rcan_10x6": "RCAN"}
    for _, row in _published(source="DCKD (Zhou et al., AAAI 2025)").iterrows():
        scale, dataset, model = int(row["scale"]), row["dataset_key"], row["model"]
        column = f"{families[model]} {dataset}"
        if row["role"] == "teacher":
            method_label = "Teacher"
            arch, preset = MODEL_MAP[model]
            ours = measured.model(arch, preset, scale, dataset)
            command = None if ours else eval_command(model, scale, "dckd")
        else:
            method_label = DCKD_METHODS[row["method"]]
            arch, preset = MODEL_MAP[model]
            ours = measured.student(arch, preset, row["method"], TEACHER_OF[model], scale, dataset,
                                    profile=DCKD_PROFILE)
            command = None if ours else run_command(model, row["method"], scale, DCKD_PROFILE)
        cells.append(Cell((f"x{scale}", method_label), column, _pub_score(row), ours, row["evidence"], command))
    columns = [f"{fam} {d}" for fam in ("SwinIR", "RCAN") for d in ("Set5", "Set14", "B100", "Urban100")]
    order = ["Teacher", *DCKD_METHODS.values()]
    cells.sort(key=lambda c: (c.row[0], order.index(c.row[1])))
    table = PaperTable("dckd", "DCKD (AAAI 2025) Table 2: methods x datasets x scales (students SwinIR-60, "
                       "RCAN 10x6)", ["Scale", "Method"], columns, cells)
    students = [c for c in cells if c.row[1] != "Teacher"]
    return _with_miniature(table, students, DCKD_PROFILE, lambda: build_miniature(measured.miniature, DCKD),
                           measured.miniature_source)


def _with_miniature(table: PaperTable, student_cells: list[Cell], profile: str,
                    miniature: Callable[[], Miniature], source: str) -> PaperTable:
    """Student cells come only from runs of the table's paper profile (days of GPU training per cell); without any,
    the miniature of the table (kd/report/miniature.py) stands in."""
    if not any(cell.ours for cell in student_cells):
        table.miniature = miniature()
        table.miniature.source = source
        spec = table.miniature.spec
        table.notes.append(f"no student run of the {profile} profile was found, so the student cells are empty; the "
                           f"miniature of this table (the same pair shapes at the {spec.profile} profile's budget, "
                           f"paired seeds {', '.join(map(str, spec.seeds))}) stands in for them, shown first.")
    return table


KDSR_TRACK = "iso_gaussian"  # Table 1: isotropic Gaussian blur, Gaussian8 test kernels


def _kdsr(measured: Measured) -> PaperTable:
    """Table 1 of KDSR: its students on Gaussian8 (x4). Ours: a kdbench-trained student of the paper profile on the
    same track, else the evaluation of the official weights (`kdbench eval --degradation`)."""
    cells = []
    table = published_results_seed()
    for _, row in table[table["paper"].str.startswith("KDSR (")].iterrows():
        scale, dataset, model = int(row["scale"]), row["dataset_key"], row["student"]
        arch, preset = MODEL_MAP[model]
        trained = measured.student(arch, preset, "kdsr", "kdsr_teacher", scale, dataset, profile="paper",
                                   degradation=KDSR_TRACK)
        ours = trained or measured.model(arch, preset, scale, dataset, degradation=KDSR_TRACK)
        evidence = row["source"] + ("; ours: the official weights" if ours and not trained else "")
        command = None if ours else (
            f"{network_eval_command(arch, preset, scale, 'kdsr', degradation=KDSR_TRACK)}; or train it: kdbench run "
            f"--profile paper --student {arch} --student-preset {preset} --teacher kdsr_teacher --teacher-preset "
            f"{preset} --method kdsr --scale {scale} --set data.degradation={KDSR_TRACK}")
        cells.append(Cell((f"x{scale}", model), dataset, Score(float(row["psnr"]), float(row["ssim"])), ours,
                          evidence, command))
    result = PaperTable("kdsr", "KDSR (ICLR 2023) Table 1: blind SR, isotropic Gaussian blur, Gaussian8 kernels (x4)",
                        ["Scale", "Model"], PAPER_DATASETS, cells,
                        notes=["Gaussian8: each test image degraded with 8 fixed isotropic Gaussian kernels (sigma "
                               "1.8 to 3.2 at x4) then the bicubic downsampler; a score is the mean over the kernels "
                               "and images, as the official test averages (kd.data.degradations)."])
    return _with_miniature(result, cells, "paper", lambda: build_miniature(measured.miniature, KDSR),
                           measured.miniature_source)


# The kdbench networks of the lightweight table: published name -> (architecture, preset). Their published rows come
# from published_results.csv (swinir_light, a peer of Omni-SR's Table 1), published_results_seed.csv (SwinFIR-T,
# U-HDN+IKM) and published_results_lightweight.csv (the others).
LIGHTWEIGHT_NETWORKS = {"swinir_light": ("swinir_light", "paper"), "SwinFIR-T": ("swinfir", "t"),
                        "U-HDN+IKM": ("ikm", "paper"), "A2N": ("a2n", "paper"), "HPINet-S": ("hpinet", "s"),
                        "HPINet-M": ("hpinet", "m"), "HPINet-L": ("hpinet", "l"), "NCNet": ("ncnet", "paper"),
                        "HSRNet": ("hsrnet", "paper")}
ASID_ROW = "ASID (student)"
COST_SCALE = 4
PARAMS_OURS, PARAMS_PUBLISHED, MACS_OURS = "Params (ours)", "Params (published)", "MACs (ours)"


def _same_presets(arch: str, preset: str) -> list[str]:
    """The presets of `arch` that build the same network as `preset` (HPINet's `paper` is `m`), `preset` first."""
    from kd.models import get_entry

    presets = get_entry(arch).presets
    return [preset] + [name for name, fields in presets.items() if name != preset and fields == presets[preset]]


def _network_score(measured: Measured, arch: str, preset: str, scale: int, dataset: str) -> Score | None:
    """An evaluation of the network (`--eval-csv`), else its no-KD runs of the lightweight table's recipe (the
    `paper` profile)."""
    for name in _same_presets(arch, preset):
        score = measured.model(arch, name, scale, dataset) or measured.student(
            arch, name, "none", None, scale, dataset, profile="paper")
        if score:
            return score
    return None


@cache  # a property of the code alone; counting the MACs of the table's ten networks takes seconds
def _cost(arch: str, preset: str, scale: int) -> tuple[int, int]:
    """Parameters and MACs for one 1280x720 output, counted on the meta device (no weights, no compute)."""
    import torch

    from kd.metrics.cost import count_parameters, macs_for_output
    from kd.models import create

    with torch.device("meta"):
        model = create(arch, scale, preset)
    return count_parameters(model), macs_for_output(model, scale)


def _lightweight(measured: Measured) -> PaperTable:
    published = []  # (name, scale, dataset, score or None where none was found, evidence)
    params_published = {}
    for _, row in _published(role="lightweight peer").iterrows():
        published.append((row["model"], int(row["scale"]), row["dataset_key"], _pub_score(row), row["evidence"]))
        if pd.notna(row["params"]):
            params_published[row["model"]] = f"{row['params'] / 1e3:,.0f}K"
    seed = pd.concat([published_results_seed(), published_results_lightweight()], ignore_index=True)
    seed = seed[seed["method"].isin(LIGHTWEIGHT_NETWORKS) & seed["dataset_key"].isin(PAPER_DATASETS)]
    for _, row in seed.iterrows():
        score = _pub_score(row) if pd.notna(row["psnr"]) else None
        published.append((row["method"], int(row["scale"]), row["dataset_key"], score, row["source"]))
    cells = []
    for name, scale, dataset, score, evidence in published:
        if name in LIGHTWEIGHT_NETWORKS:
            arch, preset = LIGHTWEIGHT_NETWORKS[name]
            ours = _network_score(measured, arch, preset, scale, dataset)
            command = network_eval_command(arch, preset, scale, "lightweight", official=False)
        else:
            ours, command = None, "not a kdbench network: published value only"
        cells.append(Cell((f"x{scale}", name), dataset, score, ours, evidence, command))
    for scale in sorted({scale for _, scale, *_ in published}):
        for dataset in PAPER_DATASETS:
            ours = _network_score(measured, "asid", "paper", scale, dataset)
            cells.append(Cell((f"x{scale}", ASID_ROW), dataset, None, ours,
                              "ASID's own table not confirmed (ARCHITECTURES.md 2.10)",
                              network_eval_command("asid", "paper", scale, "lightweight", official=False)))
    cells.sort(key=lambda c: (c.row[0], c.row[1] == ASID_ROW, c.row[1] in LIGHTWEIGHT_NETWORKS, c.row[1].lower()))
    extra = {}
    for key in dict.fromkeys(cell.row for cell in cells if cell.row[0] == f"x{COST_SCALE}"):
        name = key[1]
        network = ("asid", "paper") if name == ASID_ROW else LIGHTWEIGHT_NETWORKS.get(name)
        params, macs = _cost(*network, COST_SCALE) if network else (None, None)
        extra[key] = {PARAMS_OURS: f"{params:,}" if params else "-",
                      PARAMS_PUBLISHED: "not confirmed" if name == ASID_ROW else params_published.get(name, "-"),
                      MACS_OURS: f"{macs / 1e9:.1f}G" if macs else "-"}
    return PaperTable(
        "lightweight", "ASID beside lightweight SR networks: the Omni-SR Table 1 peers, A2N, HPINet, SwinFIR-T, "
        "U-HDN+IKM, NCNet, HSRNet", ["Scale", "Model"], PAPER_DATASETS, cells, extra=extra, terminal_ssim=True,
        extra_caption=f"Cost at x{COST_SCALE}. {PARAMS_OURS}: the kdbench network's parameters, buffers excluded, "
        "as the official code counts them (SEED_NETWORKS.md section 11, ARCHITECTURES.md; SwinIR's published 897K "
        "leaves out its position-bias tables). Published: the source's figure. MACs: one 1280x720 output "
        "(kd.metrics.cost). '-': not a kdbench network, or no figure.",
        notes=["ASID's published numbers are not in kdbench's reference data (not confirmed); only our measurement "
               "is shown for it.",
               "A published '–' is a value its source does not give or that was not found (the evidence says "
               "which); values marked UNVERIFIED or read off a figure are not from a checked table."])


PAPER_TABLES: dict[str, Callable[[Measured], PaperTable]] = {
    "bicubic": _bicubic, "teachers": _teachers, "fakd": _fakd, "dckd": _dckd, "lightweight": _lightweight,
    "kdsr": _kdsr,
}


def paper_table(name: str, *, runs_dir: str | Path | None = None, eval_csvs: list[Path] | None = None,
                miniature_dirs: Sequence[str | Path] | None = None, measured: Measured | None = None) -> PaperTable:
    """`miniature_dirs`: the folders of the miniature's runs (default: `miniature.default_dirs()`)."""
    if name not in PAPER_TABLES:
        raise unknown_choice("paper table", name, PAPER_TABLES)
    notes: list[str] = []
    if measured is None:
        measured, notes = collect_measured(Path(runs_dir) if runs_dir else None, list(eval_csvs or []),
                                           None if miniature_dirs is None else [Path(d) for d in miniature_dirs])
    table = PAPER_TABLES[name](measured)
    table.notes = notes + table.notes
    return table


# ------------------------------------------------------------------------------------------------ output

FORMATS = ("table", "markdown", "csv")


def footnotes(table: PaperTable) -> dict[str, int]:
    numbers: dict[str, int] = {}
    for cell in table.cells:
        if cell.ours is None and cell.command and cell.command not in numbers:
            numbers[cell.command] = len(numbers) + 1
    return numbers


def _layout(table: PaperTable,
            columns: list[str] | None) -> tuple[dict[tuple[str, ...], dict[str, Cell]], list[str]]:
    """The rows that hold a cell of `columns` (default: the table's), their cells by column, and those of `columns`
    that hold a cell."""
    wanted = table.columns if columns is None else columns
    rows: dict[tuple[str, ...], dict[str, Cell]] = {}
    for cell in table.cells:
        if cell.column in wanted:
            rows.setdefault(cell.row, {})[cell.column] = cell
    return rows, [c for c in wanted if any(c in r for r in rows.values())]


def grid(table: PaperTable, columns: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the original layout (of `columns` only, if given): per column, published | ours | Δ; then
    the evidence."""
    notes = footnotes(table)
    rows, columns = _layout(table, columns)
    header = list(table.row_names)
    for column in columns:
        header += [f"{column} published", f"{column} ours", f"{column} Δ"]
    header.append("Evidence")
    body = []
    for key, by_column in rows.items():
        line = list(key)
        for column in columns:
            cell = by_column.get(column)
            if cell is None:
                line += ["", "", ""]
                continue
            ours = cell.ours.text() if cell.ours else ("–" + (f" [{notes[cell.command]}]" if cell.command else ""))
            line += [cell.published.text() if cell.published else "–", ours,
                     f"{cell.delta:+.2f}" if cell.delta is not None else ""]
        line.append("; ".join(dict.fromkeys(c.evidence for c in by_column.values() if c.evidence)))
        body.append(line)
    return header, body


def compact_grid(table: PaperTable, columns: list[str] | None = None,
                 metric: str = "psnr") -> tuple[list[str], list[list[str]]]:
    """The terminal's layout (of `columns` only, if given): one cell per published column, "published → ours (Δ)"
    in PSNR (dB), or in SSIM with `metric="ssim"`, so that ours always stands beside the published value however the
    table folds. The evidence column goes with the PSNR block only."""
    notes = footnotes(table)
    rows, columns = _layout(table, columns)
    with_evidence, digits = metric == "psnr", 2 if metric == "psnr" else 4
    header = [*table.row_names, *columns, *(["Evidence"] if with_evidence else [])]
    body = []
    for key, by_column in rows.items():
        line = list(key)
        for column in columns:
            cell = by_column.get(column)
            if cell is None:
                line.append("")
                continue
            published, ours = (_value(score, metric) for score in (cell.published, cell.ours))
            if ours is None:
                shown = "–" + (f"[{notes[cell.command]}]" if cell.command else "")
            else:
                shown = f"{ours:.{digits}f}" + (f" ({ours - published:+.{digits}f})" if published is not None else "")
            line.append(("–" if published is None else f"{published:.{digits}f}") + f" → {shown}")
        if with_evidence:  # a long `owner/repo@commit` may wrap before its commit
            line.append("; ".join(dict.fromkeys(c.evidence for c in by_column.values() if c.evidence))
                        .replace("@", " @"))
        body.append(line)
    return header, body


def _value(score: Score | None, metric: str) -> float | None:
    value = None if score is None else (score.psnr if metric == "psnr" else score.ssim)
    return value if value is not None and math.isfinite(value) else None


def extra_grid(table: PaperTable) -> tuple[list[str], list[list[str]]]:
    """The rows that have cost columns (`table.extra`): their key and those columns."""
    names = list(dict.fromkeys(name for values in table.extra.values() for name in values))
    rows = dict.fromkeys(cell.row for cell in table.cells if cell.row in table.extra)
    return [*table.row_names, *names], [[*key, *(table.extra[key].get(name, "") for name in names)] for key in rows]


def footnote_lines(table: PaperTable, width: int | None = None) -> list[str]:
    """"[n] command" per footnote; with `width`, wrapped at spaces (a long word stays whole) under a hanging
    indent."""
    import textwrap

    lines = []
    for command, number in footnotes(table).items():
        text = f"[{number}] {command}"
        lines += textwrap.wrap(text, width, subsequent_indent="    ", break_long_words=False,
                               break_on_hyphens=False) if width else [text]
    return lines


def to_text(table: PaperTable, fmt: str = "markdown") -> str:
    """Markdown (the miniature and its orderings first while it stands in, then the published table) or CSV."""
    if fmt not in FORMATS:
        raise unknown_choice("format", fmt, FORMATS)
    if fmt == "csv":
        return to_csv(table)
    lines = []
    if table.miniature is not None:
        lines += [miniature_markdown(table.miniature).rstrip("\n"), ""]
    lines += [f"## {table.title}", ""]
    if table.extra:
        lines += [table.extra_caption, "", *markdown_table(*extra_grid(table), left=len(table.row_names)), ""]
    lines += ["PSNR/SSIM on Y, crop = scale. Δ = ours − published PSNR (dB).", ""]
    for title, columns in table.parts():
        lines += [f"### {title}", ""] if table.blocks else []
        lines += [*markdown_table(*grid(table, columns)), ""]
    lines += [f"- {line}" for line in footnote_lines(table)]
    lines += [""] + [f"- Note: {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def to_csv(table: PaperTable) -> str:
    records = []
    for cell in table.cells:
        records.append({
            "table": table.name, **{name: value for name, value in zip(table.row_names, cell.row)},
            **table.extra.get(cell.row, {}), "column": cell.column,
            "published_psnr": cell.published.psnr if cell.published else None,
            "published_ssim": cell.published.ssim if cell.published else None,
            "ours_psnr": cell.ours.psnr if cell.ours else None, "ours_ssim": cell.ours.ssim if cell.ours else None,
            "delta_psnr": cell.delta, "evidence": cell.evidence, "command": cell.command if not cell.ours else None,
        })
    buffer = io.StringIO()
    pd.DataFrame(records).to_csv(buffer, index=False)
    return buffer.getvalue()
