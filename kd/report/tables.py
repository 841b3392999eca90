"""The KD comparison table: per (profile, student, scale) x teacher x method x dataset, seed statistics."""

from __future__ import annotations

import math
from collections import defaultdict

import pandas as pd

from kd.errors import KdError
from kd.methods import get_method
from kd.report.runs import Run, RunSet
from kd.report.stats import MIN_SEEDS_TO_RANK, gap_recovered, mean_std, paired_delta

BASELINE = "none"
TEACHER_ROW = "(teacher)"
_METRIC_ALIASES = {"psnr": "psnr_y", "ssim": "ssim_y"}

COLUMNS = ["profile", "student", "scale", "teacher", "method", "dataset", "seeds", "psnr_mean", "psnr_std",
           "ssim_mean", "ssim_std", "lpips_mean", "lpips_std", "delta", "delta_std", "delta_low", "delta_high",
           "delta_n", "gap_recovered", "best", "params", "macs"]


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


def one_run_per_seed(runs: list[Run], warnings: list[str]) -> list[Run]:
    """One run per (method, teacher, seed). Two finished runs sharing all three differ in configuration (a `--set`,
    a tuning point); pairing or averaging either silently would be wrong. The one evaluated on the most datasets,
    then trained the most steps, is kept (a short validation-only run never displaces a full one), and the warning
    names the others."""
    def rank(run: Run) -> tuple:
        return (-len(run.summary["datasets"]), -int(run.summary.get("steps") or 0), run.run_id)

    kept: dict[tuple, Run] = {}
    for run in sorted(runs, key=rank):
        first = kept.setdefault((run.method, run.teacher, run.seed), run)
        if first is not run:
            warnings.append(f"runs {first.run_id} and {run.run_id} are both {run.method} seed {run.seed} of "
                            f"{run.student} from {run.teacher or 'no teacher'}, with different configurations; the "
                            f"table uses {first.run_id}. Keep variants in separate --runs folders.")
    return [run for run in runs if kept.get((run.method, run.teacher, run.seed)) is run]


def comparison_table(runset: RunSet) -> pd.DataFrame:
    lookup = score_lookup(runset.tidy)
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runset.runs:
        groups[run.group].append(run)
    rows = []
    for (profile, student, scale), runs in sorted(groups.items()):
        runs = one_run_per_seed(runs, runset.warnings)
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
                common = {"profile": profile, "student": student, "scale": scale, "teacher": teacher or "-",
                          "dataset": dataset}
                t_psnr, t_ssim = _teacher_scores(kd_runs, dataset)
                if teacher and math.isfinite(t_psnr):
                    rows.append({**common, "method": TEACHER_ROW, "seeds": 1, "psnr_mean": t_psnr,
                                 "ssim_mean": t_ssim, "gap_recovered": 1.0 if math.isfinite(base_mean) else math.nan})
                for method in [BASELINE, *methods] if baseline else methods:
                    chosen = baseline if method == BASELINE else [r for r in kd_runs if r.method == method]
                    psnr = seeds_of(chosen, "psnr_y")
                    row = {**common, "method": method, "seeds": len(psnr)}
                    for metric, key in (("psnr_y", "psnr"), ("ssim_y", "ssim"), ("lpips", "lpips")):
                        row[f"{key}_mean"], row[f"{key}_std"] = mean_std(list(seeds_of(chosen, metric).values()))
                    delta = paired_delta(psnr, base_psnr)
                    row.update(delta=delta.mean, delta_std=delta.std, delta_low=delta.low, delta_high=delta.high,
                               delta_n=delta.n, gap_recovered=gap_recovered(row["psnr_mean"], base_mean, t_psnr),
                               params=chosen[0].summary.get("params"), macs=chosen[0].summary.get("macs_1280x720"))
                    rows.append(row)
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["best"] = False
    for _, part in table[separates(table)].groupby(["profile", "student", "scale", "teacher", "dataset"]):
        table.loc[part["psnr_mean"].idxmax(), "best"] = True
    return table


