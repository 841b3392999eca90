"""MDSR: official sizes and keys, the multi-scale branches, the EDSR fingerprint order, distillation, the CLI."""

from __future__ import annotations

import pytest
import torch

from kd.errors import KdError
from kd.models import capture, create, identify_architecture, load_official
from kd.methods.pairing import body_stages, body_tail
from seed_steps import parameters, training_step

FIXTURE = "seed/mdsr_b2f16_x4.pt"


def test_paper_and_baseline_counts_equal_the_official_code():
    assert parameters("mdsr", 4) == 7_954_011  # SEED_NETWORKS.md sections 9 and 11: r80f64, scales [2, 3, 4]
    assert parameters("mdsr", 4, "baseline") == 3_227_227
    assert parameters("mdsr", 2) == parameters("mdsr", 3) == 7_954_011  # one network for every branch scale
    assert parameters("mdsr", 4, scales=None) == 5_948_955 + 705_280  # shared trunk + the x4 branch
    assert 300_000 <= parameters("mdsr", 4, "mini") <= 1_000_000


def test_fixture_builds_the_whole_multi_branch_network(parity_dir, tmp_path):
    fixture = torch.load(parity_dir / FIXTURE, map_location="cpu", weights_only=True)
    assert fixture["config"]["scales"] == [2, 3, 4] and fixture["config"]["scale"] == 4
    model = create(**fixture["config"])
    assert set(model.state_dict()) == set(fixture["state_dict"]) and model.branch == 2
    path = tmp_path / "MDSR.pt"
    torch.save({"state_dict": fixture["state_dict"]}, path)
    load_official(model, path).eval()
    with torch.no_grad():
        assert (model(fixture["input"]) - fixture["output"]).abs().max().item() <= 1e-4
    assert identify_architecture(fixture["state_dict"]) == "mdsr"  # not EDSR, whose keys it also has


def test_each_branch_runs_its_own_pre_process_and_upsampler():
    torch.manual_seed(0)
    models = {s: create("mdsr", s, "tiny", scales=[2, 3, 4]).eval() for s in (2, 3, 4)}
    weights = models[4].state_dict()
    x = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        for scale, model in models.items():
            model.load_state_dict(weights)
            with capture(model, ["pre_process.[0-9]", "upsample.[0-9]"]) as feats:
                assert model(x).shape == (1, 3, 10 * scale, 12 * scale)
            assert list(feats) == [f"pre_process.{scale - 2}", f"upsample.{scale - 2}"]


def test_other_branches_are_frozen_and_untouched_by_training():
    model = create("mdsr", 3, "tiny", scales=[2, 3, 4])
    frozen = {".".join(name.split(".")[:2]) for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"pre_process.0", "pre_process.2", "upsample.0", "upsample.2"}
    model(torch.rand(1, 3, 8, 8)).mean().backward()
    assert all((p.grad is None) != p.requires_grad for p in model.parameters())


def test_scale_outside_the_branches_and_bad_fields_are_refused():
    with pytest.raises(KdError, match=r"'scales' \[2, 3\] has no branch for x4"):
        create("mdsr", 4, "tiny", scales=[2, 3])
    with pytest.raises(KdError, match="'scales' takes distinct scales 2\\^n or 3"):
        create("mdsr", 4, "tiny", scales=[4, 5])
    with pytest.raises(KdError, match="'n_colors' must be 3"):
        create("mdsr", 4, "tiny", n_colors=1)


def test_mismatches_are_explained():
    with pytest.raises(KdError, match=r"checkpoint is x2: upsampler branches upsample\.0 x2.*model is x4"):
        load_official(create("mdsr", 4, "tiny"), create("mdsr", 2, "tiny").state_dict())
    with pytest.raises(KdError, match=r"checkpoint is scales \[2, 3, 4\].*\(build it with scales=\[2, 3, 4\]\)"):
        load_official(create("mdsr", 4, "tiny"), create("mdsr", 4, "tiny", scales=[2, 3, 4]).state_dict())
    with pytest.raises(KdError, match=r"looks like an MDSR checkpoint.*create\('mdsr', \.\.\.\)"):
        load_official(create("edsr", 4, "tiny"), create("mdsr", 4, "tiny").state_dict())
    with pytest.raises(KdError, match=r"looks like an EDSR checkpoint.*create\('edsr', \.\.\.\)"):
        load_official(create("mdsr", 4, "tiny"), create("edsr", 4, "tiny").state_dict())


def test_body_stages_skip_the_branches():
    model = create("mdsr", 4, "tiny", scales=[2, 3, 4])  # 3 pre_process branches against 2 body stages
    assert body_stages(model) == ["body.0"] and body_tail(model) == "body.1"


@pytest.mark.parametrize("method", ["logits", "fitnet", "fakd", "dckd"])
@pytest.mark.parametrize("student,teacher", [("asid", "mdsr"), ("mdsr", "rcan")])
def test_distils_and_is_distilled(tmp_path, student, teacher, method):
    step = training_step(tmp_path, method, student, teacher)  # finite values, the student moved
    assert all(r > 0 for r in step.health.values())


def test_attention_says_mdsr_has_no_attention_map():
    from kd.methods import create_method

    with pytest.raises(KdError, match="teacher 'mdsr' exposes no attention map"):
        create_method("attention", create("asid", 4, "tiny"), create("mdsr", 4, "tiny"))


def test_cli_trains_an_mdsr_teacher(tmp_path, monkeypatch):
    from kd.cli import main

    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    assert main(["teacher", "train", "--teacher", "mdsr", "--preset", "tiny", "--profile", "smoke"]) == 0
    [entry] = (tmp_path / "cache" / "teachers").glob("mdsr-tiny-x4-*")
    load_official(create("mdsr", 4, "tiny"), entry / "teacher.pt")
