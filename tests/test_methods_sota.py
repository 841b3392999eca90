"""FAKD, DUKD, DCKD and MiPKD: formulas against brute force, their mechanics, and step-0 health with two teachers.

The generic checks (finite and decreasing loss on a fixed batch, gradients reach the student and the method and
never the teacher, the exported student is plain, taps resolve for every teacher and scale) run for these methods
in tests/test_methods_advanced.py, which covers every registered method.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from kd.errors import KdError
from kd.methods import StepInputs, create_method, loss_weights
from kd.methods.health import HEALTHY, gradient_ratios
from kd.models import capture, create
from seed_steps import smooth_batch

SOTA = ("fakd", "dukd", "dckd", "mipkd")


def step_inputs(method, student, teacher, lr, hr) -> StepInputs:
    with capture(student, method.student_taps) as s_feats:
        out = student(lr)
    with torch.no_grad(), capture(teacher, method.teacher_taps, detach=True) as t_feats:
        t_out = teacher(lr)
    return StepInputs(lr, hr, out, t_out, dict(s_feats), dict(t_feats))


def health_ratio(name: str, teacher_arch: str, options=None) -> float:
    """|| grad of the weighted KD terms together || / || grad of the weighted reconstruction term ||, step 0."""
    torch.manual_seed(0)
    student, teacher = create("asid", 2, "tiny"), create(teacher_arch, 2, "tiny").eval()
    method = create_method(name, student, teacher, options)
    terms = method.losses(step_inputs(method, student, teacher, *smooth_batch(2, batch=4)))
    weights = loss_weights(name)
    distillation = sum(weights[n] * v for n, v in terms.items() if n != "rec" and weights[n] and v.requires_grad)
    ratios = gradient_ratios({"rec": terms["rec"], "all_kd": distillation}, {"rec": weights["rec"], "all_kd": 1.0},
                             list(student.parameters()))
    return ratios["all_kd"]


@pytest.mark.parametrize("teacher_arch", ["rcan", "swinir"])  # RCAN works in [0, 255], SwinIR in [0, 1]
@pytest.mark.parametrize("name", SOTA)
def test_step0_health_ratio_in_range(name, teacher_arch):
    # DCKD as released has three teacher terms beside its codebook CE (kd 1, lcr 1, dcl 0.1): together 8.4-8.9x
    # the reconstruction here, inside the trainer's band (kd.methods.health.HEALTHY); each term alone is checked in
    # tests/test_method_health.py.
    high = HEALTHY[1] if name == "dckd" else 5
    assert 0.05 <= health_ratio(name, teacher_arch) <= high


@pytest.mark.parametrize("arch", ["rcan", "swinir"])  # the miniature DCKD pairs: student and teacher of one family
@pytest.mark.parametrize("name", SOTA)
def test_same_family_pairs_train_the_student(name, arch):
    torch.manual_seed(0)
    student, teacher = create(arch, 2, "tiny"), create(arch, 2, "tiny").eval()
    method = create_method(name, student, teacher)
    terms = method.losses(step_inputs(method, student, teacher, *smooth_batch(2, batch=4)))
    weights = loss_weights(name)
    loss = sum(weights[n] * v for n, v in terms.items())
    grads = torch.autograd.grad(loss, list(student.parameters()), allow_unused=True)
    assert torch.isfinite(loss) and sum(float(g.abs().sum()) for g in grads if g is not None) > 0


# ------------------------------------------------------------------------------------------------ FAKD


def test_fakd_affinity_matches_brute_force_and_chunks_agree():
    from kd.methods.fakd import affinity_l1

    torch.manual_seed(0)
    s = torch.randn(2, 3, 3, 4, requires_grad=True)
    t = torch.randn(2, 5, 3, 4)

    def affinity(feat, b):
        pixels = [feat[b, :, i, j] for i in range(feat.shape[2]) for j in range(feat.shape[3])]
        unit = [p / (p.pow(2).sum().sqrt() + 1e-8) for p in pixels]
        return [[float((u * v).sum()) for v in unit] for u in unit]

    expected = sum(abs(a - b) for batch in range(2)
                   for row_s, row_t in zip(affinity(s.detach(), batch), affinity(t, batch))
                   for a, b in zip(row_s, row_t)) / (2 * 12 * 12)
    grads = []
    for chunk in (1, 5, 12, 100):
        loss = affinity_l1(s, t, chunk)
        assert loss.item() == pytest.approx(expected, rel=1e-5)
        (grad,) = torch.autograd.grad(loss, s)
        grads.append(grad)
    assert grads[0].abs().sum() > 0  # the affinity term trains the student (the DUKD re-implementation's does not)
    assert all(torch.allclose(g, grads[0], atol=1e-7) for g in grads[1:])


def test_fakd_refuses_maps_above_max_positions_naming_the_option():
    torch.manual_seed(0)
    student, teacher = create("asid", 2, "tiny"), create("rcan", 2, "tiny").eval()
    method = create_method("fakd", student, teacher, {"max_positions": 100})
    with pytest.raises(KdError, match=r"method.options.max_positions = 100.*train.lr_patch"):
        method.losses(step_inputs(method, student, teacher, *smooth_batch(2, batch=4)))


# ------------------------------------------------------------------------------------------------ DUKD


def test_dukd_inverse_augmentation_is_exact_for_every_op_combination():
    from kd.methods.dukd import OPS, augment, invert_augment

    x = torch.rand(1, 3, 5, 5)
    combos = torch.tensor(list(itertools.product([False, True], repeat=len(OPS))))
    batch = x.expand(len(combos), -1, -1, -1)
    assert torch.equal(invert_augment(augment(batch, combos), combos), batch)
    # re-applying the same sequence (the official inverse) is wrong when transpose and one flip coincide
    transpose_and_flip = torch.tensor([[False, True, False, True]])
    assert not torch.equal(augment(augment(x, transpose_and_flip), transpose_and_flip), x)


def test_dukd_zoom_in_tile_is_an_lr_sized_piece_of_the_hr_patch():
    from kd.methods.dukd import zoom_in_tiles

    _, hr = smooth_batch(3, batch=2, size=10)

    def position(tile, image):
        return next(r * 3 + c for r in range(3) for c in range(3)
                    if torch.equal(tile, image[:, r * 10:(r + 1) * 10, c * 10:(c + 1) * 10]))

    tiles = zoom_in_tiles(hr, 3)
    assert tiles.shape == (2, 3, 10, 10)
    for tile, image in zip(tiles, hr):
        position(tile, image)
    for _ in range(5):  # `n_gt_sub: [2]` (the EDSR x2 release): two distinct tiles per patch, every first tile first
        tiles = zoom_in_tiles(hr, 3, count=2)
        assert tiles.shape == (4, 3, 10, 10)
        assert all(position(tiles[i], hr[i]) != position(tiles[2 + i], hr[i]) for i in range(2))


def test_kdbench_list_methods_shows_the_released_settings_of_each_pair(capsys):
    from kd.cli import main

    assert main(["list", "methods"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "released settings per teacher" in text
    assert "dukd_rcan_x4c64b20g10_c64b6g10.yml" in text and "noisy_prob=0.0" in text
    assert "rec 5, kd 1, up_in 1; noisy_prob=0.3" in text and "other transformer" in text


def test_dukd_zoom_out_terms_when_enabled():
    torch.manual_seed(0)
    student, teacher = create("asid", 2, "tiny"), create("rcan", 2, "tiny").eval()
    off = create_method("dukd", student, teacher)
    on = create_method("dukd", student, teacher, {"zoom_out": True})
    lr, hr = smooth_batch(2, size=24, batch=4)
    assert "out_kd" not in off.losses(step_inputs(off, student, teacher, lr, hr))
    terms = on.losses(step_inputs(on, student, teacher, lr, hr))
    assert terms["out_rec"].item() > 0 and terms["out_kd"].item() > 0 and terms["out_rec"].requires_grad
    small = smooth_batch(2, size=16, batch=4)
    with pytest.raises(KdError, match=r"min_zoom_out_size = 12; raise train.lr_patch or set method.options.zoom_out"):
        on.losses(step_inputs(on, student, teacher, *small))


# ------------------------------------------------------------------------------------------------ DCKD


def test_dckd_contrastive_ratio_matches_its_formula():
    from kd.methods.dckd import contrastive_ratio

    torch.manual_seed(0)
    anchor, positive = [torch.randn(2, 3, 4, 4) for _ in range(2)], [torch.randn(2, 3, 4, 4) for _ in range(2)]
    negatives = [[torch.randn(2, 3, 4, 4) for _ in range(2)] for _ in range(3)]
    weights = [0.5, 1.0]
    expected = sum(w * (anchor[i] - positive[i]).abs().mean().item()
                   / sum((anchor[i] - n[i]).abs().mean().item() for n in negatives) for i, w in enumerate(weights))
    assert contrastive_ratio(anchor, positive, negatives, weights).item() == pytest.approx(expected, rel=1e-5)


def _dckd(options=None, arch="rcan"):
    torch.manual_seed(0)
    student, teacher = create("asid", 2, "tiny"), create(arch, 2, "tiny").eval()
    return student, teacher, create_method("dckd", student, teacher, options)


def _same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_dckd_history_mixes_0_9_of_the_ema_student_at_the_released_iterations():
    # dckd_model.py: after iteration t the EMA student is updated (0.999), then, when
    # t % step[(t - 1) // 100000] == 0 with step [1000, 2000, 3000], history <- 0.1 history + 0.9 EMA.
    from kd.methods.base import StepContext

    student, teacher, method = _dckd()
    refreshed = [step + 1 for step in range(250_000) if method.refreshes_history(step)]
    assert refreshed[:3] == [1000, 2000, 3000] and refreshed[99:102] == [100_000, 102_000, 104_000]
    assert refreshed[149:152] == [200_000, 201_000, 204_000] and refreshed[-1] == 249_000
    assert len(refreshed) == 100 + 50 + 17

    def nudge():
        with torch.no_grad():
            for p in student.parameters():
                p.add_(torch.randn_like(p))

    def floats(module):
        return [v.clone() for v in module.state_dict().values() if v.is_floating_point()]

    nudge()
    history, ema = floats(method.history), floats(method.ema_student)
    method.after_optimizer_step(StepContext(998, student, teacher, None, 0.0, lambda: None))  # iteration 999
    now = floats(student)
    expected_ema = [0.999 * e + 0.001 * s for e, s in zip(ema, now)]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(floats(method.ema_student), expected_ema))
    assert all(torch.equal(a, b) for a, b in zip(floats(method.history), history))  # 999 is not in the list

    nudge()
    method.after_optimizer_step(StepContext(999, student, teacher, None, 0.0, lambda: None))  # iteration 1000
    expected_ema = [0.999 * e + 0.001 * s for e, s in zip(expected_ema, floats(student))]
    expected_history = [0.1 * h + 0.9 * e for h, e in zip(history, expected_ema)]  # mixed with the updated EMA
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(floats(method.history), expected_history))
    assert not any(k.startswith(("history.", "ema_student.")) for k in student.state_dict())


def test_dckd_contrasts_with_five_negatives_the_first_the_history_on_the_clean_lr(monkeypatch):
    import kd.methods.dckd as dckd

    student, teacher, method = _dckd()
    lr, hr = smooth_batch(2, batch=4)
    inputs_seen = []
    method.history.register_forward_hook(lambda module, args, out: inputs_seen.append(args[0]))
    negatives_seen = []
    ratio = dckd.contrastive_ratio
    monkeypatch.setattr(dckd, "contrastive_ratio",
                        lambda a, p, negatives, w: negatives_seen.append(negatives) or ratio(a, p, negatives, w))
    terms = method.losses(step_inputs(method, student, teacher, lr, hr))
    assert len(negatives_seen) == 1 and len(negatives_seen[0]) == 5 and terms["dcl"].item() > 0
    (batch,) = inputs_seen  # one history forward over the clean LR and the 4 degraded copies
    clean, *degraded = batch.chunk(5)
    assert torch.equal(clean, lr) and all(not torch.equal(d, lr) for d in degraded)
    with torch.no_grad():
        expected = method.encoder(method.history(lr))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(negatives_seen[0][0], expected))


def test_dckd_degradation_is_gaussian_noise_only_in_1_to_30_over_255_half_of_it_grey():
    from kd.methods.dckd import add_noise

    torch.manual_seed(0)
    grey = torch.full((2000, 3, 32, 32), 0.5)  # mid-grey: 3 sigma of 30/255 never clips
    noise = add_noise(grey, [1.0, 30.0], 0.5) - grey
    sigma = noise.std(dim=(1, 2, 3)) * 255  # per sample: uniform in [1, 30]
    assert 0.9 < sigma.min() < 1.3 and 28.5 < sigma.max() < 32.5
    quartiles = torch.quantile(sigma, torch.tensor([0.25, 0.5, 0.75]))
    assert torch.allclose(quartiles, torch.tensor([8.25, 15.5, 22.75]), atol=1.0)
    one_field = (noise[:, 0] == noise[:, 1]).all(dim=(1, 2)) & (noise[:, 1] == noise[:, 2]).all(dim=(1, 2))
    assert abs(one_field.float().mean().item() - 0.5) < 0.04
    assert abs(noise.mean().item()) < 1e-3

    student, teacher, method = _dckd({"noise_sigma": [0.0, 0.0]})  # no noise: the negatives see the LR itself
    seen = []
    method.history.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    lr, _ = smooth_batch(2, batch=4)
    method.negatives(lr)
    assert all(torch.equal(chunk, lr) for chunk in seen[0].chunk(5))  # no blur, no resize, nothing else


@pytest.mark.parametrize("arch", ["rcan", "swinir"])
def test_dckd_contrast_acts_from_step_0_against_a_copy_of_the_initial_student(arch):
    student, teacher, method = _dckd(arch=arch)
    assert _same_weights(method.history, student) and _same_weights(method.ema_student, student)
    terms = method.losses(step_inputs(method, student, teacher, *smooth_batch(2, batch=4)))
    assert terms["dcl"].requires_grad and terms["dcl"].item() > 0
    ratio = gradient_ratios(terms, loss_weights("dckd"), list(student.parameters()))["dcl"]
    assert HEALTHY[0] <= ratio <= HEALTHY[1]


def test_dckd_refuses_a_run_whose_history_would_never_be_refreshed(capsys, tmp_path):
    from kd.cli import main

    _, _, method = _dckd()
    with pytest.raises(KdError, match=r"history_every starts at 1000, not below train\.steps=1000"):
        method.check_schedule(1000)
    method.check_schedule(1001)
    code = main(["run", "--profile", "smoke", "--student", "asid", "--teacher", "rcan", "--method", "dckd",
                 "--set", "method.options.history_every=[6]", "--out-dir", str(tmp_path)])
    assert code == 2 and "method.options.history_every starts at 6" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before a teacher was trained or a run folder written


def test_dckd_consistency_term_compares_with_the_teacher_on_an_augmented_lr_mapped_back():
    student, teacher, method = _dckd()
    assert method.options.consistency_prob == 0.5 and loss_weights("dckd")["lcr"] == 1.0  # lcr_opt, noisy.prob
    lr, hr = smooth_batch(2, batch=8)
    torch.manual_seed(3)
    target = method.consistency_target(lr)
    torch.manual_seed(3)
    chosen = torch.rand(8, 4) < 0.5  # per sample: invert, flip H, flip W, transpose (dckd_model.py `noising`)
    assert 0 < chosen.sum() < chosen.numel()
    for i, (x, (invert, flip_h, flip_w, transpose)) in enumerate(zip(lr, chosen.tolist())):
        x = 1 - x if invert else x
        x = x.flip(-2) if flip_h else x
        x = x.flip(-1) if flip_w else x
        x = x.transpose(-2, -1) if transpose else x
        with torch.no_grad():
            y = teacher(x[None])[0]
        y = y.transpose(-2, -1) if transpose else y  # reverted in reverse order (`noising(..., revert=True)`)
        y = y.flip(-1) if flip_w else y
        y = y.flip(-2) if flip_h else y
        y = 1 - y if invert else y
        assert torch.allclose(target[i], y, atol=1e-5), i

    inputs = step_inputs(method, student, teacher, lr, hr)
    terms = method.losses(inputs)
    assert terms["lcr"].requires_grad and not torch.allclose(terms["lcr"], terms["kd"])
    _, _, plain = _dckd({"consistency_prob": 0.0})
    assert torch.allclose(plain.losses(inputs)["lcr"], terms["kd"])  # no op: the teacher's plain output


# ------------------------------------------------------------------------------------------------ MiPKD


@pytest.mark.parametrize("arch", ["rcan", "swinir", "asid"])
def test_mipkd_injecting_a_tap_s_own_value_reproduces_the_output(arch):
    from kd.methods.mipkd import injected
    from kd.methods.pairing import body_stages

    torch.manual_seed(0)
    model = create(arch, 2, "tiny").eval()
    lr, _ = smooth_batch(2, batch=2)
    tap = body_stages(model)[0]
    with torch.no_grad(), capture(model, [tap]) as feats:
        reference = model(lr)
    with torch.no_grad(), injected(model, tap, feats[tap]):
        assert torch.allclose(model(lr), reference, atol=1e-6)
    with torch.no_grad(), injected(model, tap, torch.zeros_like(feats[tap])):
        assert not torch.allclose(model(lr), reference, atol=1e-3)


def test_mipkd_block_mixer_trains_the_student_through_either_branch():
    torch.manual_seed(0)
    student, teacher = create("asid", 2, "tiny"), create("rcan", 2, "tiny").eval()
    method = create_method("mipkd", student, teacher)
    branches = set()
    for seed in range(6):
        method._random.seed(seed)
        inputs = step_inputs(method, student, teacher, *smooth_batch(2, batch=4))
        loss = method.losses(inputs)["block"]
        grads = torch.autograd.grad(loss, [p for p in student.parameters()], allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads)
        method._random.seed(seed)
        method._random.randrange(len(method.student_taps))
        branches.add(method._random.random() < 0.5)
    assert branches == {True, False}


def test_mipkd_block_term_pulls_the_student_far_less_on_the_teacher_branch():
    # why the report flags low block-term health readings: those are the teacher-branch steps
    from kd.methods.base import reconstruction
    torch.manual_seed(0)
    student, teacher = create("asid", 2, "tiny"), create("rcan", 2, "tiny").eval()
    method = create_method("mipkd", student, teacher)
    inputs = step_inputs(method, student, teacher, *smooth_batch(2, batch=4))
    _, z_mix, student_feat, teacher_feat = method.mix(inputs, method.student_taps[0], method.teacher_taps[0])
    ratios = {}
    for branch, draw in (("teacher", 0.1), ("student", 0.9)):
        method._random.random = lambda draw=draw: draw
        terms = {"rec": reconstruction(inputs), "block": method.block_loss(inputs, 0, z_mix, student_feat,
                                                                              teacher_feat)}
        ratios[branch] = gradient_ratios(terms, loss_weights("mipkd"), list(student.parameters()))["block"]
    assert 0 < ratios["teacher"] < ratios["student"] / 10
    assert 0.01 <= ratios["student"] <= 10


def test_mipkd_random_streams_travel_with_its_state_dict(tmp_path):
    student, teacher = create("asid", 2, "tiny"), create("rcan", 2, "tiny").eval()
    method = create_method("mipkd", student, teacher)
    method._random.random(), torch.rand(3, generator=method._generator)  # advance both streams past the seed
    path = tmp_path / "method.pt"
    torch.save(method.state_dict(), path)
    expected = (method._random.random(), torch.rand(5, generator=method._generator))
    resumed = create_method("mipkd", student, teacher)
    resumed.load_state_dict(torch.load(path, weights_only=True))  # what the trainer's checkpoints allow
    assert resumed._random.random() == expected[0]
    assert torch.equal(torch.rand(5, generator=resumed._generator), expected[1])


def test_mipkd_streams_follow_the_run_seed_unless_pinned():
    student, teacher = create("asid", 2, "tiny"), create("rcan", 2, "tiny").eval()

    def first_draws(run_seed: int, options=None):
        torch.manual_seed(run_seed)  # what the trainer does before building the method
        method = create_method("mipkd", student, teacher, options)
        return [method._random.random() for _ in range(4)], torch.rand(6, generator=method._generator)

    def same(a, b) -> bool:
        return a[0] == b[0] and torch.equal(a[1], b[1])

    assert same(first_draws(1), first_draws(1))
    assert not same(first_draws(1), first_draws(2))  # paired seeds sample the masks and switches too
    assert same(first_draws(1, {"seed": 7}), first_draws(2, {"seed": 7}))


def test_mipkd_full_teacher_mask_decodes_the_teacher_latent():
    torch.manual_seed(0)
    student, teacher = create("asid", 2, "tiny"), create("rcan", 2, "tiny").eval()
    method = create_method("mipkd", student, teacher, {"mask_ratio": 1.0, "block_level": False})
    inputs = step_inputs(method, student, teacher, *smooth_batch(2, batch=4))
    _, z_mix, _, teacher_feat = method.mix(inputs, method.student_taps[0], method.teacher_taps[0])
    from kd.methods.pairing import standardize_pair, tap_key

    _, t = standardize_pair(teacher_feat, teacher_feat)
    assert torch.allclose(z_mix, method.teacher_encoders[tap_key(method.student_taps[0])](t), atol=1e-6)
    assert "block" not in method.losses(inputs)


@pytest.mark.parametrize("name", ["dukd", "mipkd"])
def test_methods_running_the_teacher_themselves_accept_a_half_precision_teacher(name):
    torch.manual_seed(0)
    student, teacher = create("asid", 2, "tiny"), create("rcan", 2, "tiny").eval()
    method = create_method(name, student, teacher)
    teacher.to(torch.bfloat16)  # as accel.teacher_dtype does; the trainer hands the method float32 outputs
    lr, hr = smooth_batch(2, batch=4)
    with capture(student, method.student_taps) as s_feats:
        out = student(lr)
    with torch.no_grad(), capture(teacher, method.teacher_taps, detach=True) as t_feats:
        t_out = teacher(lr.to(torch.bfloat16)).float()
    for _ in range(4):  # both MiPKD branches
        terms = method.losses(StepInputs(lr, hr, out, t_out, dict(s_feats), {k: v.float() for k, v in t_feats.items()}))
        assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values())
