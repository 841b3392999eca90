"""Reference tables shipped with kdbench (copies of `shared/reference/*.csv`), so the product never needs `../shared`.

* `bicubic_reference()`: the golden bicubic PSNR/SSIM (Y, crop = scale) on the shared Set5 / Set14 / BSD100.
* `published_results()`: numbers quoted from papers (RCAN, SwinIR, ... tables), one row per model, dataset, scale;
  `published_results(with_seed=True)` adds the seed file's rows that fit those columns (FAKD Table 3's SAN columns).
* `published_results_seed()`: the published numbers of the seed networks (FAKD's SAN, SwinFIR, IKM, KDSR on
  Gaussian8 blur, NCNet), one row per model, dataset, scale, in that file's own columns.
* `published_results_lightweight()`: in the seed file's columns, the x4 numbers of the lightweight networks that
  the seed file lacks (A2N, HPINet S/M/L), transcribed from SEED_NETWORKS.md with its evidence notes (UNVERIFIED,
  read from a figure) in `source`; where it found none (NCNet, HSRNet, some datasets of A2N and HPINet) a row
  without a value whose `source` says so. It has no copy in `shared/reference`.

The two files name the same dataset differently (`BSD100` vs the papers' `B100`). Both loaders keep the original
spelling in `dataset` and add `dataset_key`, a canonical name to join on (`canonical_dataset`).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import pandas as pd

# Spellings of one benchmark set -> kdbench's canonical name (kd.data.registry: B100, alias BSD100).
_DATASET_ALIASES = {"b100": "B100", "bsd100": "B100", "set5": "Set5", "set14": "Set14",
                    "urban100": "Urban100", "manga109": "Manga109"}


def canonical_dataset(name: str) -> str:
    return _DATASET_ALIASES.get(name.lower(), name)


@cache
def _read(filename: str) -> pd.DataFrame:
    with resources.files(__name__).joinpath(filename).open("r", encoding="utf-8") as handle:
        table = pd.read_csv(handle)
    table["dataset_key"] = table["dataset"].map(canonical_dataset)
    return table


def bicubic_reference() -> pd.DataFrame:
    """Columns dataset, scale, images, psnr_y, ssim_y (+ dataset_key)."""
    return _read("bicubic_reference.csv").copy()


# published_results_seed.csv rows that belong in published_results()'s columns: (paper, its `method` label) -> (model,
# role, kdbench method). FAKD Table 3's SAN columns were produced by FAKD's own copy of SAN (its repository trains
# them with `code/models/san.py`; SEED_NETWORKS.md section 1): arch `san_fakd`, the model names of
# kd.report.paper.MODEL_MAP.
_SEED_AS_RESULTS = {
    ("FAKD (He et al., ICIP 2020)", "teacher (TN)"): ("san_fakd", "teacher", "none"),
    ("FAKD (He et al., ICIP 2020)", "student w/o KD (SN w/o FAKD)"): ("san_fakd_6x10", "student", "none"),
    ("FAKD (He et al., ICIP 2020)", "FAKD"): ("san_fakd_6x10", "student", "fakd"),
}


def published_results(with_seed: bool = False) -> pd.DataFrame:
    """Columns source, table, model, role, method, train_set, scale, dataset, psnr, ssim, params, evidence.
    `with_seed`: also the rows of published_results_seed.csv that fit these columns (FAKD Table 3's SAN columns;
    `evidence` is their `source`, `train_set` and `params` are not in that file)."""
    table = _read("published_results.csv").copy()
    if not with_seed:
        return table
    seed = published_results_seed()
    found = [_SEED_AS_RESULTS.get(label) for label in zip(seed["paper"], seed["method"])]
    seed = seed[[names is not None for names in found]]
    model, role, method = zip(*(names for names in found if names is not None))
    rows = pd.DataFrame({"source": seed["paper"], "table": seed["table"], "model": model, "role": role,
                         "method": method, "scale": seed["scale"], "dataset": seed["dataset"], "psnr": seed["psnr"],
                         "ssim": seed["ssim"], "evidence": seed["source"], "dataset_key": seed["dataset_key"]})
    return pd.concat([table, rows], ignore_index=True)


def published_results_seed() -> pd.DataFrame:
    """Columns paper, table, method, teacher, student, scale, dataset, psnr, ssim, source (+ dataset_key, the set's
    name without a protocol note: "Set5 (Gaussian8)" -> Set5)."""
    return _seed_columns("published_results_seed.csv")


def published_results_lightweight() -> pd.DataFrame:
    """The columns of `published_results_seed()`; `psnr` and `ssim` are empty where no value was found."""
    return _seed_columns("published_results_lightweight.csv")


def _seed_columns(filename: str) -> pd.DataFrame:
    table = _read(filename).copy()
    table["dataset_key"] = table["dataset"].str.replace(r" \(.*\)$", "", regex=True).map(canonical_dataset)
    return table


def reference_row(table: pd.DataFrame, dataset: str, scale: int, **match: str) -> pd.Series | None:
    """The first row of `table` for this dataset (any spelling), scale and extra column values, or None."""
    rows = table[(table["dataset_key"] == canonical_dataset(dataset)) & (table["scale"] == int(scale))]
    for column, value in match.items():
        rows = rows[rows[column] == value]
    return None if rows.empty else rows.iloc[0]
