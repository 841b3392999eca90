"""The KD comparison table: per configuration x teacher x method x dataset, seed statistics, and the one-sentence
finding the report opens with.

A configuration is everything a comparison holds fixed (data, profile, budget, scale, student and recipe, see
`Run.setting`): a KD run is compared only with the no-KD run of its own configuration and seed. Every KD-vs-no-KD
PSNR comparison of the report with enough paired seeds is one of a family, corrected with Holm–Bonferroni
(`kd.stats.holm`): a method is called better or worse than no-KD only when Holm rejects "no difference".
"""

from __future__ import annotations

import math
from collections import defaultdict

import pandas as pd

from kd.errors import KdError
from kd.methods import get_method
from kd.report.runs import Run, RunSet, differences
from kd.stats import (CONFIDENCE, FAMILYWISE_ALPHA, MIN_SEEDS_TO_RANK, gap_recovered, holm, mean_std,
                      paired_delta)

BASELINE = "none"
TEACHER_ROW = "(teacher)"
_METRIC_ALIASES = {"psnr": "psnr_y", "ssim": "ssim_y"}

COLUMNS = ["configuration", "profile", "student", "scale", "teacher", "method", "dataset", "seeds", "psnr_mean",
           "psnr_std", "ssim_mean", "ssim_std", "lpips_mean", "lpips_std", "delta", "delta_std", "delta_low",
           "delta_high", "delta_n", "delta_level", "delta_p_holm", "family", "claimed", "lpips_delta", "lpips_low",
           "lpips_high", "gap_recovered", "best", "params", "macs"]


def score_lookup(tidy: pd.DataFrame) -> dict[tuple[str, str, str], float]:
    """(run_id, dataset, metric) -> value from the tidy frame."""
    metrics = tidy["metric"].map(lambda m: _METRIC_ALIASES.get(m, m))
    return {(r, d, m): float(v) if v is not None else math.nan
            for r, d, m, v in zip(tidy["run_id"], tidy["dataset"], metrics, tidy["value"])}


def _teacher_scores(runs: list[Run], dataset: str) -> tuple[float, float]:
    for run in runs:
        scores = (run.teacher_info.get("eval") or {}).get(dataset)
        if scores and scores.get("psnr_y") is not None:
            return float(scores["psnr_y"]), float(scores.get("ssim_y") or math.nan)
    return math.nan, math.nan


