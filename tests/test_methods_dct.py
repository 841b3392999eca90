"""The `dct` method and `method.rec=dct`: the block DCT, the frequency weighting and the loss on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from kd.config import RunConfig, from_dict, resolve, run_id
from kd.errors import KdError
from kd.methods import create_method, loss_weights
from kd.methods.base import StepInputs, reconstruction
from kd.methods.dct import block_dct, dct_matrix, frequency_l1, frequency_weights
from kd.models import create

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cosine(u: int) -> torch.Tensor:
    """cos((2i + 1) u pi / 16), i = 0..7: the u-th DCT basis pattern along one axis, unnormalised."""
    i = torch.arange(8, dtype=torch.float64)
    return torch.cos((2 * i + 1) * u * math.pi / 16)


def test_the_dct_is_orthonormal_and_a_constant_block_is_pure_dc():
    d = dct_matrix()
    assert torch.allclose(d @ d.T, torch.eye(8, dtype=torch.float64), atol=1e-12)
    coefficients = block_dct(torch.full((1, 3, 8, 16), 0.25, dtype=torch.float64))
    assert coefficients.shape == (1, 3, 1, 2, 8, 8)
    expected = torch.zeros(8, 8, dtype=torch.float64)
    expected[0, 0] = 8 * 0.25  # sum of 64 pixels x (1/sqrt 8)^2: 8 x the block mean
    assert torch.allclose(coefficients, expected.expand_as(coefficients), atol=1e-12)


@pytest.mark.parametrize(("u", "v", "value"), [(3, 0, 4 * math.sqrt(2)), (2, 5, 4.0), (7, 7, 4.0)])
def test_a_single_frequency_pattern_has_one_coefficient(u, v, value):
    # x[i, j] = cos_u(i) cos_v(j); its coefficient is (a_u sum_i cos_u^2)(a_v sum_j cos_v^2) with sum cos^2 = 4
    # (8 for u = 0) and a_0 = sqrt(1/8), a_u = 1/2: (1/2 * 4)(sqrt(1/8) * 8) = 4 sqrt 2 for (3, 0), 2 * 2 otherwise.
    pattern = cosine(u)[:, None] * cosine(v)[None, :]
    coefficients = block_dct(pattern[None, None])[0, 0, 0, 0]
    assert coefficients[u, v].item() == pytest.approx(value, abs=1e-9)
    others = coefficients.clone()
    others[u, v] = 0
    assert others.abs().max().item() < 1e-9


def test_the_weighting_rises_linearly_from_dc_to_the_highest_frequency():
    w = frequency_weights(4.0)
    assert w[0, 0] == 1 and w[7, 7] == 4
    assert w[3, 4].item() == pytest.approx(1 + 3 * 7 / 14) and w[4, 3] == w[3, 4]
    assert torch.equal(frequency_weights(1.0), torch.ones(8, 8, dtype=torch.float64))


def test_frequency_l1_on_hand_computed_differences():
    base = torch.rand(2, 3, 16, 24, dtype=torch.float64)
    # a constant offset c is pure DC: 8c in each block, 1 of 64 coefficients, weight 1 -> c / 8
    assert frequency_l1(base + 0.1, base, gain=4.0).item() == pytest.approx(0.1 / 8)
    # the highest frequency with amplitude a: coefficient 4a at (7, 7), weight gain -> gain * 4a / 64
    pattern = 0.2 * (cosine(7)[:, None] * cosine(7)[None, :]).repeat(2, 3)
    assert frequency_l1(base + pattern, base, gain=4.0).item() == pytest.approx(4.0 * 4 * 0.2 / 64)
    assert frequency_l1(base + pattern, base, gain=1.0).item() == pytest.approx(4 * 0.2 / 64)


def test_images_are_cropped_to_whole_blocks_and_too_small_ones_refused():
    image = torch.rand(1, 3, 20, 13)
    assert block_dct(image).shape == (1, 3, 2, 1, 8, 8)
    assert torch.equal(block_dct(image), block_dct(image[..., :16, :8]))
    with pytest.raises(KdError, match="at least 8x8"):
        block_dct(torch.rand(1, 3, 7, 32))


def _inputs(rec: str = "l1") -> StepInputs:
    g = torch.Generator().manual_seed(0)
    hr, student_out, teacher_out = (torch.rand(2, 3, 32, 32, generator=g) for _ in range(3))
    return StepInputs(torch.rand(2, 3, 8, 8, generator=g), hr, student_out, teacher_out, rec=rec)


def test_the_method_compares_the_student_with_the_teacher_and_the_ground_truth():
    student, teacher = create("asid", 4, "tiny"), create("rcan", 4, "tiny")
    method = create_method("dct", student, teacher, {"gain": 3.0})
    inputs = _inputs()
    terms = method.losses(inputs)
    assert terms["rec"].item() == pytest.approx(torch.nn.functional.l1_loss(inputs.student_out, inputs.hr).item())
    assert terms["dct"].item() == pytest.approx(frequency_l1(inputs.student_out, inputs.teacher_out, 3.0).item())
    assert terms["dct_hr"].item() == pytest.approx(frequency_l1(inputs.student_out, inputs.hr, 3.0).item())
    assert loss_weights("dct") == {"rec": 1.0, "dct": 1.0, "dct_hr": 0.0}  # dct_hr logged, not trained
    with pytest.raises(KdError, match="method.options.gain must be a number >= 1"):
        create_method("dct", student, teacher, {"gain": 0.5})


def test_rec_dct_makes_every_methods_reconstruction_term_the_frequency_loss():
    inputs = _inputs(rec="dct")
    assert reconstruction(inputs).item() == pytest.approx(frequency_l1(inputs.student_out, inputs.hr).item())
    method = create_method("logits", create("asid", 4, "tiny"), create("rcan", 4, "tiny"))
    assert method.losses(inputs)["rec"].item() == pytest.approx(reconstruction(inputs).item())
    assert method.losses(_inputs())["rec"].item() == pytest.approx(
        torch.nn.functional.l1_loss(inputs.student_out, inputs.hr).item())


def test_rec_is_validated_and_changes_the_run_id_only_when_set():
    # At its default the key is left out of the hash (tests/test_committed_identity.py keeps the recorded ids).
    with pytest.raises(KdError, match="method.rec must be one of l1, dct"):
        resolve([("test", {"method": {"rec": "l2"}})])
    assert run_id(from_dict({"method": {"rec": "dct"}})) != run_id(RunConfig())


def test_runs_with_another_reconstruction_loss_compare_with_their_own_baseline(tmp_path):
    from kd.engine.siblings import no_kd_config
    from kd.report.runs import Run

    config = resolve([("test", {"method": {"name": "logits", "rec": "dct", "weights": {"kd": 2.0}}})])
    sibling = no_kd_config(config).method
    assert (sibling.name, sibling.rec, sibling.weights) == ("none", "dct", {})

    def run(summary_extra: dict) -> Run:
        return Run(tmp_path, {"run_id": "r", "student": "asid", "student_preset": "paper", "method": "none",
                              "scale": 4, "seed": 0, "profile": "cpu", "datasets": {}, **summary_extra})

    assert run({}).configuration == run({"reconstruction": "l1"}).configuration  # older records
    assert run({"reconstruction": "dct"}).configuration != run({}).configuration
    assert run({"reconstruction": "dct"}).student == "asid (paper, rec dct)"
