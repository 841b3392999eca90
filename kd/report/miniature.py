"""Published KD tables in miniature: the same pair shapes at a CPU budget, our gains beside the published ones.

DCKD (AAAI 2025) Table 2 trains RCAN 10x6 from RCAN 10x20 and SwinIR embed-60 from SwinIR embed-180 for days on
GPUs; FAKD (ICIP 2020) Table 3 the same RCAN pair and SAN 6x10 from SAN 20x10. The miniature keeps each pair's
depth/width relation and its student/teacher parameter ratio within 20 % (presets `miniature_teacher` and
`miniature_student`), trains teacher and students with one recipe (the `miniature` profile: 2,000 steps) so that
the teacher's lead over the scratch student is its capacity, runs every method with 5 paired seeds and compares
*gains over scratch* with the published gains (method − scratch, same table). Absolute PSNRs of a 2,000-step run
are not comparable with published ones; the question a miniature can answer is which published orderings of
methods survive at this scale, and at what share of their published margin.

KDSR (ICLR 2023) Table 1 is blind SR (Gaussian8): its miniature runs on that track (`data.degradation=iso_gaussian`)
and measures the gain of KDSR's KD term, over the same student with that term's weight at 0 (both start from the
teacher's SR trunk), since Table 1 has no row without it.

    mini = build_miniature(scan_runs(default_dirs()), DCKD)  # what `kdbench paper dckd` reads by default
    print(to_markdown(mini))

Each published ordering (method A's published gain above method B's) is checked with our paired A − B differences:
Holm–Bonferroni over the orderings with enough paired seeds (`kd.stats.holm`) gives each its interval; it "holds"
when that interval lies above 0, is "reversed" below 0, and is "unresolved" otherwise. Beside the verdict stands
the ratio of our mean margin to the published one: a margin that holds at a small fraction of the published one
reproduces the ordering, not its size, and the finding counts those that hold at >= 25 % of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from itertools import combinations
from pathlib import Path

from kd.fileio import checkout_root
from kd.output import markdown_table
from kd.report.runs import Run, RunSet
from kd.stats import CONFIDENCE, FAMILYWISE_ALPHA, MIN_SEEDS_TO_RANK, Judged, PairedDelta, holm, mean_std, paired_delta

PROFILE, SCALE, SEEDS = "miniature", 4, (0, 1, 2, 3, 4)
DATASETS = ("Set5", "Set14", "B100")  # Urban100 is not among the miniature profile's test sets
METHODS = ("logits", "fakd", "mipkd", "dckd")  # Table 2's methods; scratch (none) is the baseline of every gain
LABELS = {"logits": "Logits", "fakd": "FAKD", "mipkd": "MiPKD", "dckd": "DCKD", "dukd": "DUKD", "kdsr": "KDSR"}
RUNS_DIR = "runs/miniature"  # apart from the ASID grid, whose report would otherwise show these students too
COMMITTED = "reports/miniature/records"  # the miniature's runs as committed to the repository
COMMITTED_KDSR = "reports/miniature-kdsr/records"  # where the KDSR miniature's records go once they are run
MIN_SHARE = 0.25  # an ordering that holds at this share of the published margin or more reproduces its size too
MIN_TEACHER_GAP = 0.3  # dB over the baseline student, for a pair without a published gap: below it, no gains to show
GAP_TOLERANCE = 2.0  # our teacher's lead over scratch within this factor of the published lead: a fair miniature
MIN_PUBLISHED_SPLIT = 0.05  # dB: published gains closer than this are not treated as an ordering


@dataclass(frozen=True)
class MiniaturePair:
    name: str
    published_student: str  # the model name in published_results(with_seed=True)
    student: tuple[str, str]  # (architecture, preset)
    teacher: tuple[str, str]
    published_teacher: str = ""  # its model name there, where the table has a teacher row

    def sweep_command(self, methods: tuple[str, ...] = ("none", *METHODS), sets: tuple[str, ...] = (),
                      profile: str = PROFILE, seeds: tuple[int, ...] = SEEDS) -> str:
        # fp32 teachers: the cpu profile's `auto` gives bf16 on some CPUs, and cells made on machines that differ
        # there would neither share run ids nor pair (the committed records are fp32)
        extra = "".join(f" --set {value}" for value in sets)
        return (f"kdbench sweep --profile {profile} --students {self.student[0]} --set student.preset="
                f"{self.student[1]} --teachers {self.teacher[0]} --methods {','.join(methods)} "
                f"--seeds {','.join(map(str, seeds))} --set accel.teacher_dtype=fp32{extra} --out-dir {RUNS_DIR} "
                "--executor local --max-parallel 2 --threads 1")


PAIRS = (
    MiniaturePair("RCAN", "rcan_10x6", ("rcan", "miniature_student"), ("rcan", "miniature_teacher"), "rcan"),
    MiniaturePair("SwinIR", "swinir_e60", ("swinir", "miniature_student"), ("swinir", "miniature_teacher"), "swinir"),
)
# Student / teacher parameters of the whole network (teachers/rcan.py, teachers/swinir.py): RCAN 0.364, published
# 10x6 / 10x20 0.332; SwinIR 0.108, published embed 60 / embed 180 0.104.
PAIR_NOTE = ("Pairs: RCAN 3 groups x 20 blocks → 3 x 6 (24 channels), SwinIR embed 48, 6 stages x 6 blocks → embed "
             "16, 4 x 6 (head dimension 8), trained on 291-train with the miniature profile's recipe; "
             "student/teacher parameters 0.36 and 0.11 (published pairs 0.33 and 0.10).")


@dataclass(frozen=True)
class Baseline:
    """The runs every gain is measured from: scratch (method `none`), or the distilling method with some loss
    weights set (`weights`, e.g. its KD term at 0), which its own sweep sets (`sets`). `label` names them in a
    sentence ("gains over scratch")."""

    label: str = "scratch"
    method: str = "none"
    weights: tuple[tuple[str, float], ...] = ()
    sets: tuple[str, ...] = ()

    def holds(self, run: Run) -> bool:
        weights = run.summary.get("loss_weights") or {}
        return run.method == self.method and all(weights.get(term) == value for term, value in self.weights)


SCRATCH = Baseline()


@dataclass(frozen=True)
class MiniatureSpec:
    """Which published table a miniature stands in for: its source rows, methods and pairs, and the setting of its
    runs (a blind-SR `degradation`, options every cell shares) and the baseline of its gains."""

    title: str
    source: str  # the `source` of its rows in published_results.csv
    methods: tuple[str, ...]
    pairs: tuple[MiniaturePair, ...]
    note: str = ""
    pair_note: str = PAIR_NOTE
    degradation: str = "bicubic"
    sets: tuple[str, ...] = ()  # --set options of every cell
    baseline: Baseline = SCRATCH
    profile: str = PROFILE
    seeds: tuple[int, ...] = SEEDS

    def caption(self) -> str:
        return (f"Gains in dB (method − {self.baseline.label} PSNR-Y). Ours: mean of paired per-seed gains ± the "
                f"half-width of their 95 % t-interval, seeds {', '.join(map(str, self.seeds))} (shown, not claimed: the "
                f"orderings below are what is tested). Published: {self.source}. "
                f"{self.pair_note}{' ' + self.note if self.note else ''}")

    def sweep_commands(self, pair: MiniaturePair) -> tuple[str, str]:
        """(the command that runs the methods' cells, the one that runs the baseline's); one command for both when
        the baseline is scratch."""
        if self.baseline == SCRATCH:
            both = pair.sweep_command(("none", *self.methods), self.sets, self.profile, self.seeds)
            return both, both
        return (pair.sweep_command(self.methods, self.sets, self.profile, self.seeds),
                pair.sweep_command((self.baseline.method,), (*self.sets, *self.baseline.sets), self.profile,
                                   self.seeds))


DCKD = MiniatureSpec("DCKD (AAAI 2025) Table 2 in miniature: gains over scratch, x4, miniature profile",
                     "DCKD (Zhou et al., AAAI 2025)", METHODS, PAIRS,
                     "DUKD is left out: this table has no DUKD row (its DCKD* is DCKD + DUKD).")
# FAKD Table 3's SAN columns come from FAKD's own copy of SAN (arch san_fakd; SEED_NETWORKS.md section 1). Student /
# teacher parameters 0.347 (teachers/san.py), published 6x10 / 20x10 0.315.
SAN_PAIR = MiniaturePair("SAN", "san_fakd_6x10", ("san_fakd", "miniature_student"), ("san_fakd", "miniature_teacher"),
                         "san_fakd")
FAKD = MiniatureSpec("FAKD (ICIP 2020) Table 3 in miniature: FAKD's gain over scratch, x4, miniature profile",
                     "FAKD (He et al., ICIP 2020)", ("fakd",), (PAIRS[0], SAN_PAIR),
                     pair_note="Pairs: RCAN 3 groups x 20 blocks → 3 x 6, SAN (FAKD's copy) 10 groups x 6 blocks → "
                               "3 x 6, both 24 channels, trained on 291-train with the miniature profile's recipe; "
                               "student/teacher parameters 0.36 and 0.35 (published pairs 0.33 and 0.32).")
# KDSR distils blind SR: its teacher is the student's own network with an encoder that also sees the HR, so the pair
# keeps one preset; the KD term's effect is the gain over the same student, trunk transferred, with that term at 0.
KDSR = MiniatureSpec(
    "KDSR (ICLR 2023) Table 1 in miniature: the gain of KDSR's KD term, x4, Gaussian8, cpu profile",
    "none (Table 1 has no row of KDSR without its KD term; its absolute values are in the table below)",
    ("kdsr",), (MiniaturePair("KDSR", "KDSR_S-M", ("kdsr", "mini"), ("kdsr_teacher", "mini")),),
    pair_note="Pair: KDSR mini student from the KDSR mini teacher (32 features, 10 blocks; the teacher's encoder "
              "also sees the HR), trained on 291-train blurred with isotropic Gaussians (sigma 0.2-4), tested on "
              "Gaussian8 (8 kernels, sigma 1.8-3.2); both arms start from the teacher's SR trunk.",
    degradation="iso_gaussian", sets=("teacher.preset=mini", "data.degradation=iso_gaussian"),
    baseline=Baseline("KD term off", "kdsr", (("kd", 0.0),), ("method.weights.kd=0",)), profile="cpu",
    seeds=(0, 1, 2),
)


def default_dirs() -> list[Path]:
    """Where `kdbench paper fakd|dckd|kdsr` looks for the miniature's runs by default: the local runs of its sweep
    commands, and the records committed to the repository when running from a checkout."""
    root = checkout_root()
    committed = [root / folder for folder in (COMMITTED, COMMITTED_KDSR)] if root is not None else []
    return [Path(RUNS_DIR), *(folder for folder in committed if folder.is_dir())]


@dataclass(frozen=True)
class Ordering:
    """A published ordering `better` > `worse` of two methods' gains, and what our paired seeds say of it."""

    pair: str
    dataset: str
    better: str
    worse: str
    published: float  # published gain(better) - gain(worse), dB
    ours: PairedDelta  # our paired difference better - worse; at Holm's level once judged
    judged: Judged | None = None  # Holm–Bonferroni over the miniature's orderings (set by build_miniature)

    @property
    def verdict(self) -> str:
        if self.judged is None or not self.judged.family:
            return "too few seeds"
        if self.judged.above_zero:
            return "holds"
        if self.judged.below_zero:
            return "reversed"
        return "unresolved"

    @property
    def ratio(self) -> float:
        """Our mean margin over the published one."""
        return self.ours.mean / self.published if self.ours.n else math.nan


