"""`kdbench --help` stays fast: building the parser imports no heavy library (timing is checked by
benchmarks/bench_cli_startup.py; this is the deterministic part)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kd import __version__
from kd.cli import main

HEAVY = ("torch", "pandas", "scipy", "matplotlib", "numpy", "timm", "lpips", "skimage")


def test_building_the_parser_imports_no_heavy_library():
    code = ("import sys, kd.cli; kd.cli.build_parser(); "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"building the parser imported {loaded}"


def test_names_spelled_out_for_the_parser_match_their_source():
    from kd.cli.paper_cmd import TABLE_NAMES
    from kd.cli.results_cmd import FORMATS
    from kd.report.paper import PAPER_TABLES
    from kd.results import formats

    assert TABLE_NAMES == tuple(PAPER_TABLES)
    assert FORMATS == formats.FORMATS


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"kdbench {__version__}"


def test_report_help_shows_a_single_percent_sign(capsys):
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    out = capsys.readouterr().out
    assert "familywise 5%" in " ".join(out.split()) and "%%" not in out
