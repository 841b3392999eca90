from __future__ import annotations

import pytest

from kd.cli import main
from kd.config import (
    RunConfig,
    from_dict,
    parse_override,
    read_config_file,
    resolve,
    run_id,
    to_dict,
)
from kd.errors import KdError
from kd.profiles import PROFILES, profile_layer, resolve_layers


def _cfg(*overrides: str, profile: str = "cpu") -> RunConfig:
    return resolve([profile_layer(profile), *((f"--set {o}", parse_override(o)) for o in overrides)])


def test_profiles_resolve_and_differ():
    configs = {name: _cfg(profile=name) for name in PROFILES}
    assert configs["smoke"].student.preset == "tiny" and configs["smoke"].teacher.preset == "tiny"
    assert configs["cpu"].data.train == "291-train" and configs["cpu"].teacher.preset == "mini"
    assert configs["cpu"].eval.datasets == ["Set5", "Set14", "B100"]
    assert configs["paper"].data.train == "DIV2K"
    assert configs["demo"].data.train == "default" and configs["demo"].student.preset == "paper"
    assert len({run_id(c) for c in configs.values()}) == len(PROFILES)


def test_profile_teacher_recipe_follows_the_resolved_teacher():
    def teacher_train(*layers):
        return resolve_layers([profile_layer("paper"), *layers]).teacher.train

    rcan = teacher_train(("cli", {"teacher": {"arch": "rcan"}}))
    swinir = teacher_train(("cli", {"teacher": {"arch": "swinir_m"}}))  # an alias gets the architecture's recipe
    assert (rcan.lr, rcan.batch_size) == (1e-4, 16) and (swinir.lr, swinir.batch_size) == (2e-4, 32)
    assert teacher_train(("cli", {"teacher": {"arch": "swinir_light"}})).batch_size == 64
    later = teacher_train(("cli", {"teacher": {"arch": "swinir"}}), ("--set", {"teacher": {"train": {"lr": 1e-3}}}))
    assert later.lr == 1e-3 and later.batch_size == 32  # layers after the profile still win over its recipe
    with pytest.raises(KdError, match="swinir"):
        teacher_train(("cli", {"teacher": {"arch": "swinirr"}}))


def test_profile_method_weights_follow_the_teacher_family(monkeypatch):
    from dataclasses import replace

    tuned = replace(PROFILES["cpu"], method_weights={"cnn": {"lsfd": {"lsfd": 0.05}}})
    monkeypatch.setitem(PROFILES, "cpu", tuned)

    def weights(teacher, *layers):
        cli = ("cli", {"teacher": {"arch": teacher}, "method": {"name": "lsfd"}})
        return resolve_layers([profile_layer("cpu"), cli, *layers]).method.weights

    assert weights("rcan") == weights("han") == {"lsfd": 0.05}  # both CNN teachers
    assert weights("swinir") == {}  # another family keeps the method's own defaults
    overridden = weights("rcan", ("--set", {"method": {"weights": {"lsfd": 0.2, "rec": 2.0}}}))
    assert overridden == {"lsfd": 0.2, "rec": 2.0}  # layers after the profile still win
    assert resolve_layers([profile_layer("cpu"), ("cli", {"teacher": {"arch": "rcan"}, "method": {"name": "fitnet"}})
                           ]).method.weights == {}  # other methods untouched


def test_short_profiles_scale_dckd_s_history_schedule_into_their_runs():
    import torch

    from kd.methods import create_method
    from kd.models import create

    def resolved(profile, method, *layers):
        cli = ("cli", {"teacher": {"arch": "swinir"}, "method": {"name": method}})
        return resolve_layers([profile_layer(profile), cli, *layers])

    for profile in ("smoke", "demo", "cpu"):
        config = resolved(profile, "dckd")
        assert "history_start" not in config.method.options  # the contrast acts from step 0, as released
        assert config.method.options["history_every"][0] < config.train.steps, profile
        with torch.device("meta"):
            student, teacher = create("asid", 4, "tiny"), create("swinir", 4, "tiny")
        create_method("dckd", student, teacher, config.method.options).check_schedule(config.train.steps)
    assert resolved("cpu", "dckd").method.options == {"history_every": [4, 8, 12], "history_block": 400,
                                                      "ema_decay": 0.75}  # 1/250 of the released 250k iterations
    for profile in ("paper", "paper-dckd"):
        assert resolved(profile, "dckd").method.options == {}  # the released schedule
    assert resolved("cpu", "logits").method.options == {}  # other methods untouched
    given = resolved("cpu", "dckd", ("--set", {"method": {"options": {"history_every": [40]}}}))
    assert given.method.options["history_every"] == [40]  # layers after the profile still win