@dataclass
class Miniature:
    published: dict[tuple[str, str, str], float]  # (pair, method, dataset) -> published gain over scratch
    ours: dict[tuple[str, str, str], PairedDelta]  # the same key -> our paired gain
    teacher_gap: dict[tuple[str, str], float]  # (pair, dataset) -> our teacher - mean scratch PSNR
    published_teacher_gap: dict[tuple[str, str], float] = field(default_factory=dict)  # the same, published
    orderings: list[Ordering] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # sweep commands that would fill empty cells
    spec: MiniatureSpec = DCKD
    warnings: list[str] = field(default_factory=list)
    source: str = ""  # which folders the runs came from (kd.report.paper.collect_measured)

    @property
    def has_runs(self) -> bool:
        return any(d.n for d in self.ours.values())

    def finding(self) -> str:
        """One sentence: how many published orderings our seeds reproduce (or, with one method, its gain)."""
        if not self.has_runs:
            return (f"The miniature has not been run yet: no finished {self.spec.profile}-profile run of its pairs "
                    "was found.")
        caveat = self._gap_caveat()
        if not self.orderings:
            gains = [f"{LABELS.get(m, m)} from {p.name} on Set5 {_gain(self.ours.get((p.name, m, 'Set5')))} dB "
                     f"({_published_gain(self.published.get((p.name, m, 'Set5')))})"
                     for p in self.spec.pairs for m in self.spec.methods]
            return f"Gains over {self.spec.baseline.label} in the miniature: {'; '.join(gains)}{caveat}."
        verdicts = ("holds", "reversed", "unresolved", "too few seeds")
        counts = {v: sum(o.verdict == v for o in self.orderings) for v in verdicts}
        seeds = max(o.ours.n for o in self.orderings)
        seed_count = f"{seeds} paired seed{'s' if seeds != 1 else ''}"
        if counts["too few seeds"] == len(self.orderings):
            return (f"No published ordering of methods is ranked yet ({len(self.orderings)} to check, pairs x "
                    f"datasets): at most {seed_count} so far, {MIN_SEEDS_TO_RANK} needed{caveat}.")
        family = max(o.judged.family for o in self.orderings if o.judged)
        sized = self.holds_at_share()
        text = (f"Of {len(self.orderings)} published orderings of methods (pairs x datasets), after Holm–Bonferroni "
                f"over {family} (familywise {100 * FAMILYWISE_ALPHA:g} %) the miniature reproduces {counts['holds']} "
                f"({sized} at {MIN_SHARE:.0%} or more of the published margin), reverses {counts['reversed']} and "
                f"leaves {counts['unresolved']} unresolved, at up to {seed_count}")
        if counts["too few seeds"]:
            text += f"; it cannot rank {counts['too few seeds']} more yet (fewer than {MIN_SEEDS_TO_RANK} paired seeds)"
        return text + caveat + "."

    def _gap_caveat(self) -> str:
        """Where a teacher's lead over the baseline student is out of proportion: under half or over twice the
        published lead on some dataset (its gains then measure another regime), or, without a published lead, under
        MIN_TEACHER_GAP on Set5."""
        odd = []
        for (pair, dataset), gap in self.teacher_gap.items():
            published = self.published_teacher_gap.get((pair, dataset))
            if published is None and dataset == "Set5" and gap < MIN_TEACHER_GAP:
                odd.append(f"the {pair} teacher is under {MIN_TEACHER_GAP} dB above its {self.spec.baseline.label} "
                           "on Set5")
            elif published is not None and not published / GAP_TOLERANCE <= gap <= published * GAP_TOLERANCE:
                odd.append(f"the {pair} teacher leads its {self.spec.baseline.label} by {gap:+.2f} dB on {dataset} "
                           f"against the published {published:+.2f} dB")
        return f" ({'; '.join(odd)}: that pair's gains are not to the published scale)" if odd else ""

    def holds_at_share(self, share: float = MIN_SHARE) -> int:
        return sum(o.verdict == "holds" and o.ratio >= share for o in self.orderings)


