from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from kd.data.imresize import downscale_uint8
from kd.data.io import write_png
from kd.data.patches import PatchDataset
from kd.errors import KdError


def _smooth_image(rng: np.random.Generator, h: int, w: int) -> torch.Tensor:
    """Natural-looking content: a few random sinusoids plus mild noise, uint8 (3, h, w)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    image = np.zeros((3, h, w))
    for c in range(3):
        for _ in range(4):
            fy, fx, phase = rng.uniform(0.01, 0.2), rng.uniform(0.01, 0.2), rng.uniform(0, 6.3)
            image[c] += np.sin(fy * y + fx * x + phase)
    image = 127.5 + 30 * image + rng.normal(0, 4, image.shape)
    return torch.from_numpy(np.clip(image.round(), 0, 255).astype(np.uint8))


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A small T91 stand-in: three usable images and one smaller than the 2 x 16 = 32 px HR patch."""
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for name, (h, w) in {"a": (64, 81), "b": (90, 70), "c": (41, 57), "tiny": (30, 100)}.items():
        write_png(tmp_path / "data" / "T91" / "HR" / f"{name}.png", _smooth_image(rng, h, w))
    return tmp_path / "data"


def _dataset(root, **kwargs) -> PatchDataset:
    with pytest.warns(UserWarning, match="tiny.png"):
        return PatchDataset("T91", 2, 16, data_root=root, **kwargs)


def test_shapes_types_and_skipped_image(root):
    ds = _dataset(root, length=50)
    assert ds.n_images == 3 and len(ds) == 50
    lr, hr = ds[0]
    assert lr.dtype == hr.dtype == torch.float32
    assert lr.shape == (3, 16, 16) and hr.shape == (3, 32, 32)
    assert 0 <= lr.min() and lr.max() <= 1 and 0 <= hr.min() and hr.max() <= 1
    with pytest.raises(IndexError):
        ds[50]


def test_items_are_pure_functions_of_seed_and_index(root):
    first, second = _dataset(root, seed=3), _dataset(root, seed=3)
    for index in (0, 7, 123456):
        assert all(torch.equal(a, b) for a, b in zip(first[index], second[index]))
    # out-of-order access (a resumed run starts mid-way) gives the same items
    later = [second[i][0] for i in (9, 2, 5)]
    assert all(torch.equal(a, first[i][0]) for a, i in zip(later, (9, 2, 5)))
    assert not torch.equal(first[0][0], first[1][0])
    other = _dataset(root, seed=4)
    assert sum(torch.equal(first[i][0], other[i][0]) for i in range(10)) == 0


def test_each_epoch_visits_every_image_once(root):
    ds = _dataset(root, seed=1, augment=False)
    lr_full = [img.float().div(255) for img in ds.lr_images]

    def source(lr: torch.Tensor) -> int:
        matches = [k for k, full in enumerate(lr_full) if _contains(full, lr)]
        assert len(matches) == 1
        return matches[0]

    for epoch in range(3):
        seen = [source(ds[epoch * 3 + k][0]) for k in range(3)]
        assert sorted(seen) == [0, 1, 2]
        assert seen == ds.image_order(epoch).tolist()


def _contains(full: torch.Tensor, patch: torch.Tensor) -> bool:
    p = patch.shape[-1]
    windows = full.unfold(1, p, 1).unfold(2, p, 1)  # (3, H-p+1, W-p+1, p, p)
    diff = (windows - patch[:, None, None]).abs().amax(dim=(0, 3, 4))
    return bool((diff == 0).any())


@pytest.mark.parametrize("augment", [False, True])
def test_lr_patch_is_the_downscaled_hr_patch(root, augment):
    ds = _dataset(root, seed=7, augment=augment)
    for index in range(12):
        lr, hr = ds[index]
        hr_u8 = (hr * 255).round().to(torch.uint8)
        lr_u8 = (lr * 255).round().to(torch.int32)
        again = downscale_uint8(hr_u8, 2).to(torch.int32)
        # away from the patch border (2 LR pixels) the kernel sees the same HR pixels as in the full image
        diff = (again - lr_u8)[:, 2:-2, 2:-2].abs()
        assert diff.max() <= 1, f"index {index}: LR and HR patches are not aligned"


def test_augmentation_produces_flips_and_transposes(root):
    ds = _dataset(root, seed=0, augment=True)
    plain = _dataset(root, seed=0, augment=False)
    changed = sum(not torch.equal(ds[i][1], plain[i][1]) for i in range(40))
    assert 20 <= changed <= 40  # 7 of 8 dihedral transforms change the patch


def test_dataloader_workers_give_the_same_batches(root):
    ds = _dataset(root, seed=5, length=24)
    direct = torch.stack([ds[i][0] for i in range(24)])
    loader = DataLoader(ds, batch_size=8, shuffle=False, num_workers=2)
    loaded = torch.cat([lr for lr, _ in loader])
    assert torch.equal(direct, loaded)


def test_no_usable_image_is_an_error(root):
    with pytest.raises(KdError, match="smaller patch"), pytest.warns(UserWarning):
        PatchDataset("T91", 2, 64, data_root=root)


def test_several_datasets_and_embedded_default(root, monkeypatch, tmp_path):
    monkeypatch.delenv("KDBENCH_DATA", raising=False)
    ds = PatchDataset("default", 4, 24, seed=0, length=10)
    assert ds.n_images == 6 and all(name.startswith("default/train/") for name in ds.names)
    lr, hr = ds[3]
    assert lr.shape == (3, 24, 24) and hr.shape == (3, 96, 96)
    with pytest.warns(UserWarning):
        both = PatchDataset(["T91", "default"], 2, 16, data_root=root)
    assert both.n_images == 9
