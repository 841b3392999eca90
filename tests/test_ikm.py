"""U-HDN+IKM: paper-preset size, per-sample kernel modulation in evaluation, the official update in training, the
ResNet body against the official code, refused configurations, packaging, taps and distillation steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from kd.errors import KdError
from kd.methods.pairing import body_stages, body_tail
from kd.models import capture, create, load_official
from kd.models.loading import identify_architecture
from seed_steps import parameters, training_step
from students.ikm import IKM, kernel_modulation

FIXTURES = Path(__file__).parent / "fixtures"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_paper_preset_has_the_official_parameter_counts():
    assert parameters("ikm", 4) == 1_400_131  # the paper's 1400.1K
    assert parameters("ikm", 3) == 1_402_435
    assert parameters("ikm", 2) == 1_390_915


def test_seed_fixture_config_builds_the_official_key_set(parity_dir):
    fixture = torch.load(parity_dir / "seed" / "ikm_uhdn_c16b1g4_x4.pt", map_location="cpu", weights_only=True)
    model = create(**fixture["config"])
    assert set(model.state_dict()) == set(fixture["state_dict"])
    assert identify_architecture(fixture["state_dict"]) == "ikm"


def test_resnet_body_matches_the_official_output():
    fixture = torch.load(FIXTURES / "ikm_resnet_c8b2u2_x2.pt", map_location="cpu", weights_only=True)
    model = load_official(create(**fixture["config"]), fixture["state_dict"], strict=True).eval()
    with torch.no_grad():
        output = model(fixture["input"])
    assert (output - fixture["output"]).abs().max().item() <= 1e-4


def test_modulation_matches_its_definition():
    x = torch.randn(2, 5, 7, 8)
    got = kernel_modulation(x, 3)
    for b in range(2):
        for c in range(5):
            share = F.adaptive_avg_pool2d((x[b, c] >= 0).float()[None], 3).flatten()
            expected = 1 + torch.sigmoid(9 * torch.softmax(share, 0) - 1)
            assert torch.allclose(got[b, c].flatten(), expected)
    assert torch.allclose(kernel_modulation(x.relu(), 3), torch.full_like(got, 1.5))  # ReLU outputs: uniform 1.5


def test_each_sample_gets_its_own_kernels():
    model = create("ikm", 2, "tiny").eval()
    batch = torch.rand(3, 3, 6, 5)
    with torch.no_grad():
        together = model(batch)
        alone = torch.cat([model(batch[i:i + 1]) for i in range(3)])
    assert (together - alone).abs().max().item() <= 1e-5


def test_training_gradient_is_the_official_update():
    # Official: the batch-repeated modulated kernel's gradient, averaged over the batch (straight-through: the
    # modulation factor is not applied); the input gets the ordinary gradient through the modulated kernels.
    torch.manual_seed(0)
    layer = IKM(4, 6, 3, KA=True)
    x = torch.randn(3, 4, 5, 6, requires_grad=True)
    target = torch.randn(3, 6, 5, 6)
    F.l1_loss(layer(x), target).backward()

    kernels = [(layer.Conv2d.weight * m).detach().requires_grad_() for m in kernel_modulation(x, 3)]
    x_ref = x.detach().clone().requires_grad_()
    out = torch.cat([F.conv2d(x_ref[b:b + 1], kernels[b], padding=1) for b in range(3)])
    F.l1_loss(out, target).backward()
    assert torch.allclose(layer.Conv2d.weight.grad, torch.stack([k.grad for k in kernels]).mean(0), atol=1e-6)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-6)


@pytest.mark.parametrize("fields, message", [
    ({"net_type": "CNN"}, "'net_type' 'CNN' cannot be built by the official code"),
    ({"net_type": "Dense"}, "'net_type' must be one of UHDN, ResNet"),
    ({"n_units": 5}, "'n_units' must be 6 with net_type 'UHDN'"),
    ({"n_colors": 1}, "'n_colors' must be 3"),
    ({"groups": 3}, "'groups' \\(3\\) must divide 'n_channels' \\(8\\)"),
    ({"growth_rate": 0}, "'growth_rate'"),
])
def test_unbuildable_configurations_are_refused(fields, message):
    with pytest.raises(KdError, match=message):
        create("ikm", 4, "tiny", **fields)


def test_official_packaging_loads_and_a_wrong_scale_is_explained(tmp_path):
    fixture = torch.load(FIXTURES / "ikm_resnet_c8b2u2_x2.pt", map_location="cpu", weights_only=True)
    path = tmp_path / "IKM+ResNet_x2.pth"
    torch.save(fixture["state_dict"], path)
    config = {k: v for k, v in fixture["config"].items() if k not in ("arch", "scale")}
    load_official(create("ikm", 2, **config), path)
    with pytest.raises(KdError, match=r"checkpoint is x2: its upsampling conv tail.0.0 has 32 output channels"):
        load_official(create("ikm", 4, **config), path)


def test_body_taps_are_the_blocks_at_lr_resolution():
    model = create("ikm", 4, "tiny")
    assert body_stages(model) == ["body.0"] and body_tail(model) == "body.1"
    with capture(model, ["input", "body.[0-9]"]) as feats:
        model(torch.rand(2, 3, 7, 9))
    assert {tuple(v.shape[1:]) for v in feats.values()} == {(8, 7, 9)}


@pytest.mark.parametrize("method", ["logits", "fitnet", "fakd", "dckd"])
def test_trains_as_a_student_of_rcan(tmp_path, method):
    training_step(tmp_path, method, "ikm")


@pytest.mark.parametrize("method", ["logits", "fakd"])
def test_teaches_asid(tmp_path, method):
    training_step(tmp_path, method, "asid", teacher="ikm")