def _published_gain(gain: float | None) -> str:
    return "no published row" if gain is None else f"published {gain:+.2f}"


def _published_gains(spec: MiniatureSpec) -> tuple[dict[tuple[str, str, str], float], dict[tuple[str, str], float]]:
    """Published gains over scratch by (pair, method, dataset), and each teacher's lead over scratch by (pair,
    dataset)."""
    from kd.reference_data import published_results

    table = published_results(with_seed=True)
    table = table[(table["source"] == spec.source) & (table["scale"] == SCALE)]
    gains, teacher_gaps = {}, {}
    for pair in spec.pairs:
        rows = table[(table["model"] == pair.published_student) & (table["role"] == "student")]
        teachers = table[(table["model"] == pair.published_teacher) & (table["role"] == "teacher")]
        for dataset in DATASETS:
            at = rows[rows["dataset_key"] == dataset].set_index("method")["psnr"]
            if "none" not in at:
                continue
            for method in spec.methods:
                if method in at:
                    gains[(pair.name, method, dataset)] = float(at[method] - at["none"])
            teacher = teachers[teachers["dataset_key"] == dataset]["psnr"]
            if len(teacher):
                teacher_gaps[(pair.name, dataset)] = float(teacher.iloc[0] - at["none"])
    return gains, teacher_gaps


