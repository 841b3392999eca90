"""SwinFIR and SwinFIR-T: parity with the official outputs, official key layout and packaging, the official test
padding, the spatial-frequency block, taps, distillation in both roles (the teacher zoo: tests/test_teacher_zoo.py)."""

from __future__ import annotations

import pytest
import torch

from seed_steps import parameters, smooth_batch, training_step
from kd.errors import KdError
from kd.methods import StepInputs, create_method
from kd.methods.attention import cosine_distance, window_map_vectors
from kd.methods.pairing import body_stages, body_tail
from kd.models import capture, create, identify_architecture, load_official
from teachers.swinfir import SWINFIR_RGB_MEAN, describe_state_dict, mirror_pad
from teachers.swinir import SwinIR

FIXTURES = ["swinfir_e24d2w8_x4", "swinfir_t_e30d2x2w8_x4"]
ATTN_TAPS = "layers.*.residual_group.blocks.*.attn.attn_map"

# SEED_NETWORKS.md section 2 (official code, parameters(), buffers excluded)
PARAMS = {
    ("paper", 2): 14_350_211, ("paper", 3): 14_534_851, ("paper", 4): 14_497_923,
    ("t", 2): 947_220, ("t", 3): 955_335, ("t", 4): 966_696,
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _fixture(parity_dir, name: str) -> dict:
    return torch.load(parity_dir / "seed" / f"{name}.pt", weights_only=True)


def _fixture_model(d: dict, **overrides) -> torch.nn.Module:
    model = create(**{**d["config"], **overrides})
    load_official(model, d["state_dict"])
    return model.eval()


# ---- exactness ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset,scale", sorted(PARAMS))
def test_paper_presets_have_the_official_parameter_counts(preset, scale):
    assert parameters("swinfir", scale, preset) == PARAMS[preset, scale]
    with torch.device("meta"):
        facts = describe_state_dict(create("swinfir", scale, preset).state_dict())
    assert facts["scale"] == scale and facts["resi_connection"] == ("SFB" if preset == "paper" else "HSFB")
    assert facts["img_size"] == 60 and facts["window_size"] == 12


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_parity_fused_and_explicit_attention(parity_dir, name):
    d = _fixture(parity_dir, name)
    model = create(**d["config"])
    assert set(model.state_dict()) == set(d["state_dict"])
    load_official(model, d["state_dict"])
    with torch.no_grad():
        fused = model.eval()(d["input"])
        with capture(model, [ATTN_TAPS]) as maps:  # the explicit softmax path
            explicit = model(d["input"])
    assert len(maps) == sum(d["config"]["depths"])
    for out in (fused, explicit):
        assert out.shape == d["output"].shape
        assert (out - d["output"]).abs().max() <= 1e-4


def test_official_packaging_loads_and_a_wrong_scale_is_explained(parity_dir):
    d = _fixture(parity_dir, "swinfir_t_e30d2x2w8_x4")
    config = {k: v for k, v in d["config"].items() if k not in ("arch", "scale")}
    noise = {k: torch.zeros_like(v) for k, v in d["state_dict"].items()}
    model = load_official(create("swinfir", 4, **config), {"params_ema": d["state_dict"], "params": noise})
    with torch.no_grad():
        assert (model.eval()(d["input"]) - d["output"]).abs().max() <= 1e-4  # the EMA weights were chosen
    assert model.checkpoint_mismatch(d["state_dict"]) is None
    with pytest.raises(KdError, match=r"checkpoint is x4: upsampler has 48 output channels; model is x2"):
        load_official(create("swinfir", 2, **config), {"params_ema": d["state_dict"]})
    assert "checkpoint is x4" in create("swinfir", 2, **config).checkpoint_mismatch(d["state_dict"])


def test_swinfir_and_swinir_checkpoints_are_told_apart():
    swinfir = create("swinfir", 4, "tiny").state_dict()
    swinir = create("swinir", 4, "tiny").state_dict()
    assert identify_architecture(swinfir) == "swinfir" and identify_architecture(swinir) == "swinir"
    with pytest.raises(KdError, match=r"looks like a SwinFIR checkpoint.*create\('swinfir'"):
        load_official(create("swinir", 4, "tiny"), swinfir)
    with pytest.raises(KdError, match=r"looks like a SwinIR checkpoint.*create\('swinir'"):
        load_official(create("swinfir", 4, "tiny"), swinir)


def test_checkpoint_from_another_img_size_loads_and_reproduces(parity_dir):
    d = _fixture(parity_dir, "swinfir_e24d2w8_x4")  # trained "at" img_size 16: masks (4, 64, 64)
    model = _fixture_model(d, img_size=24)
    with torch.no_grad():
        assert (model(d["input"]) - d["output"]).abs().max() <= 1e-4


def test_other_resi_connection_checkpoint_is_named(parity_dir):
    d = _fixture(parity_dir, "swinfir_t_e30d2x2w8_x4")  # HSFB
    config = {**d["config"], "resi_connection": "SFB"}
    with pytest.raises(KdError, match="resi_connection HSFB"):
        load_official(create(**config), d["state_dict"])


# ---- the official test padding, range, dtype ---------------------------------------------------------------------


def test_padding_is_the_official_mirrored_full_window():
    model = create("swinfir", 4, "tiny").eval()
    assert model.padded_size(24, 20) == (32, 24)  # a multiple of the window still gets a whole extra window
    assert model.padded_size(5, 9) == (8, 16)
    x = torch.rand(1, 3, 24, 20)
    official = torch.cat([x, torch.flip(x, [2])], 2)[:, :, :32, :]  # swinfir_model.py test(), literally
    official = torch.cat([official, torch.flip(official, [3])], 3)[:, :, :, :24]
    assert torch.equal(mirror_pad(x, 32, 24), official)
    model.train()
    assert model.padded_size(24, 16) == (24, 16)  # training patches that fit the window run as they are
    assert model.padded_size(24, 20) == (32, 24)


def test_forward_is_padding_network_crop_and_uses_swinfir_mean():
    torch.manual_seed(0)
    model = create("swinfir", 2, "tiny").eval()
    assert torch.allclose(model.mean.flatten(), torch.tensor(SWINFIR_RGB_MEAN))
    x = torch.rand(2, 3, 16, 12)
    with torch.no_grad():
        out = model(x)
        direct = SwinIR.forward(model, mirror_pad(x, 24, 16))  # the network alone on the official padded input
    assert out.shape == (2, 3, 32, 24)
    assert torch.equal(out, direct[:, :, :32, :24])


def test_too_small_and_bad_inputs_raise_kderror():
    model = create("swinfir", 2, "tiny").eval()
    with pytest.raises(KdError, match=r"3x16 is too small.*at least 4 pixels"):
        model(torch.rand(1, 3, 3, 16))
    assert model(torch.rand(1, 3, 4, 4)).shape == (1, 3, 8, 8)
    for shape in [(3, 16, 16), (1, 1, 16, 16)]:
        with pytest.raises(KdError, match="SwinFIR"):
            model(torch.rand(*shape))


def test_invalid_config_raises_kderror_naming_swinfir():
    for fields, match in [({"resi_connection": "1conv"}, "resi_connection"), ({"in_chans": 1}, "in_chans"),
                          ({"upsampler": "nearest+conv"}, "upsampler"),
                          ({"embed_dim": 10, "num_heads": [3]}, "SwinFIR config: embed_dim 10 must be divisible")]:
        with pytest.raises(KdError, match=match):
            create("swinfir", 4, "tiny", **fields)


def test_bf16_network_runs_its_ffts_in_float32():
    torch.manual_seed(0)
    model = create("swinfir", 2, "tiny").eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        reference = model(x)
        low = model.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert low.dtype == torch.bfloat16 and (low.float() - reference).abs().max() < 0.1


# ---- taps and distillation ---------------------------------------------------------------------------------------


def test_taps_fire_on_the_spatial_frequency_blocks_and_pair_by_depth():
    torch.manual_seed(0)
    model = create("swinfir", 4, "tiny", depths=[2, 2], num_heads=[2, 2]).eval()
    x = torch.rand(2, 3, 16, 20)  # padded to 24 x 24
    with torch.no_grad(), capture(model, ["layers.?", "layers.*.conv", "conv_after_body", ATTN_TAPS]) as feats:
        model(x)
    for name in ("layers.0", "layers.1", "layers.0.conv", "layers.1.conv", "conv_after_body"):
        assert feats[name].shape == (2, 8, 24, 24), name
    assert feats["layers.0.residual_group.blocks.0.attn.attn_map"].shape == (2 * 9, 2, 64, 64)
    tiny = create("swinfir", 4, "tiny")  # one RSTB, fewer than its upsample.* modules
    assert body_stages(tiny) == ["layers.0"] and body_tail(tiny) == "conv_after_body"


@pytest.mark.parametrize("role", ["teacher", "student"])
@pytest.mark.parametrize("method_name", ["logits", "fitnet", "fakd", "dckd"])
def test_one_distillation_step_in_either_role(tmp_path, role, method_name):
    torch.manual_seed(0)
    swinfir = create("swinfir", 4, "tiny")
    other = create("asid" if role == "teacher" else "rcan", 4, "tiny")
    student, teacher = (other, swinfir) if role == "teacher" else (swinfir, other)
    assert training_step(tmp_path, method_name, student, teacher).values["loss"] > 0


def test_attention_kd_compares_the_windows_both_grids_share(tmp_path):
    torch.manual_seed(0)
    student, teacher = create("asid", 4, "tiny"), create("swinfir", 4, "tiny").eval()
    method = create_method("attention", student, teacher)
    assert method.mode == "window"
    lr, hr = smooth_batch(4, batch=4)  # 16 x 16: ASID's 2 x 2 windows, SwinFIR's 3 x 3 (evaluation padding to 24)
    with capture(student, method.student_taps) as s_feats:
        out = student(lr)
    with torch.no_grad(), capture(teacher, method.teacher_taps, detach=True) as t_feats:
        t_out = teacher(lr)
    s_tap, t_tap = method.student_taps[0], method.teacher_taps[0]
    assert t_feats[t_tap].shape[0] == 4 * 9 and s_feats[s_tap].shape[0] == 4 * 4
    att = method.losses(StepInputs(lr, hr, out, t_out, dict(s_feats), dict(t_feats)))["att"]
    expected = []
    for s, t in zip(method.student_taps, method.teacher_taps):
        shared = t_feats[t].view(4, 3, 3, *t_feats[t].shape[1:])[:, :2, :2].reshape(16, *t_feats[t].shape[1:])
        expected.append(cosine_distance(window_map_vectors(s_feats[s], "logits", 1e-8),
                                        window_map_vectors(shared, "logits", 1e-8)))
    assert torch.allclose(att, torch.stack(expected).mean())
    training_step(tmp_path, "attention", student, teacher)  # finite values, the student moved
    with pytest.raises(KdError, match="window maps do not align"):  # window 12 (the paper presets) vs ASID's 8
        create_method("attention", student, create("swinfir", 4, "tiny", window_size=12, img_size=24))


# ---- command line ------------------------------------------------------------------------------------------------


def test_list_models_shows_swinfir_t_as_the_lightweight_peer(capsys, readable):
    from kd.cli.list_cmd import models_table
    from kd.models import get_entry
    from kd.output import print_table

    print_table(models_table([get_entry("swinfir")]))  # the `kdbench list models` row, without the other networks
    readable(capsys.readouterr().out, ["swinfir", "14,497,923", "t=967K", "SwinFIR-T", "--student-preset t"])


def test_paper_profile_trains_swinfir_with_its_official_recipe():
    from kd.profiles import profile_layer, resolve_layers

    recipe = resolve_layers([profile_layer("paper"), ("cli", {"teacher": {"arch": "swinfir"}})]).teacher.train
    assert (recipe.steps, recipe.batch_size, recipe.lr_patch, recipe.lr) == (500_000, 32, 60, 2e-4)
    assert tuple(recipe.betas) == (0.9, 0.99) and recipe.ema_decay == 0.999
