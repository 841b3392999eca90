"""The committed records keep their run ids: a fresh clone finds every finished cell of a committed grid.

A run id hashes the resolved configuration and the run's inputs (`kd.config.run_id`). A change that alters what
an existing configuration hashes to (a new config field that enters the hash with its default, a renamed key)
would make every committed record look unfinished to `kdbench sweep --records` and unpaired to nothing. This test
recomputes the id of every record under `reports/*/records` from its own `config.yaml` and recorded `inputs`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kd.config import from_dict, run_id

REPORTS = Path(__file__).resolve().parents[1] / "reports"
RECORDS = sorted(p for p in REPORTS.glob("*/records/*") if (p / "summary.json").is_file())


def test_there_are_committed_records() -> None:
    assert len(RECORDS) >= 36, "the committed reports hold at least the DCKD miniature's 36 records"


@pytest.mark.parametrize("record", RECORDS, ids=lambda p: p.name)
def test_record_id_is_recomputed_from_its_config(record: Path) -> None:
    summary = json.loads((record / "summary.json").read_text(encoding="utf-8"))
    config = from_dict(yaml.safe_load((record / "config.yaml").read_text(encoding="utf-8")), str(record))
    assert run_id(config, summary["inputs"]) == summary["run_id"] == record.name


@pytest.mark.parametrize("record", [r for r in RECORDS if "-none-" not in r.name], ids=lambda p: p.name)
def test_record_teacher_key_is_recomputed_from_its_config(record: Path) -> None:
    # The zoo key names the teacher a fresh clone imports from reports/teachers; a change to what it hashes (a new
    # teacher.train field) would make every committed KD record point at a teacher no command finds.
    from kd.engine.teachers import zoo_key

    summary = json.loads((record / "summary.json").read_text(encoding="utf-8"))
    teacher = summary["inputs"]["teacher"]
    if teacher is None or teacher.get("source") != "zoo":
        pytest.skip("teacher not from the zoo")
    config = from_dict(yaml.safe_load((record / "config.yaml").read_text(encoding="utf-8")), str(record))
    assert zoo_key(config) == teacher["key"]