# Each paper's released training recipe (kd/profiles.py cites the files): optimiser, schedule, iterations, EMA, patch,
# batch, augmentation.
PAPER_RECIPES = {
    "paper-dckd": dict(optimizer="adam", lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, schedule="multistep",
                       milestones=[250_000], gamma=0.1, steps=250_000, ema_decay=0.999, lr_patch=48, batch_size=64),
    "paper-dukd": dict(optimizer="adam", lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, schedule="multistep",
                       milestones=[100_000, 200_000], gamma=0.1, steps=250_000, ema_decay=0.999, lr_patch=48,
                       batch_size=16),
    "paper-fakd": dict(optimizer="adam", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.0, schedule="multistep",
                       milestones=[149_000], gamma=0.5, steps=200_000, ema_decay=0.0, lr_patch=48, batch_size=16),
}


@pytest.mark.parametrize("name", sorted(PAPER_RECIPES))
def test_each_table_s_profile_carries_its_paper_s_released_recipe(name):
    from kd.config import validate
    from kd.engine.schedule import lr_at

    config = resolve_layers([profile_layer(name), ("cli", {"method": {"name": "logits"}})])
    validate(from_dict(to_dict(config)))  # what the run saves reads back and validates
    for key, value in PAPER_RECIPES[name].items():
        assert getattr(config.train, key) == value, (name, key)
    assert config.data.train == "DIV2K" and config.data.augment  # flips and rotations in every release
    assert config.eval.val_dataset == "DIV2K-val10" and "Urban100" in config.eval.datasets
    assert config.profile == name
    last = config.train.steps - 1
    expected_last = {"paper-dckd": 1e-4, "paper-dukd": 1e-6, "paper-fakd": 5e-5}[name]
    assert lr_at(config.train, last) == pytest.approx(expected_last)
    if name == "paper-fakd":  # halved from epoch 150 of 1,000 iterations: scheduler stepped before each epoch
        assert lr_at(config.train, 148_999) == 1e-4 and lr_at(config.train, 149_000) == 5e-5
    asid = resolve_layers([profile_layer("paper"), ("cli", {"method": {"name": "logits"}})])
    assert asid.train.optimizer == "adamw"  # `paper` stays ASID's recipe (the lightweight table)


def test_dukd_takes_the_released_settings_of_its_teacher_s_pair():
    def method(teacher, scale=4, *layers, profile="cpu"):
        cli = ("cli", {"teacher": {"arch": teacher}, "method": {"name": "dukd"}, "scale": scale})
        return resolve_layers([profile_layer(profile), cli, *layers]).method

    rcan = method("rcan")  # options/RCAN/dukd_rcan_x4c64b20g10_c64b6g10.yml: noisy prob 0, pixel weight 1
    assert rcan.options["noisy_prob"] == 0.0 and not rcan.options["zoom_out"] and rcan.weights["rec"] == 1.0
    assert method("han").options == rcan.options  # another CNN: RCAN's release
    swinir = method("swinir")  # options/Swinir/dukd_swinir_x4c180s36_c60s24.yml: noisy prob 0.3, pixel weight 5
    assert swinir.options["noisy_prob"] == 0.3 and swinir.weights["rec"] == 5.0 and swinir.weights["kd"] == 1.0
    assert method("swinir_light").weights["rec"] == 5.0  # another transformer: SwinIR's release
    rcan_x3 = method("rcan", 3)  # the x3 file differs: zoom-out, noisy prob 0.3, pixel weight 2
    assert rcan_x3.options["zoom_out"] and rcan_x3.weights["out_rec"] == 2.0 and rcan_x3.weights["rec"] == 2.0
    edsr_x2 = method("edsr", 2)
    assert edsr_x2.options["gt_tiles"] == 2 and edsr_x2.weights["rec"] == edsr_x2.weights["out_rec"] == 5.0
    assert method("rcan", 8).weights == {}  # no release for the pair: the method's own defaults
    assert method("swinir", 4, ("--set", {"method": {"weights": {"rec": 2.0}}})).weights["rec"] == 2.0  # user wins
    assert method("swinir", profile="paper-dukd").weights["rec"] == 5.0  # whatever the profile
    assert resolve_layers([profile_layer("cpu"), ("cli", {"teacher": {"arch": "swinir"}, "method": {"name": "lsfd"}})
                           ]).method.weights == {}  # other methods untouched