def _is_student(run: Run, pair: MiniaturePair, spec: MiniatureSpec) -> bool:
    s = run.summary
    return (run.profile == spec.profile and run.scale == SCALE and s["student"] == pair.student[0]
            and s.get("student_preset") == pair.student[1] and s.get("degradation", "bicubic") == spec.degradation)


def _from_teacher(run: Run, pair: MiniaturePair) -> bool:
    info = run.teacher_info
    return info.get("arch") == pair.teacher[0] and info.get("preset") == pair.teacher[1]


def _by_seed(runs: list[Run], dataset: str) -> dict[int, float]:
    return {run.seed: run.score(dataset, "psnr_y") for run in runs}


def build_miniature(runset: RunSet | None, spec: MiniatureSpec = DCKD) -> Miniature:
    """Our paired gains and the published ones for every pair, method and dataset; orderings compared."""
    from kd.report.tables import one_run_per_seed

    published, published_teacher_gap = _published_gains(spec)
    mini = Miniature(published, {}, {}, published_teacher_gap=published_teacher_gap, spec=spec)
    runs = [run for run in (runset.runs if runset is not None else []) if run.seed in spec.seeds]
    for pair in spec.pairs:
        students = [run for run in runs if _is_student(run, pair, spec)
                    and (run.method == "none" or _from_teacher(run, pair))]
        # apart: a baseline of the distilling method shares its (method, teacher, seed)
        scratch = one_run_per_seed([run for run in students if spec.baseline.holds(run)], mini.warnings)
        distilled = one_run_per_seed([run for run in students if not spec.baseline.holds(run)], mini.warnings)
        by_method = {m: [run for run in distilled if run.method == m] for m in spec.methods}
        methods_command, baseline_command = spec.sweep_commands(pair)
        if any(len(found) < len(spec.seeds) for found in by_method.values()):
            mini.missing.append(methods_command)
        if len(scratch) < len(spec.seeds) and baseline_command not in mini.missing:
            mini.missing.append(baseline_command)
        for dataset in DATASETS:
            base = _by_seed(scratch, dataset)
            scores = {m: _by_seed(found, dataset) for m, found in by_method.items()}
            for method in spec.methods:
                mini.ours[(pair.name, method, dataset)] = paired_delta(scores[method], base)
            teacher = next((score for found in by_method.values() for run in found
                            if (score := ((run.teacher_info.get("eval") or {}).get(dataset) or {}).get("psnr_y"))
                            is not None), None)
            scratch_mean, _ = mean_std(list(base.values()))
            if teacher is not None and math.isfinite(scratch_mean):
                mini.teacher_gap[(pair.name, dataset)] = float(teacher) - scratch_mean
            mini.orderings += _orderings(pair.name, dataset, published, scores)
    judged = holm([o.ours for o in mini.orderings])
    mini.orderings = [replace(o, ours=j.delta, judged=j) for o, j in zip(mini.orderings, judged)]
    return mini


