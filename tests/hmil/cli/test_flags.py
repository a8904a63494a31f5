"""Flags built from declared config fields (:mod:`hmil.cli.flags`): one flag per field with its
type, choices and help (range and default), dotted names for nested sections, switches as
``--x | --no-x``, and a config error's field turned back into the flag the user typed."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from hmil.cli.flags import (
    add_field_flags,
    field_default,
    flag_names,
    flag_where,
    given,
    long_flag,
)
from hmil.errors import ConfigError
from hmil.params import Interval, Options, param


@dataclass
class Inner:
    depth: int = param(3, "layers", Interval(int, 1, None))


@dataclass
class Toy:
    batch_size: int = param(16, "bags per step", Interval(int, 1, None))
    rate: float = param(0.5, "50% of the time", Interval(float, 0, 1))
    mode: str = param("fast", "how to run", Options(("fast", "slow")))
    name: str = param("x", "a name")
    pair: tuple[float, float] = param((0.1, 0.2), "low and high")
    extra: dict[str, int] = field(default_factory=dict, metadata={"help": "more"})
    shuffle: bool = param(True, "shuffle the bags")
    inner: Inner = field(default_factory=Inner, metadata={"help": "nested"})


def toy_parser(
    *, only: list[str] | None = None, dotted: bool = True, defaults: bool = False
) -> tuple[argparse.ArgumentParser, dict[str, str]]:
    parser = argparse.ArgumentParser(prog="toy")
    aliases = {"batch_size": "--bs"}
    made = add_field_flags(parser, Toy, aliases, only=only, dotted=dotted, defaults=defaults)
    return parser, made


def test_long_flag() -> None:
    assert long_flag("batch_size") == "--batch-size"
    assert long_flag("train.bags_per_step") == "--train.bags_per_step"


def test_one_flag_per_field_with_its_dest() -> None:
    parser, made = toy_parser()
    assert made["batch_size"] == "batch_size" and made["inner.depth"] == "inner.depth"
    flags = flag_names(parser)
    assert flags["batch_size"] == ("--bs", "--batch-size")
    assert flags["inner.depth"] == ("--inner.depth",)
    assert flags["shuffle"][:2] == ("--shuffle", "--no-shuffle")


def test_values_are_typed_and_absent_flags_are_none() -> None:
    parser, made = toy_parser()
    args = parser.parse_args(
        ["--bs", "8", "--mode", "slow", "--pair", "0.2", "0.4", "--extra", "{a: 1}",
         "--no-shuffle", "--inner.depth", "5"]
    )  # fmt: skip
    assert given(args, made) == {
        "batch_size": 8, "mode": "slow", "pair": (0.2, 0.4), "extra": {"a": 1},
        "shuffle": False, "inner.depth": 5,
    }  # fmt: skip
    assert args.rate is None and args.name is None  # not given: a config file's value stays
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "medium"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--extra", "[1, 2]"])


def test_defaults_are_stored_when_asked() -> None:
    parser, _ = toy_parser(defaults=True)
    args = parser.parse_args([])
    assert (args.batch_size, args.rate, args.mode, args.shuffle) == (16, 0.5, "fast", True)
    assert getattr(args, "inner.depth") == 3


def test_help_shows_range_default_and_metavars() -> None:
    parser, _ = toy_parser()
    text = " ".join(parser.format_help().split())
    assert "--mode NAME" in text and "one of fast, slow" in text and "default 'fast'" in text
    assert "--bs N" in text and "default 16" in text
    assert "--rate X" in text and "50% of the time" in text  # % survives argparse formatting
    assert "--pair LOW HIGH" in text and "--extra MAPPING" in text and "--name TEXT" in text
    usage = " ".join(parser.format_usage().split())
    assert "[--shuffle | --no-shuffle]" in usage


def test_only_and_undotted() -> None:
    parser, made = toy_parser(only=["batch_size", "name"], dotted=False)
    assert set(made) == {"batch_size", "name"}
    flags = flag_names(parser)
    assert flags["batch_size"] == ("--bs",) and flags["name"] == ("--name",)


def test_field_default_reads_nested_sections() -> None:
    assert field_default(Toy, "inner.depth") == 3
    assert field_default(Toy, "extra") == {}


@pytest.mark.parametrize(
    ("where", "argv", "shown"),
    [
        ("batch_size", ["--batch-size", "0"], "--batch-size"),
        ("batch_size", ["--bs=0"], "--bs"),
        ("batch_size", [], "--bs"),  # from a config file: its first flag
        ("inner.depth", [], "inner.depth"),  # a dotted key the user did not type keeps its name
        ("inner.depth", ["--inner.depth", "0"], "--inner.depth"),
        ("weights", [], "weights"),
    ],
)
def test_flag_where_names_the_flag_typed(where: str, argv: list[str], shown: str) -> None:
    flags = {"batch_size": ("--bs", "--batch-size"), "inner.depth": ("--inner.depth",)}
    assert flag_where(ConfigError(where, "must be ≥ 1, got 0"), flags, argv) == shown
