"""Import rules between kdbench's layers: reports read records and never run networks; the statistics of reports,
paper tables and tuning live below all of them; evaluation does not reach up into the training engine."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    """Every kd module a file imports, at module level or inside a function (`from . import x` resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "kd" or name.startswith("kd.")}


def _reaches(imports: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(name for name in imports if any(name == f or name.startswith(f"{f}.") for f in forbidden))


def test_reports_import_neither_the_engine_nor_the_evaluation():
    for path in sorted((ROOT / "kd" / "report").glob("*.py")):
        assert not _reaches(_imports(path), ("kd.engine", "kd.evaluate", "kd.crops", "kd.api", "kd.cli")), path


def test_statistics_sit_below_reports_and_tuning():
    assert not _reaches(_imports(ROOT / "kd" / "stats.py"), ("kd",))
    assert not _reaches(_imports(ROOT / "kd" / "results" / "tune.py"), ("kd.report",))


def test_evaluation_does_not_import_the_engine():
    """kd.engine uses kd.evaluate (the final evaluation); the other way round would be a cycle."""
    assert not _reaches(_imports(ROOT / "kd" / "evaluate.py"), ("kd.engine",))
    for path in (ROOT / "kd" / "data").glob("*.py"):
        assert not _reaches(_imports(path), ("kd.engine", "kd.evaluate")), path


def test_building_a_report_loads_no_engine_and_no_evaluation(tmp_path):
    """In a fresh interpreter: render a report (table, figures, visual comparison from records) and a paper table."""
    import json

    for method, seed in [("none", 0), ("none", 1), ("logits", 0), ("logits", 1)]:
        run = tmp_path / "runs" / f"asid-{method}-s{seed}"
        run.mkdir(parents=True)
        teacher = {"arch": "rcan", "preset": "tiny", "source": "zoo", "key": "absent"} if method != "none" else None
        run.joinpath("summary.json").write_text(json.dumps({
            "run_id": run.name, "student": "asid", "student_preset": "tiny", "method": method, "scale": 4,
            "seed": seed, "profile": "smoke", "teacher": teacher, "dataset_images": {"default": 2},
            "datasets": {"default": {"psnr_y": 20.0 + seed + (method == "logits"), "ssim_y": 0.5}}}))
    code = ("import sys; from kd.report import build_report; from kd.report.paper import paper_table; "
            f"build_report({str(tmp_path / 'runs')!r}, {str(tmp_path / 'out')!r}, visual_images=1); "
            f"paper_table('dckd', runs_dir={str(tmp_path / 'runs')!r}); "
            "print(sorted(m for m in sys.modules if m.startswith(('kd.engine', 'kd.evaluate', 'kd.crops'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "out" / "figures" / "visual_spec.json").is_file()
