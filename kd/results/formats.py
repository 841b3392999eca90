"""Render and write the results: a paper-style table (terminal or LaTeX) and the tidy frame (CSV, Parquet).

Paper-style: one row per student x teacher x method x profile x scale, one `PSNR/SSIM` cell per dataset (2 and 4
decimals, the mean over seeds), LPIPS cells when it was measured. Files are written to a temporary file beside the
target and renamed, so an interrupted write never leaves a half-written result.
"""

from __future__ import annotations

import importlib.util
import io
import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from kd.errors import KdError
from kd.fileio import current_umask

GROUP_KEYS = ["student", "teacher", "method", "profile", "scale"]
FORMATS = ("table", "csv", "parquet", "latex")


@contextmanager
def _atomic_path(path: Path):
    """A temporary path beside `path`; renamed onto it when the block succeeds, removed when it fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~current_umask())
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    path = Path(path)
    try:
        with _atomic_path(path) as tmp:
            write(tmp)
    except OSError as exc:
        raise KdError(f"cannot write '{path}' ({exc.strerror or exc}); choose another --out.") from None


def paper_rows(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """(headers, rows of strings) of the paper-style table; a `name` column after the keys when a run is named
    (runs of different names are different rows)."""
    scored = df.dropna(subset=["metric"])
    if scored.empty:
        raise KdError("the selected runs have no evaluation results yet (unfinished runs without eval).")
    named = "name" in scored.columns and scored["name"].notna().any()
    keys = [*GROUP_KEYS, "name"] if named else GROUP_KEYS
    if named:
        scored = scored.assign(name=scored["name"].fillna("-"))
    datasets = list(dict.fromkeys(scored["dataset"]))
    has_lpips = (scored["metric"] == "lpips").any()
    means = scored.groupby([*keys, "dataset", "metric"], sort=False)["value"].mean()
    groups = scored.groupby(keys, sort=False).agg(seeds=("seed", "nunique"), params=("params", "first"))
    order = sorted(groups.index, key=lambda k: (k[0], k[4], k[3], k[1] != "none", k[1], k[2], k[5:]))

    headers = ["student", "teacher", "method", "profile", "scale", *(["name"] if named else []), "seeds", "params"]
    headers += [f"{d} PSNR/SSIM" for d in datasets]
    headers += [f"{d} LPIPS" for d in datasets] if has_lpips else []
    rows = []
    for key in order:
        student, teacher, method, profile, scale = key[:5]
        params = groups.loc[key, "params"]
        cells = [student, teacher, method, str(profile), f"x{scale}", *key[5:], str(groups.loc[key, "seeds"]),
                 "-" if pd.isna(params) else f"{int(params):,}"]
        for dataset in datasets:
            psnr, ssim = means.get((*key, dataset, "psnr_y")), means.get((*key, dataset, "ssim_y"))
            cells.append(f"{'-' if psnr is None else f'{psnr:.2f}'}/{'-' if ssim is None else f'{ssim:.4f}'}")
        if has_lpips:
            for dataset in datasets:
                value = means.get((*key, dataset, "lpips"))
                cells.append("-" if value is None else f"{value:.4f}")
        rows.append(cells)
    return headers, rows


def text_table(df: pd.DataFrame, title: str = "kdbench results"):
    """The paper-style table for `kd.output.print_table`; student, teacher, method, profile and scale identify
    a row (repeated when the table folds)."""
    from kd.output import TextTable

    headers, rows = paper_rows(df)
    table = TextTable(title=title, key=5)
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i < 4 else "right")
    for row in rows:
        table.add_row(*row)
    return table


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)


def latex_table(df: pd.DataFrame) -> str:
    """A booktabs `tabular` of the paper-style table (needs `\\usepackage{booktabs}`)."""
    headers, rows = paper_rows(df)
    spec = "l" * 4 + "r" * (len(headers) - 4)
    lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(_latex_escape(h) for h in headers) + r" \\", r"\midrule"]
    lines += [" & ".join(_latex_escape(c) for c in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def check_parquet_support() -> None:
    if importlib.util.find_spec("pyarrow") is None and importlib.util.find_spec("fastparquet") is None:
        raise KdError("--format parquet needs the pyarrow package, which is not installed; install it "
                      "(pip install pyarrow) or use --format csv.")


def write_results(df: pd.DataFrame, fmt: str, path: str | Path) -> None:
    """Write `df` (tidy, for csv/parquet) or its paper-style table (latex, table) to `path` atomically."""
    if fmt == "csv":
        write_atomic(path, lambda tmp: df.to_csv(tmp, index=False))
    elif fmt == "parquet":
        check_parquet_support()
        write_atomic(path, lambda tmp: df.to_parquet(tmp, index=False))
    elif fmt == "latex":
        text = latex_table(df)
        write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    elif fmt == "table":
        from rich.console import Console

        from kd.output import print_table

        buffer = io.StringIO()
        print_table(text_table(df), Console(file=buffer, width=200))
        text = buffer.getvalue()
        write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    else:
        raise KdError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}.")