def configurations(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs by configuration, in the order of their first run."""
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.configuration].append(run)
    return dict(groups)


def _value(run: Run, key: str) -> str:
    text = run.setting.get(key, "null")
    return text.strip('"') if text.startswith('"') else text


def configuration_names(groups: dict[str, list[Run]]) -> dict[str, str]:
    """A heading per configuration in the reader's terms: student, scale, profile, budget and training data; where
    two configurations read the same, the keys that tell them apart are added."""
    plain = {}
    for key, runs in groups.items():
        run = runs[0]
        steps = _value(run, "train.steps")
        data, degradation = _value(run, "data.train"), _value(run, "data.degradation")
        plain[key] = (f"{run.student} x{run.scale}, {run.profile} profile, {steps} steps"
                      + (f" on {data}" if data != "null" else "")
                      + (f", blind SR: {degradation}" if degradation not in ("null", "bicubic") else ""))
    names = {}
    for key, text in plain.items():
        twins = [other for other, other_text in plain.items() if other_text == text]
        if len(twins) > 1:
            keys = differences([groups[other][0] for other in twins])
            text += " (" + ", ".join(f"{k}={_value(groups[key][0], k)}" for k in keys) + ")"
        names[key] = text
    return names


def one_run_per_seed(runs: list[Run], warnings: list[str]) -> list[Run]:
    """One run per (method, teacher, seed) of one configuration. Two finished runs sharing all four differ in the
    method's weights or options or in the teacher's weights (a tuning point); pairing or averaging either silently
    would be wrong. The one evaluated on the most datasets, then trained the most steps, is kept (a short
    validation-only run never displaces a full one), and the warning names the other and how they differ."""
    def rank(run: Run) -> tuple:
        return (-len(run.summary["datasets"]), -int(run.summary.get("steps") or 0), run.run_id)

    kept: dict[tuple, Run] = {}
    for run in sorted(runs, key=rank):
        first = kept.setdefault((run.method, run.teacher, run.seed), run)
        if first is not run:
            keys = differences([first, run], varied=True) or ["their inputs (teacher weights or data files)"]
            warnings.append(f"two {run.method} runs of seed {run.seed} from {run.teacher or 'no teacher'} in one "
                            f"configuration differ in {', '.join(keys)}: the table uses {first.run_id} and leaves "
                            f"out {run.run_id}; report such variants from separate --runs folders.")
    return [run for run in runs if kept.get((run.method, run.teacher, run.seed)) is run]


def comparison_table(runset: RunSet) -> pd.DataFrame:
    lookup = score_lookup(runset.tidy)
    groups = configurations(runset.runs)
    names = configuration_names(groups)
    rows = []
    for key, runs in groups.items():
        runs = one_run_per_seed(runs, runset.notes)
        datasets = list(dict.fromkeys(d for run in runs for d in run.summary["datasets"]))
        baseline = [r for r in runs if r.method == BASELINE]
        teachers = sorted({r.teacher for r in runs if r.method != BASELINE and r.teacher}) or [None]
        for teacher in teachers:
            kd_runs = [r for r in runs if r.method != BASELINE and r.teacher == teacher]
            methods = sorted({r.method for r in kd_runs})
            for dataset in datasets:
                def seeds_of(selected: list[Run], metric: str) -> dict[int, float]:
                    return {r.seed: lookup.get((r.run_id, dataset, metric), math.nan) for r in selected}

                base_psnr = seeds_of(baseline, "psnr_y")
                base_mean = mean_std(list(base_psnr.values()))[0]
                first = runs[0]
                common = {"configuration": names[key], "profile": first.profile, "student": first.student,
                          "scale": first.scale, "teacher": teacher or "-", "dataset": dataset}
                t_psnr, t_ssim = _teacher_scores(kd_runs, dataset)
                if teacher and math.isfinite(t_psnr):
                    rows.append({**common, "method": TEACHER_ROW, "seeds": 1, "psnr_mean": t_psnr,
                                 "ssim_mean": t_ssim, "gap_recovered": 1.0 if math.isfinite(base_mean) else math.nan})
                for method in [BASELINE, *methods] if baseline else methods:
                    chosen = baseline if method == BASELINE else [r for r in kd_runs if r.method == method]
                    psnr = seeds_of(chosen, "psnr_y")
                    row = {**common, "method": method, "seeds": len(psnr)}
                    for metric, name in (("psnr_y", "psnr"), ("ssim_y", "ssim"), ("lpips", "lpips")):
                        row[f"{name}_mean"], row[f"{name}_std"] = mean_std(list(seeds_of(chosen, metric).values()))
                    if method != BASELINE:
                        delta = paired_delta(psnr, base_psnr)
                        lpips = paired_delta(seeds_of(chosen, "lpips"), seeds_of(baseline, "lpips"))
                        row.update(delta=delta, lpips_delta=lpips.mean, lpips_low=lpips.low, lpips_high=lpips.high)
                    row.update(gap_recovered=gap_recovered(row["psnr_mean"], base_mean, t_psnr),
                               params=chosen[0].summary.get("params"), macs=chosen[0].summary.get("macs_1280x720"))
                    rows.append(row)
    _judge(rows)
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["claimed"] = table["claimed"].fillna(False).astype(bool)
    table["best"] = False
    for _, part in table[separates(table)].groupby(["configuration", "teacher", "dataset"], sort=False):
        table.loc[part["psnr_mean"].idxmax(), "best"] = True
    return table


def _judge(rows: list[dict]) -> None:
    """Holm–Bonferroni over every KD-vs-no-KD comparison of the report; each row gets its interval at the level
    Holm tested it at (kd.stats.holm), the adjusted p-value and the family size."""
    compared = [row for row in rows if "delta" in row]
    for row, judged in zip(compared, holm([row["delta"] for row in compared])):
        delta = judged.delta
        row.update(delta=delta.mean, delta_std=delta.std, delta_low=delta.low, delta_high=delta.high,
                   delta_n=delta.n, delta_level=delta.confidence, delta_p_holm=judged.p_holm, family=judged.family,
                   claimed=judged.claimed)


def separates(table: pd.DataFrame) -> pd.Series:
    """KD rows that Holm–Bonferroni shows above no-KD (their interval at Holm's level lies above 0). Only these can
    be marked best: a method whose interval includes 0, or that has fewer seeds, has not been shown to differ."""
    kd_rows = ~table["method"].isin([BASELINE, TEACHER_ROW])
    return kd_rows & table["claimed"].fillna(False).astype(bool) & (table["delta"] > 0) & table["psnr_mean"].notna()


def _level(row) -> str:
    return f"{100 * row['delta_level']:.4g} %"


def finding(table: pd.DataFrame) -> str:
    """The report's answer: which (method, teacher) pairs beat the no-KD student after Holm–Bonferroni over the
    report's comparisons, on which datasets; which PSNR gains come with a worse LPIPS; which fall below no-KD."""
    kd = table[~table["method"].isin([BASELINE, TEACHER_ROW])]
    paired = kd[kd["delta"].notna()]
    if kd.empty:
        return "Only no-KD runs: there is no distillation method to compare yet."
    if paired.empty:
        return ("No no-KD run pairs with the KD runs (same configuration and seed), so no Δ can be stated.")
    family = int(paired["family"].max())
    if family == 0:
        seeds = int(paired["delta_n"].max())
        return (f"No method is ranked yet: {seeds} paired seed{'s' if seeds != 1 else ''} (the protocol needs "
                f"{MIN_SEEDS_TO_RANK} or more before calling a method better or worse than no-KD).")
    claimed = paired[paired["claimed"].astype(bool)]
    better, worse = claimed[claimed["delta"] > 0], claimed[claimed["delta"] < 0]
    several = _ambiguous(table)
    holm_words = (f"Holm–Bonferroni over the report's {family} comparisons of Δ PSNR with {MIN_SEEDS_TO_RANK}+ "
                  f"paired seeds (familywise {100 * FAMILYWISE_ALPHA:g} %)")
    if better.empty and worse.empty:
        return f"No method separates from the no-KD student after {holm_words}."
    sentences = [f"After {holm_words}, "
                 + (f"better than the no-KD student: {_by_datasets(better, several, table)}" if not better.empty
                    else "no method is better than the no-KD student")]
    if not better.empty:
        top = better.loc[better["delta_low"].idxmax()]
        digits = 3 if abs(top["delta"]) < 0.1 else 2
        sentences.append(f"Clearest: {_name(top, several)} on {top['dataset']} x{top['scale']}, "
                         f"{top['delta']:+.{digits}f} dB [{top['delta_low']:+.{digits}f}, "
                         f"{top['delta_high']:+.{digits}f}] ({_level(top)} interval, Holm's level) at "
                         f"{int(top['delta_n'])} seeds")
        lpips_worse = better[better["lpips_low"] > 0]
        if not lpips_worse.empty:
            sentences.append(f"PSNR gains with a worse LPIPS (higher; paired {100 * CONFIDENCE:g} % interval above "
                             f"0): {_by_datasets(lpips_worse, several, table)}")
    if not worse.empty:
        sentences.append(f"Worse than no-KD: {_by_datasets(worse, several, table)}")
    return ". ".join(sentences) + "."


def _ambiguous(table: pd.DataFrame) -> bool:
    """Whether one (method, teacher) appears in several configurations: then a name must carry its configuration."""
    kd = table[~table["method"].isin([BASELINE, TEACHER_ROW])]
    return bool((kd.groupby(["method", "teacher"])["configuration"].nunique() > 1).any())


def _name(row, several: bool) -> str:
    name = row["method"] if row["teacher"] == "-" else f"{row['method']} from {row['teacher']}"
    return f"{name} ({row['configuration']})" if several else name


def _by_datasets(rows: pd.DataFrame, several: bool, table: pd.DataFrame) -> str:
    """"a and b on Set5, Set14 and B100; c on Set5": each (method, teacher) named with exactly the datasets where
    it holds, those sharing the same datasets together, the largest mean Δ first."""
    order = list(dict.fromkeys(table["dataset"]))
    where: dict[str, list[str]] = {}
    for _, row in rows.sort_values("delta", key=abs, ascending=False).iterrows():
        where.setdefault(_name(row, several), []).append(row["dataset"])
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, datasets in where.items():
        groups.setdefault(tuple(sorted(set(datasets), key=order.index)), []).append(name)
    ranked = sorted(groups.items(), key=lambda group: -len(group[0]))
    return "; ".join(f"{_listed(names)} on {_listed(list(datasets))}" for datasets, names in ranked)


def _listed(names: list[str]) -> str:
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]


def reconstructed_methods(table: pd.DataFrame) -> list[str]:
    """The `Distiller.reconstructed` labels of the table's methods; a method no longer installed is left out."""
    labels = set()
    for name in set(table["method"]) - {BASELINE, TEACHER_ROW}:
        try:
            labels.add(get_method(name).reconstructed)
        except KdError:  # recorded by a plugin that is not installed here: nothing known about it
            continue
    return sorted(labels - {""})


def mixed_teacher_dtypes(runset: RunSet) -> list[str]:
    """Runs of one teacher whose frozen teacher ran in different precisions: `accel.teacher_dtype=auto` means bf16 on
    a machine that computes it natively and fp32 elsewhere, so a grid made on two kinds of machine mixes them."""
    dtypes: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for run in runset.runs:
        if run.teacher and run.teacher_info.get("dtype"):
            dtypes[run.teacher][str(run.teacher_info["dtype"])].append(f"{run.method} s{run.seed}")
    notes = []
    for teacher, by_dtype in sorted(dtypes.items()):
        if len(by_dtype) > 1:
            parts = "; ".join(f"{dtype}: {', '.join(sorted(runs))}" for dtype, runs in sorted(by_dtype.items()))
            notes.append(f"teacher {teacher} ran in different precisions ({parts}): the runs were made on different "
                         "machines with accel.teacher_dtype=auto; pass --set accel.teacher_dtype=fp32 (or bf16) to "
                         "make a grid the same everywhere")
    return notes


def missing_baselines(runset: RunSet) -> list[str]:
    """Configurations with KD runs but no no-KD run: their Δ is n/a. Where the report holds no-KD runs of other
    configurations, the note says how they differ (they are never paired across configurations)."""
    groups = configurations(runset.runs)
    names = configuration_names(groups)
    baselines = [runs[0] for runs in groups.values() if any(r.method == BASELINE for r in runs)]
    notes = []
    for key, runs in groups.items():
        if any(r.method == BASELINE for r in runs):
            continue
        run = runs[0]
        note = (f"no no-KD run of {names[key]}: its Δ is n/a; add one with the same command and --method none "
                f"(kdbench run --profile {run.profile} --scale {run.scale} --method none ...)")
        if baselines:
            keys = differences([run, *baselines])
            note += (f"; the no-KD runs in this report are of other configurations (they differ in "
                     f"{', '.join(keys) or 'their inputs'}) and are not paired with it")
        notes.append(note)
    return notes
