"""Parameter constraints declared once, as data, and the one validator that checks them.

A config field says what it accepts in its ``dataclasses.field`` metadata (:func:`param`): its
documentation (``help``) and a rule — :class:`Interval` (a numeric range), :class:`Options`
(one of a set of names, possibly read lazily from a registry) or :class:`Subset` (several of
them). :func:`validate` walks a dataclass instance, nested dataclasses included, and raises one
:class:`~hmil.errors.ConfigError` shape for every broken rule: ``where`` is the field's dotted
name (``train.epochs``), ``problem`` says what was expected and what was found
(``must be ≥ 1, got 0``). The same declarations document the fields (:func:`constraint`, shown
by ``hmil train --print-config``) and build the command-line flags (:mod:`hmil.cli.flags`); a
command line translates the dotted name into its flag, the library never names a flag.

Modelled on scikit-learn's ``_param_validation``; ``hmil train --print-config`` lists every
rule of the training config (``docs/cli.md``).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from hmil.errors import ConfigError

Closed = Literal["left", "right", "both", "neither"]
#: a bound: a number, another field of the same object (its name), or None (unbounded)
Bound = float | str | None


class Rule(Protocol):
    """What a field accepts: a problem sentence for a bad value, a description, bad examples."""

    def problem(self, value: Any, owner: Any) -> str | None:
        """None when ``value`` is accepted (``owner``: the object holding the field)."""

    def describe(self) -> str:
        """The rule in a few words (``≥ 1``, ``one of a, b``) for help texts."""

    def bad_values(self, owner: Any) -> list[Any]:
        """Values this rule refuses (for tests that try every rule)."""


def _number(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return _number(value)
    return repr(value) if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class Interval:
    """A number of type ``kind`` between ``left`` and ``right`` (None: unbounded on that side).

    A bound may name another field of the same object (e.g. ``overlap`` below ``patch_size``).
    ``closed`` says which ends belong to the interval, as scikit-learn's ``Interval``.
    """

    kind: type
    left: Bound
    right: Bound
    closed: Closed = "both"

    def _bound(self, bound: Bound, owner: Any) -> float | None:
        return getattr(owner, bound) if isinstance(bound, str) else bound

    def _label(self, bound: Bound, owner: Any) -> str:
        if isinstance(bound, str):
            value = self._bound(bound, owner) if owner is not None else None
            return bound if value is None else f"{bound} {_number(value)}"
        return _number(bound) if bound is not None else ""

    def _text(self, owner: Any) -> str:
        left_in = self.closed in ("left", "both")
        right_in = self.closed in ("right", "both")
        lo, hi = self._label(self.left, owner), self._label(self.right, owner)
        if self.left is not None and self.right is not None:
            return f"lie in {'[' if left_in else '('}{lo}, {hi}{']' if right_in else ')'}"
        if self.left is not None:
            return f"be {'≥' if left_in else '>'} {lo}"
        if self.right is not None:
            return f"be {'≤' if right_in else '<'} {hi}"
        return f"be a{'n integer' if self.kind is int else ' number'}"

    def describe(self) -> str:
        left_in = self.closed in ("left", "both")
        right_in = self.closed in ("right", "both")
        lo, hi = self._label(self.left, None), self._label(self.right, None)
        if self.left is not None and self.right is not None:
            return f"{lo} {'≤' if left_in else '<'} x {'≤' if right_in else '<'} {hi}"
        return self._text(None).removeprefix("be ")

    def problem(self, value: Any, owner: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a{'n integer' if self.kind is int else ' number'}, got {value!r}"
        if self.kind is int and not isinstance(value, int):
            return f"must be an integer, got {_shown(value)}"
        lo, hi = self._bound(self.left, owner), self._bound(self.right, owner)
        left_in = self.closed in ("left", "both")
        right_in = self.closed in ("right", "both")
        ok = (lo is None or (value >= lo if left_in else value > lo)) and (
            hi is None or (value <= hi if right_in else value < hi)
        )
        return None if ok else f"must {self._text(owner)}, got {_shown(value)}"

    def bad_values(self, owner: Any) -> list[Any]:
        step = 1 if self.kind is int else 0.5
        lo, hi = self._bound(self.left, owner), self._bound(self.right, owner)
        bad: list[Any] = ["many"]
        if lo is not None:
            bad.append(lo if self.closed in ("right", "neither") else self.kind(lo - step))
        if hi is not None:
            bad.append(hi if self.closed in ("left", "neither") else self.kind(hi + step))
        return bad


@dataclass(frozen=True)
class OrderedPair:
    """A ``(low, high)`` pair with ``low ≤ high``, each accepted by ``each``."""

    each: Interval

    def describe(self) -> str:
        return f"(low, high), low ≤ high, each {self.each.describe()}"

    def problem(self, value: Any, owner: Any) -> str | None:
        if not isinstance(value, tuple | list) or len(value) != 2:
            return f"must be a pair (low, high), got {_shown(value)}"
        for item in value:
            problem = self.each.problem(item, owner)
            if problem is not None:
                return f"{problem} (in {_shown(tuple(value))})"
        if value[0] > value[1]:
            return f"must have low ≤ high, got {_shown(tuple(value))}"
        return None

    def bad_values(self, owner: Any) -> list[Any]:
        low = [b for b in self.each.bad_values(owner) if not isinstance(b, str)]
        ok = self.each.left if isinstance(self.each.left, int | float) else 0
        return ["many", (1, 0) if ok == 0 else (ok + 1, ok), *[(b, b) for b in low]]


def registry_keys(module: str, name: str) -> Callable[[], tuple[str, ...]]:
    """A lazy list of the keys of registry ``module.name`` (read on first use, so a config
    module need not import the implementations, which may import the config)."""

    def keys() -> tuple[str, ...]:
        return tuple(getattr(importlib.import_module(module), name))

    return keys


@dataclass(frozen=True)
class Options:
    """One of a set of names: a tuple, or a callable returning it (e.g. :func:`registry_keys`)."""

    choices: tuple[str, ...] | Callable[[], Iterable[str]]

    def values(self) -> tuple[str, ...]:
        if callable(self.choices):
            return tuple(self.choices())
        return tuple(self.choices)

    def describe(self) -> str:
        return f"one of {', '.join(self.values())}"

    def problem(self, value: Any, owner: Any) -> str | None:
        if isinstance(value, str) and value in self.values():
            return None
        return f"must be {self.describe()}, got {_shown(value)}"

    def bad_values(self, owner: Any) -> list[Any]:
        return ["no-such-choice", 3]


@dataclass(frozen=True)
class Subset:
    """Several of a set of names (a tuple, or a callable returning it, as :class:`Options`):
    a tuple of them, or one comma-separated string."""

    choices: tuple[str, ...] | Callable[[], Iterable[str]]
    empty: bool = True

    def values(self) -> tuple[str, ...]:
        return Options(self.choices).values()

    def describe(self) -> str:
        some = f"a comma-separated list of {', '.join(self.values())}"
        return f"empty or {some}" if self.empty else some

    def problem(self, value: Any, owner: Any) -> str | None:
        if isinstance(value, str):
            items: list[Any] = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, tuple | list):
            items = list(value)
        else:
            return f"must be {self.describe()}, got {_shown(value)}"
        if (items or self.empty) and all(item in self.values() for item in items):
            return None
        return f"must be {self.describe()}, got {_shown(value)}"

    def bad_values(self, owner: Any) -> list[Any]:
        return ["no-such-choice", ("no-such-choice",), *([] if self.empty else [()])]


def param(
    default: Any = dataclasses.MISSING,
    help: str = "",
    rule: Rule | None = None,
    *,
    factory: Callable[[], Any] | None = None,
    repr: bool = True,
) -> Any:
    """A dataclass field carrying its documentation and its rule (``metadata``)."""
    metadata = {"help": help, "rule": rule}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata, repr=repr)
    return dataclasses.field(default=default, metadata=metadata, repr=repr)


def rule_of(f: dataclasses.Field[Any]) -> Rule | None:
    """The rule declared on field ``f`` (None: anything of its type)."""
    return f.metadata.get("rule")


def constraint(f: dataclasses.Field[Any]) -> str:
    """The rule of field ``f`` in a few words ("" when it has none)."""
    rule = rule_of(f)
    return rule.describe() if rule is not None else ""


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def allows_none(cls: type, name: str) -> bool:
    """Whether field ``name`` of ``cls`` is declared ``X | None`` (None = not set)."""
    return type(None) in typing.get_args(_hints(cls)[name])


def nested(cls: type, name: str) -> type | None:
    """The dataclass type of field ``name`` when it is a nested section, else None."""
    hint = _hints(cls)[name]
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def leaves(cls: type, prefix: str = "") -> Iterator[tuple[str, type, dataclasses.Field[Any]]]:
    """Every non-section field of ``cls`` and its nested sections: (dotted name, owner, field)."""
    for f in dataclasses.fields(cls):
        inner = nested(cls, f.name)
        if inner is not None:
            yield from leaves(inner, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", cls, f


def validate(obj: Any, where: str | None = None) -> None:
    """Check every declared rule of dataclass ``obj`` and of its nested sections.

    ``where`` names ``obj`` in errors; by default its class's ``SECTION`` (``train`` for
    :class:`hmil.config.TrainConfig`), else nothing: a standalone object's fields go by name.

    Raises:
        ConfigError: ``where`` = the field's dotted name, e.g. ``train.epochs``.
    """
    cls = type(obj)
    where = getattr(cls, "SECTION", "") if where is None else where
    prefix = f"{where}." if where else ""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if nested(cls, f.name) is not None:
            validate(value, f"{prefix}{f.name}")
            continue
        rule = rule_of(f)
        if rule is None or (value is None and allows_none(cls, f.name)):
            continue
        problem = rule.problem(value, obj)
        if problem is not None:
            raise ConfigError(f"{prefix}{f.name}", problem)


def replace(obj: Any, values: Mapping[str, Any]) -> Any:
    """A copy of dataclass ``obj`` with dotted field values applied (``tissue.glass_margin``
    sets that field of section ``tissue``); a section's error names its dotted field."""
    own = {key: value for key, value in values.items() if "." not in key}
    sections: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        if "." in key:
            section, rest = key.split(".", 1)
            sections.setdefault(section, {})[rest] = value
    for section, inner in sections.items():
        try:
            own[section] = replace(getattr(obj, section), inner)
        except ConfigError as exc:
            if exc.where.startswith(f"{section}."):
                raise
            raise ConfigError(f"{section}.{exc.where}", exc.problem) from None
    return dataclasses.replace(obj, **own)
