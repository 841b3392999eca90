"""DCKD (AAAI 2025) Table 2 in miniature: the same two pair shapes at the cpu budget, our gains beside the published.

The published table trains RCAN 10x6 from RCAN 10x20 and SwinIR embed-60 from SwinIR embed-180 for days on GPUs.
The miniature keeps each pair's shape (the CNN student has a quarter of its teacher's blocks, the transformer
student a third of its teacher's width; presets `mini_student` beside the `mini` teachers), trains every method at
the cpu profile with seeds 0, 1, 2 and compares *gains over scratch*, paired by seed, with the published gains
(method − scratch, same table). Absolute PSNRs of a 1000-step run are not comparable with published ones; the
question a miniature can answer is which published orderings of methods survive at this scale.

    mini = build_miniature(scan_runs("runs/miniature"))  # what `kdbench paper dckd` reads by default
    print(to_markdown(mini))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations

from kd.report.runs import Run, RunSet
from kd.report.stats import PairedDelta, mean_std, paired_delta

PROFILE, SCALE, SEEDS = "cpu", 4, (0, 1, 2)
DATASETS = ("Set5", "Set14", "B100")  # Urban100 is not among the cpu profile's test sets
METHODS = ("logits", "fakd", "mipkd", "dckd", "dukd")  # scratch (none) is the baseline of every gain
LABELS = {"logits": "Logits", "fakd": "FAKD", "mipkd": "MiPKD", "dckd": "DCKD", "dukd": "DUKD"}
SOURCE = "DCKD (Zhou et al., AAAI 2025)"
RUNS_DIR = "runs/miniature"  # apart from the ASID grid, whose report would otherwise show these students too
MIN_TEACHER_GAP = 0.3  # dB over the scratch student: below it, a pair cannot show distillation gains
MIN_PUBLISHED_SPLIT = 0.05  # dB: published gains closer than this are not treated as an ordering


TITLE = "DCKD (AAAI 2025) Table 2 in miniature: gains over scratch, x4, cpu profile"
CAPTION = ("Gains in dB (method − scratch PSNR-Y). Ours: mean of paired per-seed gains ± the half-width of their "
           "95 % t-interval, seeds 0, 1, 2. Pairs: RCAN mini (3 groups x 4 blocks) → 3 x 1, SwinIR mini (embed "
           "48) → embed 16, trained on 291-train; DUKD has no published row in this table (DCKD* is DCKD + DUKD).")


@dataclass(frozen=True)
class MiniaturePair:
    name: str
    published_student: str  # the model name in published_results.csv
    student: tuple[str, str]  # (architecture, preset)
    teacher: tuple[str, str]

    def sweep_command(self, methods: tuple[str, ...] = METHODS) -> str:
        return (f"kdbench sweep --profile {PROFILE} --students {self.student[0]} --set student.preset="
                f"{self.student[1]} --teachers {self.teacher[0]} --methods none,{','.join(methods)} "
                f"--seeds {','.join(map(str, SEEDS))} --out-dir {RUNS_DIR} --executor local --max-parallel 2 "
                "--threads 1")


PAIRS = (
    MiniaturePair("RCAN", "rcan_10x6", ("rcan", "mini_student"), ("rcan", "mini")),
    MiniaturePair("SwinIR", "swinir_e60", ("swinir", "mini_student"), ("swinir", "mini")),
)


@dataclass(frozen=True)
class Ordering:
    """A published ordering `better` > `worse` of two methods' gains, and what our paired seeds say of it."""

    pair: str
    dataset: str
    better: str
    worse: str
    published: float  # published gain(better) - gain(worse), dB
    ours: PairedDelta  # our paired difference better - worse

    @property
    def verdict(self) -> str:
        if not self.ours.has_interval:
            return "too few seeds"
        if self.ours.low > 0:
            return "holds"
        if self.ours.high < 0:
            return "reversed"
        return "unresolved"


@dataclass
class Miniature:
    published: dict[tuple[str, str, str], float]  # (pair, method, dataset) -> published gain over scratch
    ours: dict[tuple[str, str, str], PairedDelta]  # the same key -> our paired gain
    teacher_gap: dict[tuple[str, str], float]  # (pair, dataset) -> our teacher - mean scratch PSNR
    orderings: list[Ordering] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # sweep commands that would fill empty cells
    methods: tuple[str, ...] = METHODS
    pairs: tuple[MiniaturePair, ...] = PAIRS

    @property
    def has_runs(self) -> bool:
        return any(d.n for d in self.ours.values())

    def finding(self) -> str:
        """One sentence: how many published orderings our seeds reproduce."""
        if not self.has_runs:
            return "The miniature has not been run yet: no finished cpu-profile run of its pairs was found."
        counts = {v: sum(o.verdict == v for o in self.orderings) for v in ("holds", "reversed", "unresolved")}
        short = [p for (p, d), gap in self.teacher_gap.items() if d == "Set5" and gap < MIN_TEACHER_GAP]
        caveat = (f" (the {', '.join(short)} teacher is under {MIN_TEACHER_GAP} dB above its scratch student on "
                  "Set5, so that pair's gains say little)") if short else ""
        return (f"Of {len(self.orderings)} published orderings of methods (pairs x datasets), {counts['holds']} "
                f"hold in the miniature with a paired 95 % interval excluding 0, {counts['reversed']} are reversed "
                f"and {counts['unresolved']} are unresolved at {len(SEEDS)} seeds{caveat}.")


