"""Every declared rule of every config class refuses its bad values with a ConfigError naming the
field, and the flags of the commands are built from the same declarations."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hmil.cli import build_parser, main
from hmil.config import Config
from hmil.errors import ConfigError
from hmil.overlay import HeatmapStyle
from hmil.params import leaves, replace, rule_of
from hmil.slides.extract import ExtractConfig
from hmil.slides.tissue import TilingConfig, TissueConfig
from viewer.state import ViewerSettings


def _viewer_settings(**kwargs: Any) -> ViewerSettings:
    return ViewerSettings(None, None, (), (), **kwargs)


#: each config class and how to build one from dotted field values
BUILDERS: dict[type, Callable[..., Any]] = {
    Config: lambda **kw: Config.from_dict(_dotted_to_nested(kw), source="test"),
    TilingConfig: lambda **kw: replace(TilingConfig(), kw),
    TissueConfig: lambda **kw: TissueConfig(**kw),
    ExtractConfig: lambda **kw: ExtractConfig(**kw),
    HeatmapStyle: lambda **kw: HeatmapStyle(**kw),
    ViewerSettings: _viewer_settings,
}


def _dotted_to_nested(values: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def _default_owner(cls: type, dotted: str) -> Any:
    """The default object holding field ``dotted`` (for rules whose bound is another field)."""
    obj = BUILDERS[cls]()
    for part in dotted.split(".")[:-1]:
        obj = getattr(obj, part)
    return obj


def _cases() -> Iterator[Any]:
    for cls in BUILDERS:
        for name, _, f in leaves(cls):
            rule = rule_of(f)
            if rule is None:
                continue
            for bad in rule.bad_values(_default_owner(cls, name)):
                yield pytest.param(cls, name, bad, id=f"{cls.__name__}.{name}={bad!r}")


CASES = list(_cases())


def test_the_rules_are_counted() -> None:
    """Declared rules per class (the report of this change quotes these numbers)."""
    counts = {
        cls.__name__: sum(rule_of(f) is not None for _, _, f in leaves(cls)) for cls in BUILDERS
    }
    assert counts == {"Config": 49, "TilingConfig": 16, "TissueConfig": 8, "ExtractConfig": 6,
                      "HeatmapStyle": 4, "ViewerSettings": 2}  # fmt: skip
    ruled = {(c.values[0], c.values[1]) for c in CASES}
    assert len(ruled) == sum(counts.values())  # every rule has at least one bad value tried


@pytest.mark.parametrize(("cls", "name", "bad"), CASES)
def test_every_rule_refuses_its_bad_values_naming_the_field(cls: type, name: str, bad: Any) -> None:
    with pytest.raises(ConfigError) as err:
        BUILDERS[cls](**{name: bad})
    where, problem = err.value.where, err.value.problem
    if cls is Config and where == "test":  # a YAML value of the wrong type: key in the problem
        assert problem.startswith(f"'{name}' must be")
    else:
        assert where == name, (where, problem)
        assert problem.startswith("must ") and ", got " in problem


def test_defaults_pass_every_rule() -> None:
    for build in BUILDERS.values():
        build()  # no ConfigError


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


#: command → (config class, its fields set by no flag of that command, and why)
COMMANDS: dict[str, tuple[type, dict[str, str]]] = {
    "train": (Config, {}),
    "tile": (TilingConfig, {"trident_names": "hmil tile always writes TRIDENT's names"}),
    "extract": (ExtractConfig, {"formats": "--format h5|pt|both"}),
    "heatmap": (HeatmapStyle, {}),
    "view": (ViewerSettings, {
        "run": "the RUN argument", "checkpoint": "--checkpoint (checked as a file first)",
        "data_roots": "--data-root (repeatable)", "roots": "computed from the others",
        "host": "--host", "allow_hosts": "--allow-host", "token": "--token",
        "allow_training": "--allow-training",
    }),
}  # fmt: skip


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_field_has_a_flag_with_its_declared_help(command: str) -> None:
    cls, elsewhere = COMMANDS[command]
    actions = {a.dest: a for a in _subparser(command)._actions if a.option_strings}
    for name, _, f in leaves(cls):
        if name in elsewhere:
            continue
        assert name in actions, f"hmil {command}: no flag for {name}"
        help_text = (actions[name].help or "").replace("%%", "%")
        assert help_text.startswith(f.metadata["help"]), (command, name)
        rule = rule_of(f)
        if rule is not None:
            assert rule.describe() in help_text, (command, name)


def test_train_keeps_every_flag_name_and_adds_the_dotted_ones() -> None:
    actions = {a.dest: a.option_strings for a in _subparser("train")._actions}
    short = {
        "data.labels": "--labels", "data.features": "--features", "data.splits": "--splits",
        "data.hierarchy": "--hierarchy", "data.folds": "--folds", "data.encoder": "--encoder",
        "train.epochs": "--epochs", "train.device": "--device", "train.seed": "--seed",
        "train.lr": "--lr", "train.bags_per_step": "--bags-per-step",
        "train.max_instances": "--max-instances", "train.lr_schedule": "--lr-schedule",
        "train.select_metric": "--select-metric", "train.class_balance": "--class-balance",
        "train.ema_epochs": "--ema-epochs", "train.deterministic": "--deterministic",
        "train.experiment_log": "--experiment-log", "launcher.kind": "--launcher",
        "launcher.workers": "--workers", "launcher.threads": "--threads",
        "launcher.partition": "--partition", "launcher.gpus_per_job": "--gpus-per-job",
        "launcher.cpus_per_job": "--cpus-per-job", "launcher.mem_gb": "--mem-gb",
        "launcher.time_min": "--time-min", "launcher.account": "--account",
        "launcher.qos": "--qos",
    }  # fmt: skip
    for key, flag in short.items():
        assert flag in actions[key] and f"--{key}" in actions[key], key
    for name, _, _ in leaves(Config):
        assert f"--{name}" in actions[name]
    for other in ("--out", "--preset", "--config", "--resume", "--strict", "--quiet",
                  "--print-config", "--detach"):  # fmt: skip
        assert any(other in options for options in actions.values())


def test_train_flags_override_the_config(tmp_path) -> None:
    from hmil.cli.train import build_config

    parser = _subparser("train")
    args = parser.parse_args(["--out", "r", "--train.weight_decay", "0.01", "--epochs", "7",
                              "--no-loss.supcon.enabled", "--model.head", "shared",
                              "--experiment-log", "tensorboard", "--launcher.extra",
                              "{constraint: a100}"])  # fmt: skip
    config = build_config(args)
    assert (config.train.weight_decay, config.train.epochs, config.model.head) == (
        0.01,
        7,
        "shared",
    )
    assert not config.loss.supcon.enabled and config.train.experiment_log == "tensorboard"
    assert config.launcher.extra == {"constraint": "a100"}
    assert build_config(parser.parse_args(["--out", "r"])) == Config()


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--epochs", "0"], "error: --epochs: must be ≥ 1, got 0"),
        (["--train.epochs", "0"], "error: --train.epochs: must be ≥ 1, got 0"),
        (
            ["--experiment-log", "wandb"],
            "error: --experiment-log: must be empty or a "
            "comma-separated list of tensorboard, mlflow, got 'wandb'",
        ),
        (["--loss.supcon.weight", "-1"], "error: --loss.supcon.weight: must be ≥ 0, got -1"),
        (["--workers", "0"], "error: --workers: must be ≥ 1, got 0"),
    ],
)
def test_train_names_the_flag_the_user_typed(tmp_path, capsys, argv: list[str], line: str) -> None:
    assert main(["train", "--out", str(tmp_path / "run"), *argv]) == 2
    assert capsys.readouterr().err.strip() == line
    assert not (tmp_path / "run").exists()


def test_a_bad_config_file_value_names_the_file_and_key(tmp_path, capsys) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  epochs: 0\n")
    argv = ["train", "--out", str(tmp_path / "r"), "--config", str(config), "--epochs", "3"]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"error: {config}: train.epochs: must be ≥ 1, got 0"


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["tile", "s.svs", "--out", "{tmp}/t", "--overlap", "300"],
         "error: --overlap: must lie in [0, patch_size 256), got 300"),
        (["tile", "s.svs", "--out", "{tmp}/t", "--tissue.min_brightness", "2"],
         "error: --tissue.min_brightness: must lie in [0, 1], got 2"),
        (["extract", "s.svs", "--patches", "{tmp}", "--out", "{tmp}/b", "--readers", "0"],
         "error: --readers: must be ≥ 1, got 0"),
        (["view", "--max-upload-mb", "0"], "error: --max-upload-mb: must be ≥ 1, got 0"),
    ],
)  # fmt: skip
def test_other_commands_name_the_flag(tmp_path, capsys, argv: list[str], line: str) -> None:
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    assert capsys.readouterr().err.strip() == line


def test_print_config_shows_ranges_and_choices(capsys) -> None:
    assert main(["train", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "  epochs: 200  # number of epochs E [≥ 1]" in out
    assert "  dropout: 0.0  # " in out and "[0 ≤ x < 1]" in out
    assert "[one of shared, per_class]" in out and "[one of kaiming, xavier, pytorch]" in out
    assert "    curriculum: 'coarse'  # " in out  # a section's own default, not the class's