def _orderings(pair: str, dataset: str, published: dict[tuple[str, str, str], float],
               scores: dict[str, dict[int, float]]) -> list[Ordering]:
    """Every two methods whose published gains differ by at least MIN_PUBLISHED_SPLIT and that we have run."""
    found = []
    for a, b in combinations(scores, 2):
        pub_a, pub_b = published.get((pair, a, dataset)), published.get((pair, b, dataset))
        if pub_a is None or pub_b is None or abs(pub_a - pub_b) < MIN_PUBLISHED_SPLIT:
            continue
        better, worse = (a, b) if pub_a > pub_b else (b, a)
        ours = paired_delta(scores[better], scores[worse])
        if ours.n:
            found.append(Ordering(pair, dataset, better, worse, abs(pub_a - pub_b), ours))
    return found


# ------------------------------------------------------------------------------------------------ output


def _gain(delta: PairedDelta | None) -> str:
    if delta is None or not delta.n:
        return "–"
    if not delta.has_interval:
        return f"{delta.mean:+.3f} (n={delta.n})"
    return f"{delta.mean:+.3f} ±{(delta.high - delta.low) / 2:.3f}"


def rows(mini: Miniature) -> tuple[list[str], list[list[str]]]:
    """Header and rows: per dataset, the published gain over scratch and ours (mean ± 95 % half-width, dB)."""
    header = ["Pair", "Method"]
    for dataset in DATASETS:
        header += [f"{dataset} published", f"{dataset} ours"]
    body = []
    for pair in mini.spec.pairs:
        for method in mini.spec.methods:
            line = [pair.name, LABELS.get(method, method)]
            for dataset in DATASETS:
                published = mini.published.get((pair.name, method, dataset))
                line += ["–" if published is None else f"{published:+.2f}",
                         _gain(mini.ours.get((pair.name, method, dataset)))]
            body.append(line)
    return header, body