def _published_gains(pairs: tuple[MiniaturePair, ...], methods: tuple[str, ...]) -> dict[tuple[str, str, str], float]:
    from kd.reference_data import published_results

    table = published_results()
    table = table[(table["source"] == SOURCE) & (table["scale"] == SCALE) & (table["role"] == "student")]
    gains = {}
    for pair in pairs:
        rows = table[table["model"] == pair.published_student]
        for dataset in DATASETS:
            at = rows[rows["dataset_key"] == dataset].set_index("method")["psnr"]
            if "none" not in at:
                continue
            for method in methods:
                if method in at:
                    gains[(pair.name, method, dataset)] = float(at[method] - at["none"])
    return gains


def _is_student(run: Run, pair: MiniaturePair) -> bool:
    s = run.summary
    return (run.profile == PROFILE and run.scale == SCALE and s["student"] == pair.student[0]
            and s.get("student_preset") == pair.student[1])


def _from_teacher(run: Run, pair: MiniaturePair) -> bool:
    info = run.teacher_info
    return info.get("arch") == pair.teacher[0] and info.get("preset") == pair.teacher[1]


def _by_seed(runs: list[Run], dataset: str) -> dict[int, float]:
    return {run.seed: run.score(dataset, "psnr_y") for run in runs}


def build_miniature(runset: RunSet | None, methods: tuple[str, ...] = METHODS,
                    pairs: tuple[MiniaturePair, ...] = PAIRS) -> Miniature:
    """Our paired gains and the published ones for every pair, method and dataset; orderings compared."""
    published = _published_gains(pairs, methods)
    mini = Miniature(published, {}, {}, methods=methods, pairs=pairs)
    runs = runset.runs if runset is not None else []
    for pair in pairs:
        students = [run for run in runs if _is_student(run, pair)]
        scratch = [run for run in students if run.method == "none"]
        by_method = {m: [run for run in students if run.method == m and _from_teacher(run, pair)] for m in methods}
        if len(scratch) < len(SEEDS) or any(len(found) < len(SEEDS) for found in by_method.values()):
            mini.missing.append(pair.sweep_command(methods))
        for dataset in DATASETS:
            base = _by_seed(scratch, dataset)
            scores = {m: _by_seed(found, dataset) for m, found in by_method.items()}
            for method in methods:
                mini.ours[(pair.name, method, dataset)] = paired_delta(scores[method], base)
            teacher = next((score for found in by_method.values() for run in found
                            if (score := ((run.teacher_info.get("eval") or {}).get(dataset) or {}).get("psnr_y"))
                            is not None), None)
            scratch_mean, _ = mean_std(list(base.values()))
            if teacher is not None and math.isfinite(scratch_mean):
                mini.teacher_gap[(pair.name, dataset)] = float(teacher) - scratch_mean
            mini.orderings += _orderings(pair.name, dataset, published, scores)
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
    for pair in mini.pairs:
        for method in mini.methods:
            line = [pair.name, LABELS.get(method, method)]
            for dataset in DATASETS:
                published = mini.published.get((pair.name, method, dataset))
                line += ["–" if published is None else f"{published:+.2f}",
                         _gain(mini.ours.get((pair.name, method, dataset)))]
            body.append(line)
    return header, body


def ordering_lines(mini: Miniature) -> list[str]:
    return [f"{o.pair} {o.dataset}: {LABELS[o.better]} > {LABELS[o.worse]} (published +{o.published:.2f} dB; "
            f"ours {o.ours.mean:+.3f} [{o.ours.low:+.3f}, {o.ours.high:+.3f}]): {o.verdict}"
            for o in mini.orderings]


def notes(mini: Miniature) -> list[str]:
    found = [f"teacher minus scratch student, {pair} {dataset}: {gap:+.2f} dB"
             for (pair, dataset), gap in sorted(mini.teacher_gap.items())]
    return found + [f"to run or finish this miniature: {command}" for command in mini.missing]


def to_markdown(mini: Miniature) -> str:
    header, body = rows(mini)
    lines = [f"## {TITLE}", "", mini.finding(), "", CAPTION, "",
             "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    if mini.orderings:
        lines += ["", "Published orderings (gain of the first method above the second), checked with paired seeds:",
                  ""] + [f"- {line}" for line in ordering_lines(mini)]
    lines += [""] + [f"Note: {note}" for note in notes(mini)]
    return "\n".join(lines) + "\n"
