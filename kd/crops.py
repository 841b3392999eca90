"""The visual comparison's crops computed from weights, written into a report's records.

`kd.report` never runs a network: it draws the visual comparison from the crops in its records. This module is
the step before it (`kdbench report` and `kd.build_report` pass `record_crops` to `kd.report.build_report`): each
run of the figure's configuration whose `student.pt` is here gets its crops recorded, and the shown KD runs get
their teacher's, from the teacher zoo or the run's `--teacher-ckpt`.
"""

from __future__ import annotations

from pathlib import Path

from kd.fileio import sha256_file
from kd.report import CROPS
from kd.report.runs import Run
from kd.report.visual import TEACHER_PREFIX, VisualPlan, has_weights, sr_crop


def _build(arch: str, scale: int, preset: str | None, weights: Path):
    from kd.models import create, load_official

    model = create(arch, scale, preset)
    load_official(model, weights)
    return model


def teacher_weights(run: Run) -> Path | None:
    info = run.teacher_info
    if info.get("source") == "checkpoint" and info.get("path"):
        return Path(info["path"])
    if info.get("source") == "zoo" and info.get("key"):
        from kd.engine.teachers import zoo_root

        return zoo_root() / info["key"] / "teacher.pt"
    return None


def _write(model, plan: VisualPlan, folder: Path, prefix: str = "") -> None:
    from kd.data.io import write_png

    for view in plan.views:
        write_png(folder / (prefix + view.crop_file),
                  sr_crop(model, view.pair.lr, plan.scale, view.crop, view.pair.hr))


def record_crops(plan: VisualPlan, records_dir: Path) -> list[str]:
    """Write the crops of `plan` that weights here can give into `records_dir/<run id>/visual_crops/`; returns notes
    on the weights that failed to load or run."""
    notes = []
    for run in sorted(plan.group, key=lambda r: r.run_id):
        if not has_weights(run):
            continue
        try:
            model = _build(run.summary["student"], plan.scale, run.summary.get("student_preset"),
                           run.run_dir / "student.pt")
            _write(model, plan, run.record_dir(records_dir) / CROPS)
        except Exception as exc:  # one damaged file must not lose the figure
            notes.append(f"visual comparison: the crops of run {run.run_id} could not be computed ({exc})")
    if not plan.teacher or not plan.teacher_runs:
        return notes
    source = plan.teacher_runs[0]
    weights = teacher_weights(source)
    if weights is None or not weights.is_file():
        return notes  # the report says the teacher is not shown unless an earlier report recorded its crops
    recorded = source.teacher_info.get("sha256")
    if recorded and sha256_file(weights) != recorded:
        return [*notes, f"visual comparison: the teacher {plan.teacher}'s crops were not computed: {weights} is "
                        "not the file its runs were distilled from (another sha256)"]
    try:
        info = source.teacher_info
        model = _build(info["arch"], plan.scale, info.get("preset"), weights)
        for run in plan.teacher_runs:
            _write(model, plan, run.record_dir(records_dir) / CROPS, TEACHER_PREFIX)
    except Exception as exc:
        notes.append(f"visual comparison: the teacher {plan.teacher}'s crops could not be computed ({exc})")
    return notes
