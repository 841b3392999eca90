"""Dataset registry, data roots and the embedded `default` dataset."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from kd.cli import main
from kd.data.benchmark import load_eval_images
from kd.data.embedded import EMBEDDED_FILES, SPLITS, embedded_paths
from kd.data.files import dataset_files
from kd.data.registry import list_datasets, resolve_dataset
from kd.data.roots import cache_dir, resolve_data_root
from kd.errors import KdError


@pytest.fixture
def no_data_root(tmp_path, monkeypatch):
    """No `KDBENCH_DATA`, an empty per-user cache: the situation of a fresh install."""
    monkeypatch.delenv("KDBENCH_DATA", raising=False)
    monkeypatch.delenv("KDBENCH_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path


@pytest.mark.parametrize(
    "query, canonical",
    [("set5", "Set5"), ("SET14", "Set14"), ("bsd100", "B100"), ("B100", "B100"), ("div2k", "DIV2K_train"),
     ("DIV2K_valid", "DIV2K_valid"), ("urban100", "Urban100"), ("291", "291"), ("Default", "default")],
)
def test_resolve_names_and_aliases(query, canonical):
    assert resolve_dataset(query).name == canonical


def test_unknown_dataset_suggests_the_closest():
    with pytest.raises(KdError, match="Did you mean 'Urban100'"):
        resolve_dataset("urban10")


def test_registry_contents():
    names = {info.name for info in list_datasets()}
    assert {"Set5", "Set14", "B100", "Urban100", "Manga109", "DIV2K_train", "DIV2K_valid", "Flickr2K", "T91",
            "BSD200", "291", "default"} <= names
    for info in list_datasets():
        assert info.role in ("eval", "train", "val")
    assert resolve_dataset("291").parts == ("T91", "BSD200")
    assert resolve_dataset("B100").folder_names == ("B100", "BSD100")


def test_root_precedence(no_data_root, monkeypatch):
    xdg = no_data_root / "xdg"
    assert resolve_data_root(None) == xdg / "kdbench" / "data"
    assert cache_dir() == xdg / "kdbench"
    monkeypatch.setenv("KDBENCH_DATA", str(no_data_root / "env"))
    monkeypatch.setenv("KDBENCH_CACHE", str(no_data_root / "c"))
    assert resolve_data_root(None) == no_data_root / "env"
    assert resolve_data_root(str(no_data_root / "cli")) == no_data_root / "cli"
    assert cache_dir() == no_data_root / "c"


def test_missing_dataset_error_names_path_and_command(tmp_path):
    with pytest.raises(KdError) as info:
        load_eval_images("Set5", 4, tmp_path)
    message = str(info.value)
    assert str(tmp_path / "Set5" / "HR") in message and "kdbench data download Set5" in message
    with pytest.raises(KdError, match="kdbench data download T91") as info:
        dataset_files("291", tmp_path, purpose="train")
    assert str(tmp_path / "T91" / "HR") in str(info.value)
    with pytest.raises(KdError, match="no automatic download"):
        dataset_files("Manga109", tmp_path, purpose="eval")


def test_unsupported_scale_is_a_clear_error(tmp_path):
    for scale in (5, 1, 2.0, True):
        with pytest.raises(KdError, match="unsupported scale"):
            load_eval_images("Set5", scale, tmp_path)


def test_embedded_files_are_the_scikit_image_originals():
    registry = pytest.importorskip("skimage.data._registry").registry  # scikit-image's own pinned hashes
    for name, sha in EMBEDDED_FILES.items():
        assert registry[f"data/{name}"] == sha
    for split in ("train", "test"):
        for path in embedded_paths(split):
            assert hashlib.sha256(path.read_bytes()).hexdigest() == EMBEDDED_FILES[path.name]


def test_embedded_split_is_disjoint_and_complete():
    train, test = set(SPLITS["train"]), set(SPLITS["test"])
    assert not train & test
    assert train | test == set(EMBEDDED_FILES)
    assert len(train) > len(test) >= 3
    assert {"motorcycle_left.png", "motorcycle_right.png"} <= train  # a stereo pair stays on one side


def test_embedded_dataset_works_without_any_data_root(no_data_root):
    images = load_eval_images("default", 4)
    assert [im.name for im in images] == ["chelsea", "coffee", "rocket"]
    for im in images:
        assert im.lr_source == "generated" and im.hr.dtype == torch.uint8
        assert im.lr.shape == (3, im.hr.shape[1] // 4, im.hr.shape[2] // 4)
    assert not (no_data_root / "xdg" / "kdbench" / "data").exists()  # nothing needed there
    train = dataset_files("default", None, purpose="train")
    assert [p.stem for p in train[0].hr] == sorted(Path(n).stem for n in SPLITS["train"])


def test_cli_data_list(shared_data, capsys):
    assert main(["data", "list", "--data-root", str(shared_data)]) == 0
    out = capsys.readouterr().out
    for name in ("Set5", "B100", "BSD100", "DIV2K_train", "default", "291"):
        assert name in out


def test_cli_download_without_source_exits_2(tmp_path, capsys):
    assert main(["data", "download", "Manga109", "--data-root", str(tmp_path / "d")]) == 2
    assert "Manga109" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
