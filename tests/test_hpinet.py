"""HPINet: parity with the official output, official sizes and packaging (`module.` prefix), the patch grid and its
halving rule, patch matching in evaluation and training, taps, distillation in both roles."""

from __future__ import annotations

import pytest
import torch

from seed_steps import parameters, training_step
from kd.errors import KdError
from kd.methods import create_method
from kd.methods.pairing import body_stages, body_tail, tap_channels
from kd.models import capture, create, identify_architecture, load_official
from students.hpinet import Match, describe_state_dict, overlap_weights, patch_starts

FIXTURE = "hpinet_d16b3_x4"
# SEED_NETWORKS.md section 5 (official code, parameters())
PARAMS = {
    ("s", 2): 405_371, ("s", 3): 477_571, ("s", 4): 463_131,
    ("m", 2): 782_539, ("m", 3): 923_939, ("m", 4): 895_659,
    ("l", 2): 1_287_875, ("l", 3): 1_472_515, ("l", 4): 1_435_587,
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _fixture(parity_dir) -> dict:
    return torch.load(parity_dir / "seed" / f"{FIXTURE}.pt", weights_only=True)


# ---- exactness ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset,scale", sorted(PARAMS))
def test_official_sizes_have_the_official_parameter_counts(preset, scale):
    assert parameters("hpinet", scale, preset) == PARAMS[preset, scale]
    with torch.device("meta"):
        facts = describe_state_dict(create("hpinet", scale, preset).state_dict())
    assert facts["scale"] == scale and facts["model_type"] == preset.upper()


def test_paper_preset_is_hpinet_m():
    with torch.device("meta"):
        assert describe_state_dict(create("hpinet", 4).state_dict())["model_type"] == "M"


def test_official_file_with_module_prefix_loads_and_reproduces(parity_dir, tmp_path):
    d = _fixture(parity_dir)
    model = create(**d["config"], official_batch_matching=True)  # the fixture is a batch of 2 (see below)
    assert set(model.state_dict()) == set(d["state_dict"])
    path = tmp_path / "HPINet-X-x4.pth"
    torch.save({f"module.{k}": v for k, v in d["state_dict"].items()}, path)  # as the official checkpoints are saved
    load_official(model, path)
    with torch.no_grad():
        assert (model.eval()(d["input"]) - d["output"]).abs().max() <= 1e-4
    assert identify_architecture(d["state_dict"]) == "hpinet"
    assert describe_state_dict({f"module.{k}": v for k, v in d["state_dict"].items()})["prefix"] == "module."


def test_wrong_scale_and_wrong_size_are_explained(parity_dir):
    d = _fixture(parity_dir)
    fields = {k: v for k, v in d["config"].items() if k not in ("arch", "scale")}
    with pytest.raises(KdError, match=r"checkpoint is x4: upsampler has two x2 stages.*model is x2"):
        load_official(create("hpinet", 2, **fields), d["state_dict"])
    with pytest.raises(KdError, match=r"dim 16.*model is.*dim 40"):
        load_official(create("hpinet", 4, "s"), d["state_dict"])


# ---- the patch grid ------------------------------------------------------------------------------------------------


def _official_weight_loops(size: int, ps: int) -> torch.Tensor:
    """Effective weight of each row in the official patch_reverse: (number of patches covering it) x (1/2 for each
    overlap band containing it), from the official loops written out on a column of ones."""
    step = ps - 2
    total = torch.zeros(size)
    for i in range(0, size + step - ps, step):
        top, down = (size - ps, size) if i + ps > size else (i, i + ps)
        total[top:down] += 1
    for i in range(step, size + step - ps, step):
        top = size - ps if i + ps > size else i
        total[top:i + ps - step] /= 2
    return total


@pytest.mark.parametrize("size,ps,three_quarter_rows", [(33, 12, [21]), (24, 9, [15]), (24, 12, []), (20, 16, [])])
def test_halving_rule_gives_three_quarters_where_the_shifted_patch_overlaps_two(size, ps, three_quarter_rows):
    starts = patch_starts(size, ps)
    assert starts[-1] == size - ps and all(b - a == ps - 2 for a, b in zip(starts[:-2], starts[1:-1]))
    coverage = torch.zeros(size)
    for start in starts:
        coverage[start:start + ps] += 1
    effective = coverage * torch.tensor(overlap_weights(size, ps))
    assert torch.equal(effective, _official_weight_loops(size, ps))
    odd = [row for row in range(size) if effective[row] != 1]
    assert odd == three_quarter_rows and all(effective[row] == 0.75 for row in odd)


def test_matching_excludes_itself_and_stays_within_each_image():
    torch.manual_seed(0)
    patches = torch.rand(2, 3, 9, 4)
    patches[:, 2] = patches[:, 0]  # patch 0's best match is its twin, never itself
    with torch.no_grad():
        matched = Match(4).eval()(patches)
        official = Match(4, official_batch_matching=True).eval()(patches)
    for i in range(2):
        assert torch.equal(matched[i, 0], patches[i, 2]) and torch.equal(matched[i, 2], patches[i, 0])
    assert torch.equal(official[0], matched[0])
    assert torch.equal(official[1, 0], patches[0, 2])  # the official batch indexing: matches from the first image


def test_a_batched_forward_gives_each_image_its_batch_1_output(parity_dir):
    d = _fixture(parity_dir)  # a batch of 2 whose recorded output has the official batch quirk
    fields = {k: v for k, v in d["config"].items() if k != "arch"}
    ours, official = create("hpinet", **fields).eval(), create("hpinet", **fields, official_batch_matching=True)
    load_official(ours, d["state_dict"])
    load_official(official.eval(), d["state_dict"])
    with torch.no_grad():
        batched = ours(d["input"])
        alone = torch.cat([ours(d["input"][i:i + 1]) for i in range(2)])
        quirk = official(d["input"])
    assert (batched - alone).abs().max() <= 1e-5  # per-image matching: the batch does not change an image
    assert (alone[:1] - d["output"][:1]).abs().max() <= 1e-4  # at batch 1 the official output is the intended one
    assert (quirk - d["output"]).abs().max() <= 1e-4  # the field reproduces the fixture (tests/test_parity.py)
    assert (alone[1:] - d["output"][1:]).abs().max() > 1e-3  # there the second image took the first one's matches
    with pytest.raises(KdError, match="official_batch_matching must be true or false"):
        create("hpinet", 4, "tiny", official_batch_matching="yes")


def test_training_matching_is_a_seeded_straight_through_gumbel_sample():
    model = create("hpinet", 2, "tiny").train()
    x = torch.rand(2, 3, 16, 20)
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        outs.append(model(x))
    assert torch.equal(*outs)  # the noise comes from torch's global generator
    outs[0].abs().mean().backward()
    assert model.cross_match[0].norm.weight.grad.abs().sum() > 0  # the softmax's gradient reaches the matching
    model.eval()
    assert not torch.equal(model(x), outs[1])  # argmax in evaluation


def test_inputs_smaller_than_the_largest_patch_are_refused():
    model = create("hpinet", 2, "tiny")
    with pytest.raises(KdError, match=r"HPINet input 11x20 is smaller than its largest patch \(12 pixels\)"):
        model(torch.rand(1, 3, 11, 20))
    with pytest.raises(KdError, match="patch_size needs one entry per block"):
        create("hpinet", 2, "tiny", patch_size=[8])


# ---- taps and distillation ---------------------------------------------------------------------------------------


def test_stage_taps_are_the_block_outputs_and_pair_by_depth():
    torch.manual_seed(0)
    model = create("hpinet", 4, "tiny").eval()
    x = torch.rand(2, 3, 16, 20)
    with torch.no_grad(), capture(model, ["first_conv", "stages.?", "mid_convs.?"]) as feats:
        model(x)
    assert all(value.shape == (2, 8, 16, 20) for value in feats.values()) and len(feats) == 5
    assert torch.allclose(feats["stages.1"], feats["stages.0"] + feats["mid_convs.1"])
    assert body_stages(model) == ["stages.0"] and body_tail(model) == "stages.1"
    paper = create("hpinet", 4)  # patches of 24: the tap probe must grow to fit
    assert tap_channels(paper, ["stages.7"]) == {"stages.7": 56}


@pytest.mark.parametrize("role", ["student", "teacher"])
@pytest.mark.parametrize("method_name", ["logits", "fitnet", "fakd", "dckd"])
def test_one_distillation_step_in_either_role(tmp_path, role, method_name):
    torch.manual_seed(0)
    hpinet = create("hpinet", 4, "tiny")  # the shape of HPINet-S, shrunk for tests
    other = create("rcan" if role == "student" else "asid", 4, "tiny")
    student, teacher = (hpinet, other) if role == "student" else (other, hpinet)
    assert training_step(tmp_path, method_name, student, teacher).values["loss"] > 0


def test_attention_kd_says_hpinet_has_no_usable_map():
    with pytest.raises(KdError, match="teacher 'hpinet' exposes no attention map"):
        create_method("attention", create("asid", 4, "tiny"), create("hpinet", 4, "tiny"))
    with pytest.raises(KdError, match="student 'hpinet' has no"):
        create_method("attention", create("hpinet", 4, "tiny"), create("rcan", 4, "tiny"))
