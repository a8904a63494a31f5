"""The declaration machinery: rules, their messages and bad examples, and the one validator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from hmil.errors import ConfigError
from hmil.params import (
    Interval,
    Options,
    OrderedPair,
    Subset,
    allows_none,
    constraint,
    leaves,
    param,
    validate,
)


@pytest.mark.parametrize(
    ("rule", "good", "bad", "problem", "described"),
    [
        (Interval(int, 1, None, "left"), 1, 0, "must be ≥ 1, got 0", "≥ 1"),
        (Interval(float, 0, None, "neither"), 1e-9, 0.0, "must be > 0, got 0", "> 0"),
        (Interval(float, None, 1, "right"), -5.0, 1.5, "must be ≤ 1, got 1.5", "≤ 1"),
        (Interval(float, 0, 1, "left"), 0.0, 1.0, "must lie in [0, 1), got 1", "0 ≤ x < 1"),
        (Interval(float, 0, 1, "right"), 1.0, 0.0, "must lie in (0, 1], got 0", "0 < x ≤ 1"),
        (Interval(float, 0, 1, "neither"), 0.5, 1.0, "must lie in (0, 1), got 1", "0 < x < 1"),
        (Interval(int, 0, 10), 10, 11, "must lie in [0, 10], got 11", "0 ≤ x ≤ 10"),
        (Interval(int, 0, None, "left"), 3, 2.5, "must be an integer, got 2.5", "≥ 0"),
        (Interval(float, 0, None, "left"), 3, True, "must be a number, got True", "≥ 0"),
        (Options(("a", "b")), "b", "c", "must be one of a, b, got 'c'", "one of a, b"),
        (Options(lambda: ("x", "y")), "x", 1, "must be one of x, y, got 1", "one of x, y"),
    ],
)
def test_rules_accept_refuse_and_describe(rule, good, bad, problem, described) -> None:
    assert rule.problem(good, None) is None
    assert rule.problem(bad, None) == problem
    assert rule.describe() == described


def test_every_bad_example_of_a_rule_is_refused() -> None:
    rules = [
        Interval(int, 1, None, "left"), Interval(float, 0, 1, "neither"),
        Interval(float, 0, 1), Options(("a",)), Subset(("a", "b"), empty=False),
        OrderedPair(Interval(float, 0, 1)),
    ]  # fmt: skip
    for rule in rules:
        bad = rule.bad_values(None)
        assert len(bad) >= 2
        assert all(rule.problem(value, None) is not None for value in bad), rule


def test_an_interval_bound_may_name_another_field() -> None:
    @dataclass(frozen=True)
    class Grid:
        size: int = param(64, "side", Interval(int, 8, None, "left"))
        overlap: int = param(0, "shared pixels", Interval(int, 0, "size", "left"))

        def __post_init__(self) -> None:
            validate(self)

    assert Grid(size=64, overlap=63).overlap == 63
    with pytest.raises(ConfigError, match=r"^overlap: must lie in \[0, size 64\), got 64$"):
        Grid(size=64, overlap=64)
    assert Interval(int, 0, "size", "left").describe() == "0 ≤ x < size"
    assert Interval(int, 0, "size", "left").bad_values(Grid(size=16)) == ["many", -1, 16]


def test_subset_takes_a_comma_separated_string_or_a_tuple() -> None:
    logs = Subset(("tensorboard", "mlflow"))
    for good in ("", "mlflow", " tensorboard , mlflow", ("mlflow",), ()):
        assert logs.problem(good, None) is None
    assert logs.problem("wandb,mlflow", None) == (
        "must be empty or a comma-separated list of tensorboard, mlflow, got 'wandb,mlflow'"
    )
    formats = Subset(("h5", "pt"), empty=False)
    assert formats.problem((), None) is not None and formats.problem(("pt", "h5"), None) is None


def test_ordered_pair_checks_each_value_and_the_order() -> None:
    pair = OrderedPair(Interval(float, 0, 1))
    assert pair.problem((0.1, 0.2), None) is None
    assert pair.problem((0.3, 0.2), None) == "must have low ≤ high, got (0.3, 0.2)"
    assert pair.problem((0.1, 2.0), None) == "must lie in [0, 1], got 2 (in (0.1, 2.0))"
    assert pair.problem(0.5, None) == "must be a pair (low, high), got 0.5"


@dataclass
class _Inner:
    rate: float = param(0.5, "a rate", Interval(float, 0, 1))
    cap: int | None = param(None, "optional cap", Interval(int, 1, None, "left"))

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class _Outer:
    SECTION: ClassVar[str] = "outer"

    mode: str = param("a", "a mode", Options(("a", "b")))
    inner: _Inner = field(default_factory=_Inner, metadata={"help": "nested"})
    free: str = param("", "anything")

    def __post_init__(self) -> None:
        validate(self)


def test_validate_names_the_dotted_field_and_skips_unset_optionals() -> None:
    assert _Outer().inner.cap is None  # None is "not set" for an `int | None` field
    assert allows_none(_Inner, "cap") and not allows_none(_Inner, "rate")
    with pytest.raises(ConfigError, match=r"^outer\.mode: must be one of a, b, got 'c'$") as err:
        _Outer(mode="c")
    assert (err.value.where, err.value.problem) == ("outer.mode", "must be one of a, b, got 'c'")
    outer = _Outer()
    outer.inner.rate = 2.0  # changed after construction: the whole tree is checked again
    with pytest.raises(ConfigError, match=r"^outer\.inner\.rate: must lie in \[0, 1\], got 2$"):
        validate(outer)
    with pytest.raises(ConfigError, match=r"^cfg\.inner\.rate"):
        validate(outer, "cfg")
    with pytest.raises(ConfigError, match=r"^cap: must be ≥ 1, got 0$"):
        _Inner(cap=0)


def test_leaves_and_constraints_list_every_declared_field() -> None:
    names = [(name, owner.__name__) for name, owner, _ in leaves(_Outer)]
    assert names == [("mode", "_Outer"), ("inner.rate", "_Inner"), ("inner.cap", "_Inner"),
                     ("free", "_Outer")]  # fmt: skip
    described = {name: constraint(f) for name, _, f in leaves(_Outer)}
    assert described == {"mode": "one of a, b", "inner.rate": "0 ≤ x ≤ 1", "inner.cap": "≥ 1",
                         "free": ""}  # fmt: skip