def separates(table: pd.DataFrame) -> pd.Series:
    """KD rows whose paired 95% interval of Δ PSNR vs no-KD lies entirely above 0, from at least MIN_SEEDS_TO_RANK
    paired seeds. Only these can be marked best: a method whose interval includes 0, or that has fewer seeds, has not
    been shown to differ from no-KD."""
    kd_rows = ~table["method"].isin([BASELINE, TEACHER_ROW])
    return kd_rows & (table["delta_n"] >= MIN_SEEDS_TO_RANK) & (table["delta_low"] > 0) & table["psnr_mean"].notna()


def finding(table: pd.DataFrame) -> str:
    """The report's answer in one sentence: which methods beat the no-KD student beyond their 95% interval, and which
    fall below it beyond theirs."""
    kd = table[~table["method"].isin([BASELINE, TEACHER_ROW])]
    paired = kd[kd["delta"].notna()]
    if kd.empty:
        return "Only no-KD runs: there is no distillation method to compare yet."
    if paired.empty:
        return "No no-KD run pairs with the KD runs (same profile, student, scale and seed), so no Δ can be stated."
    seeds = int(paired["delta_n"].max())
    if seeds < MIN_SEEDS_TO_RANK:
        return (f"No method is ranked yet: {seeds} paired seed{'s' if seeds != 1 else ''} (the protocol needs "
                f"{MIN_SEEDS_TO_RANK} or more before calling a method better or worse than no-KD).")
    better = paired[separates(paired)]
    worse = paired[(paired["delta_n"] >= MIN_SEEDS_TO_RANK) & (paired["delta_high"] < 0)]
    if better.empty and worse.empty:
        return (f"No method separates from no-KD at {seeds} seeds (every paired 95% interval of Δ PSNR includes "
                "0).")
    if better.empty:
        return f"No method beats the no-KD student beyond the paired 95% interval at {seeds} seeds{_worse(worse)}."
    top = better.loc[(better["delta_low"]).idxmax()]
    digits = 3 if abs(top["delta"]) < 0.1 else 2
    return (f"{_better(better)}; the clearest is {top['method']} "
            f"from {top['teacher']} on {top['dataset']} x{top['scale']}: {top['delta']:+.{digits}f} dB "
            f"[{top['delta_low']:+.{digits}f}, {top['delta_high']:+.{digits}f}] at {int(top['delta_n'])} seeds"
            f"{_worse(worse)}.")


def _better(rows: pd.DataFrame) -> str:
    """The clause naming the methods above no-KD beyond their interval, grouped by the datasets where they are: a
    method above it on fewer datasets than the others is not listed as if it were above it on all of them."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for method in dict.fromkeys(rows.sort_values("delta", ascending=False)["method"]):
        datasets = tuple(sorted(set(rows.loc[rows["method"] == method, "dataset"])))
        groups.setdefault(datasets, []).append(method)
    (datasets, methods), *others = sorted(groups.items(), key=lambda group: -len(group[0]))
    text = (f"{_listed(methods)} beat{'s' if len(methods) == 1 else ''} the no-KD student beyond the paired 95% "
            f"interval on {', '.join(datasets)}")
    return text + "".join(f"; {_listed(methods)} on {', '.join(datasets)} only" for datasets, methods in others)


def _worse(rows: pd.DataFrame) -> str:
    """The clause naming the (method, teacher) pairs below no-KD beyond their interval, worst first."""
    if rows.empty:
        return ""
    ordered = rows.sort_values("delta")
    named = [method if teacher == "-" else f"{method} from {teacher}"
             for method, teacher in ordered[["method", "teacher"]].itertuples(index=False)]
    pairs = list(dict.fromkeys(named))
    datasets = sorted(set(rows["dataset"]))
    everywhere = len(set(zip(named, ordered["dataset"]))) == len(pairs) * len(datasets)
    return (f"; {_listed(pairs)} {'is' if len(pairs) == 1 else 'are'} worse than no-KD beyond the interval on "
            f"{'' if everywhere else 'at least one of '}{', '.join(datasets)}")


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
    """Groups with KD runs but no no-KD run: their deltas are n/a."""
    notes = []
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runset.runs:
        groups[run.group].append(run)
    for (profile, student, scale), runs in sorted(groups.items()):
        if not any(r.method == BASELINE for r in runs):
            notes.append(f"no no-KD run for {student} x{scale} ({profile} profile): deltas are n/a; add one with "
                         f"kdbench run --profile {profile} --method none --scale {scale}")
    return notes
