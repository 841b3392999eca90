"""GhostSR ghost convs (a reconstruction) as the `ghost` presets of EDSR and RCAN: the parameter saving, exact
one-pixel shifts in evaluation, a learned shift in training, and a training step as a student."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from kd.config import TrainConfig
from kd.engine import Trainer
from kd.engine.batches import FixedBatch
from kd.errors import KdError
from kd.methods import create_method, loss_weights
from kd.models import create, get_entry, load_official
from kd.models.loading import identify_architecture
from seed_steps import parameters
from teachers.ghostsr import GhostConv

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("arch,n_feats,ghost_convs", [("edsr", 256, 32 * 2), ("rcan", 64, 10 * 20 * 2)])
def test_ghost_preset_halves_every_residual_block_conv(arch, n_feats, ghost_convs):
    # Each 3x3 body conv keeps C/2 of its C filters (weights and biases) and gains a 9-entry shift weight.
    saved = n_feats * (n_feats // 2) * 9 + n_feats // 2 - 9
    assert parameters(arch, 4, "paper") - parameters(arch, 4, "ghost") == ghost_convs * saved
    keys = set(create(arch, 4, "tiny", ghost_ratio=0.5).state_dict())
    block = "body.0.body.0." if arch == "edsr" else "body.0.body.0.body.0."
    assert {block + "primary_conv.weight", block + "primary_conv.bias", block + "cheap_conv.weight"} <= keys
    assert not any("primary_conv" in k or "cheap_conv" in k for k in create(arch, 4, "tiny").state_dict())


def test_edsr_x2_saving_is_the_papers_46_percent():
    # GhostSR abstract: "we reduce the parameters by 46% ... of x2 EDSR" (lambda = 0.5).
    assert round(100 * (1 - parameters("edsr", 2, "ghost") / parameters("edsr", 2, "paper"))) == 46


def _one_hot_shift(conv: GhostConv, row: int, column: int) -> None:
    with torch.no_grad():
        conv.cheap_conv.weight.fill_(-1.0)
        conv.cheap_conv.weight[0, 0, row, column] = 1.0


@pytest.mark.parametrize("row,column", [(r, c) for r in range(3) for c in range(3)])
def test_eval_ghosts_are_exact_one_pixel_shifts(row, column):
    torch.manual_seed(0)
    conv = GhostConv(6, 8, 0.5).eval()
    _one_hot_shift(conv, row, column)
    x = torch.randn(2, 6, 7, 9)
    with torch.no_grad():
        out, intrinsic = conv(x), conv.primary_conv(x)
    assert out.shape == (2, 8, 7, 9) and torch.equal(out[:, :4], intrinsic)
    ghost = out[:, 4:]
    dy, dx = row - 1, column - 1  # ghost[y, x] = intrinsic[y + dy, x + dx], zero outside
    for y in range(7):
        for x_ in range(9):
            inside = 0 <= y + dy < 7 and 0 <= x_ + dx < 9
            expected = intrinsic[..., y + dy, x_ + dx] if inside else torch.zeros(2, 4)
            assert torch.equal(ghost[..., y, x_], expected), (y, x_)


def test_more_ghosts_than_intrinsic_channels_cycle_the_intrinsic_ones():
    torch.manual_seed(0)
    conv = GhostConv(4, 8, 0.75).eval()  # 2 intrinsic, 6 ghost channels
    _one_hot_shift(conv, 1, 1)  # centre: no move
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        out, intrinsic = conv(x), conv.primary_conv(x)
    assert torch.equal(out, intrinsic[:, [0, 1, 0, 1, 0, 1, 0, 1]])


def test_training_shift_is_a_sampled_one_pixel_move_and_learns_its_weight():
    torch.manual_seed(0)
    conv = GhostConv(4, 4, 0.5).train()
    x = torch.randn(1, 4, 6, 6)
    out = conv(x)
    intrinsic = conv.primary_conv(x).detach()
    padded = F.pad(intrinsic[:, :2], (1, 1, 1, 1))
    moves = [padded[..., r:r + 6, c:c + 6] for r in range(3) for c in range(3)]
    assert sum(torch.allclose(out[:, 2:].detach(), m, rtol=0, atol=1e-6) for m in moves) >= 1
    out.square().sum().backward()
    assert conv.cheap_conv.weight.grad is not None and conv.cheap_conv.weight.grad.abs().sum() > 0


def test_bad_ghost_ratio_is_refused_naming_the_field():
    with pytest.raises(KdError, match="'ghost_ratio'.*got 1.0"):
        create("edsr", 4, "tiny", ghost_ratio=1.0)
    with pytest.raises(KdError, match="'ghost_ratio'.*got -0.5"):
        create("rcan", 4, "tiny", ghost_ratio=-0.5)
    with pytest.raises(KdError, match="leaves no ghost channel of 8"):
        create("rcan", 4, "tiny", ghost_ratio=0.1)


def test_ghost_checkpoints_are_recognised_and_a_wrong_scale_explained():
    x2 = create("edsr", 2, "tiny", ghost_ratio=0.5).state_dict()
    assert identify_architecture(x2) == "edsr"
    assert identify_architecture(create("rcan", 2, "tiny", ghost_ratio=0.5).state_dict()) == "rcan"
    with pytest.raises(KdError, match="checkpoint is x2.*model is x4"):
        load_official(create("edsr", 4, "tiny", ghost_ratio=0.5), x2)


@pytest.mark.parametrize("arch", ["rcan", "edsr"])
def test_ghost_student_trains_one_step_from_rcan_with_logits(tmp_path, arch):
    torch.manual_seed(0)
    student, teacher = create(arch, 2, "tiny", ghost_ratio=0.5), create("rcan", 2, "tiny")
    method = create_method("logits", student, teacher)
    hr = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    lr = F.avg_pool2d(hr, 2)
    recipe = TrainConfig(steps=1, batch_size=2, lr_patch=16, lr=1e-2, schedule="constant", log_every=1, val_every=0)
    trainer = Trainer(recipe, student=student, teacher=teacher, method=method, weights=loss_weights("logits"),
                      batches=FixedBatch(lr, hr), run_dir=tmp_path, seed=0)
    shifts = {n: p.detach().clone() for n, p in student.named_parameters() if n.endswith("cheap_conv.weight")}
    values = trainer.train_step(lr, hr)
    assert all(math.isfinite(v) for v in values.values()), values
    after = dict(student.named_parameters())
    assert shifts and all(not torch.equal(after[n], before) for n, before in shifts.items())


def test_ghost_presets_are_labelled_reconstructions():
    for arch in ("edsr", "rcan"):
        entry = get_entry(arch)
        assert entry.presets["ghost"]["ghost_ratio"] == 0.5
        assert "GhostSR" in entry.description and "reconstruction" in entry.description