def test_the_saved_config_shows_the_released_dukd_settings(tmp_path):
    import yaml

    from kd.config import dump_yaml

    config = resolve_layers([profile_layer("smoke"), ("cli", {"teacher": {"arch": "swinir"},
                                                              "method": {"name": "dukd"}})])
    saved = yaml.safe_load(dump_yaml(config))["method"]
    assert saved["weights"]["rec"] == 5.0 and saved["options"]["noisy_prob"] == 0.3


def test_overrides_are_typed():
    config = _cfg("train.lr=2e-4", "train.steps=1e3", "train.betas=[0.9, 0.99]", "eval.datasets=Set5,Set14",
                  "eval.val_dataset=null", "data.augment=false", "method.weights.kd=0.5", "train.milestones=[0.5]")
    assert config.train.lr == 2e-4 and isinstance(config.train.lr, float)
    assert config.train.steps == 1000 and isinstance(config.train.steps, int)
    assert config.train.betas == (0.9, 0.99)
    assert config.eval.datasets == ["Set5", "Set14"]
    assert config.eval.val_dataset is None
    assert config.data.augment is False
    assert config.method.weights == {"kd": 0.5}
    assert config.train.milestones == [0.5]


def test_unknown_key_names_it_and_the_valid_keys():
    with pytest.raises(KdError) as info:
        _cfg("train.lrr=1")
    message = str(info.value)
    assert "'train.lrr'" in message and "--set train.lrr=1" in message
    assert "Did you mean 'train.lr'" in message and "batch_size" in message
    with pytest.raises(KdError, match="unknown config key 'trian'"):
        _cfg("trian.lr=1")


def test_bad_value_type_is_reported():
    with pytest.raises(KdError, match="train.steps.*expects int"):
        _cfg("train.steps=abc")
    with pytest.raises(KdError, match="train.steps.*expects int"):
        _cfg("train.steps=2.5")
    with pytest.raises(KdError, match="optimizer"):
        _cfg("train.optimizer=sgd")
    with pytest.raises(KdError, match="KEY=VALUE"):
        parse_override("train.lr")


def test_config_files_yaml_and_toml(tmp_path):
    (tmp_path / "a.yaml").write_text("train:\n  lr: 0.001\n  steps: 12\nmethod:\n  name: logits\n")
    (tmp_path / "b.toml").write_text('[train]\nlr = 0.003\n[eval]\ndatasets = ["Set5"]\n')
    (tmp_path / "bad.yaml").write_text("train:\n  stepz: 3\n")
    a = resolve([profile_layer("cpu"), ("a.yaml", read_config_file(tmp_path / "a.yaml"))])
    assert (a.train.lr, a.train.steps, a.method.name) == (0.001, 12, "logits")
    b = resolve([profile_layer("cpu"), ("b.toml", read_config_file(tmp_path / "b.toml"))])
    assert b.train.lr == 0.003 and b.eval.datasets == ["Set5"]
    with pytest.raises(KdError, match="'train.stepz' in bad.yaml"):
        resolve([profile_layer("cpu"), ("bad.yaml", read_config_file(tmp_path / "bad.yaml"))])
    with pytest.raises(KdError, match="not found"):
        read_config_file(tmp_path / "missing.yaml")


def test_round_trip_and_run_id_identity():
    config = _cfg("train.lr=3e-4", "method.name=fitnet")
    assert from_dict(to_dict(config)) == config
    assert run_id(from_dict(to_dict(config))) == run_id(config)
    assert run_id(_cfg("train.lr=3e-4", "method.name=fitnet", "data.workers=2", "threads=1")) == run_id(config)
    assert run_id(_cfg("train.lr=4e-4", "method.name=fitnet")) != run_id(config)
    assert run_id(config).startswith("asid-fitnet-rcan-x4-cpu-s0-")
    # the no-KD baseline does not depend on the teacher the command line names
    assert run_id(_cfg("teacher.arch=han")) == run_id(_cfg("teacher.arch=rcan"))


def test_cli_reports_unknown_key(capsys, tmp_path):
    code = main(["run", "--profile", "smoke", "--set", "eval.datasetz=Set5", "--out-dir", str(tmp_path)])
    assert code == 2
    assert "eval.datasetz" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
