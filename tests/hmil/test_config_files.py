import pytest

from hmil.config import Config, describe
from hmil.errors import ConfigError


def test_defaults_are_the_measured_recipe():
    """The recipe benchmarks/results/accuracy.md chose (README "The method")."""
    c = Config()
    assert (c.model.head, c.model.init, c.train.bags_per_step) == ("per_class", "xavier", 1)
    assert (c.train.lr_schedule, c.loss.supcon_views) == ("constant", "true")
    assert (c.train.lr, c.train.epochs, c.train.class_balance) == (1e-4, 200, "auto")
    assert (c.train.ema_epochs, c.train.ema_decay) == (0.5, 0.0)
    assert (c.loss.schedule, c.loss.temperature) == ("linear", 0.1)
    assert c.loss.supcon.curriculum == "contrastive" and c.loss.ce_coarse.curriculum == "coarse"


def test_sections_validate_on_construction():
    from hmil.config import LossTerm, ModelConfig, TrainConfig

    with pytest.raises(ConfigError, match=r"model\.head: must be one of shared, per_class"):
        ModelConfig(head="bogus")
    with pytest.raises(ConfigError, match=r"train\.bags_per_step"):
        TrainConfig(bags_per_step=0)
    with pytest.raises(ConfigError, match="weight: must be ≥ 0"):
        LossTerm(weight=-1.0)
    with pytest.raises(ConfigError, match=r"loss\.supcon\.weight: must be ≥ 0"):
        Config.from_dict({"loss": {"supcon": {"weight": -1}}})


def test_yaml_round_trip_and_partial_nested_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 7\nloss:\n  ce_coarse:\n    weight: 2\n")
    c = Config.from_file(path)
    assert c.train.epochs == 7
    assert c.loss.ce_coarse.weight == 2.0 and c.loss.ce_coarse.curriculum == "coarse"
    assert Config.from_dict(c.to_dict()) == c
    (tmp_path / "out.yaml").write_text(c.to_yaml())
    assert Config.from_file(tmp_path / "out.yaml") == c


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("train:\n  epoch: 3\n", "unknown config key 'train.epoch'"),
        ("trian:\n  epochs: 3\n", "unknown config key 'trian'"),
        ("train:\n  epochs: many\n", "'train.epochs' must be an integer"),
        ("loss:\n  schedule: cubic\n", "loss.schedule"),
        ("model:\n  head: twin\n", "model.head"),
        ("train:\n  lr: -1\n", "train.lr"),
        ("- a\n- b\n", "must be a mapping"),
        ("train: [1, 2\n", "cannot parse YAML"),
    ],
)
def test_malformed_configs_name_the_key(tmp_path, yaml_text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        Config.from_file(path)


def test_cli_style_override_and_documentation():
    c = Config().override({"train.epochs": 3, "loss.supcon.enabled": False, "train.lr": None})
    assert c.train.epochs == 3 and not c.loss.supcon.enabled and c.train.lr == 1e-4
    lines = describe()
    assert any(line.strip().startswith("epochs: 200  # number of epochs") for line in lines)
    assert all("#" in line for line in lines)  # every field documented


def test_legacy_values_and_presets_are_declared_fields_that_pass_their_rules():
    from hmil.config import LEGACY_VALUES, legacy_values, preset_names
    from hmil.params import leaves

    fields = {name for name, _, _ in leaves(Config)}
    assert set(LEGACY_VALUES) <= fields
    old = Config.from_dict(legacy_values())
    assert (old.model.head, old.model.init) == ("shared", "kaiming")
    assert old.train.lr_schedule == "plateau"
    assert {name: Config.from_preset(name).model.head for name in preset_names()} == {
        "paper": "shared",
        "released": "shared",
    }