def orderings_caption(mini: Miniature) -> str:
    family = max((o.judged.family for o in mini.orderings if o.judged), default=0)
    return ("Published orderings: the first method's published gain over scratch above the second's by Paper (dB); "
            "Ours: our paired margin over the seeds ± the half-width of its t-interval at the level Holm–Bonferroni "
            "tested it at "
            f"(m = {family} orderings with {MIN_SEEDS_TO_RANK}+ paired seeds, familywise "
            f"{100 * FAMILYWISE_ALPHA:g} %: 1 − {FAMILYWISE_ALPHA:g}/(m − k + 1) for the k-th smallest p-value; "
            f"fewer seeds: a plain {100 * CONFIDENCE:g} % interval). Holds: interval above 0; reversed: below 0. "
            f"Ratio: our margin / the published one; {mini.holds_at_share()} of the orderings that hold do so at "
            f"{MIN_SHARE:.0%} or more of the published margin.")


def ordering_rows(mini: Miniature) -> tuple[list[str], list[list[str]]]:
    """One row per published ordering: its published margin, our paired margin with its interval, the ratio of
    the two and the verdict."""
    header = ["Pair", "Data", "Ordering", "Paper", "Ours ±", "Ratio", "Verdict"]  # short names: 80 columns
    body = [[o.pair, o.dataset, f"{LABELS[o.better]} > {LABELS[o.worse]}", f"+{o.published:.2f}", _gain(o.ours),
             f"{o.ratio:.2f}" if math.isfinite(o.ratio) else "–", o.verdict] for o in mini.orderings]
    return header, body


def notes(mini: Miniature) -> list[str]:
    found = [f"teacher minus {mini.spec.baseline.label} student, {pair} {dataset}: {gap:+.2f} dB"
             + (f" (published {published:+.2f} dB)"
                if (published := mini.published_teacher_gap.get((pair, dataset))) is not None else "")
             for (pair, dataset), gap in sorted(mini.teacher_gap.items())]
    return (mini.warnings + found
            + [f"to run or finish this miniature: {command}" for command in mini.missing])


def to_markdown(mini: Miniature) -> str:
    lines = [f"## {mini.spec.title}", "", mini.finding(), ""] + ([mini.source, ""] if mini.source else [])
    lines += [mini.spec.caption(), "", *markdown_table(*rows(mini))]
    if mini.orderings:
        lines += ["", orderings_caption(mini), "", *markdown_table(*ordering_rows(mini))]
    lines += [""] + [f"- Note: {note}" for note in notes(mini)]
    return "\n".join(lines) + "\n"
