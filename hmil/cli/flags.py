"""Command-line flags built from declared config fields, and field names turned back into flags.

A config class declares each field's type, rule and help once (:mod:`hmil.params`);
:func:`add_field_flags` makes one flag per field from that declaration (type, choices, help
with the accepted range and the default), its ``dest`` the field's dotted name. The library
reports a bad value by that name (``ConfigError("train.epochs", ...)``); :func:`flag_names`
and :func:`flag_where` let the dispatcher (:mod:`hmil.cli`) print the flag the user typed
instead (``error: --epochs: must be ≥ 1, got 0``).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from hmil.errors import HMILError
from hmil.params import Options, constraint, leaves, rule_of

ArgumentTarget = argparse.ArgumentParser | argparse._ArgumentGroup


def _value_type(hint: Any) -> Any:
    """The flag's value type for a field annotation (``int | None`` → ``int``)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and args:
        hint = args[0]
    return typing.get_origin(hint) or hint


def _mapping(text: str) -> dict[str, Any]:
    """A YAML/JSON mapping given on the command line (``{constraint: a100}``)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a mapping such as {{key: value}}, got {text!r}")
    return value


def field_help(f: dataclasses.Field[Any], default: Any = dataclasses.MISSING) -> str:
    """The declared help of ``f`` with its accepted values and ``default`` appended."""
    parts = [f.metadata.get("help", "")]
    extra = [constraint(f)] if constraint(f) else []
    if default is not dataclasses.MISSING:
        extra.append(f"default {default!r}" if isinstance(default, str) else f"default {default}")
    text = f"{parts[0]} [{'; '.join(extra)}]" if extra else parts[0]
    return text.replace("%", "%%")  # argparse formats help with %


class _SwitchAction(argparse.BooleanOptionalAction):
    """``--x`` / ``--no-x`` (and the dotted ``--section.x`` / ``--no-section.x``); the usage line
    names the first pair only, so it stays readable (the help lists all four)."""

    def format_usage(self) -> str:
        return " | ".join(self.option_strings[:2])


def add_field_flag(
    target: ArgumentTarget,
    owner: type,
    f: dataclasses.Field[Any],
    dest: str,
    option_strings: Sequence[str],
    default: Any = None,
    shown_default: Any = dataclasses.MISSING,
) -> argparse.Action:
    """One flag setting field ``f`` of dataclass ``owner`` into ``args.<dest>``.

    ``default`` is what the parser stores when the flag is absent (None: "not given", so a
    config file's value stays); ``shown_default`` is the default the help text names.
    """
    hint = typing.get_type_hints(owner)[f.name]
    kind = _value_type(hint)
    help_text = field_help(f, shown_default)
    if kind is bool:
        return target.add_argument(
            *option_strings, dest=dest, action=_SwitchAction,
            default=default, help=help_text,
        )  # fmt: skip
    rule = rule_of(f)
    kwargs: dict[str, Any] = {"dest": dest, "default": default, "help": help_text}
    if isinstance(rule, Options):  # the help lists the choices once ("one of ...")
        kwargs.update(choices=rule.values(), metavar="NAME")
    items = [a for a in typing.get_args(hint) if a is not Ellipsis]
    if kind is tuple and items and all(a in (int, float) for a in items):
        kwargs.update(type=items[0], nargs=len(items), metavar=("LOW", "HIGH")[: len(items)])
    elif kind is dict:
        kwargs.update(type=_mapping, metavar="MAPPING")
    elif kind in (int, float):
        kwargs.update(type=kind, metavar="N" if kind is int else "X")
    elif "choices" not in kwargs:
        kwargs["metavar"] = "TEXT"
    return target.add_argument(*option_strings, **kwargs)


def long_flag(name: str) -> str:
    """``batch_size`` → ``--batch-size``; a dotted name is kept as written in the config file
    and in errors (``--train.bags_per_step``)."""
    return "--" + (name if "." in name else name.replace("_", "-"))


def add_field_flags(
    target: ArgumentTarget,
    cls: type,
    aliases: Mapping[str, str | Sequence[str]] | None = None,
    *,
    prefix: str = "",
    dotted: bool = True,
    only: Iterable[str] | None = None,
    defaults: bool = False,
) -> dict[str, str]:
    """Flags for the fields of ``cls`` (nested sections included); returns dotted name → dest.

    Each field ``a.b`` gets the flags ``aliases["a.b"]`` (its familiar short names) and, when
    ``dotted``, ``--a.b``. ``only`` limits the fields; ``defaults`` stores the field's default
    when the flag is absent (else None: not given).
    """
    aliases = aliases or {}
    wanted = set(only) if only is not None else None
    made: dict[str, str] = {}
    for name, owner, f in leaves(cls):
        if wanted is not None and name not in wanted:
            continue
        alias = aliases.get(name, ())
        options = [alias] if isinstance(alias, str) else list(alias)
        if dotted or not options:
            options.append(long_flag(prefix + name))
        default = field_default(cls, name)
        dest = prefix + name
        add_field_flag(
            target, owner, f, dest, options, default=default if defaults else None,
            shown_default=default,
        )  # fmt: skip
        made[name] = dest
    return made


def field_default(cls: type, dotted: str) -> Any:
    """The default of field ``dotted`` in a default ``cls()`` (a nested section's own default,
    e.g. ``loss.ce_coarse.curriculum`` is ``coarse``), or the field's declared default when
    ``cls`` has fields without one."""
    try:
        obj: Any = cls()
    except TypeError:  # required fields: read the declaration
        obj = None
    if obj is not None:
        for part in dotted.split("."):
            obj = getattr(obj, part)
        return obj
    f = {f.name: f for f in dataclasses.fields(cls)}[dotted]
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def given(args: argparse.Namespace, flags: Mapping[str, str]) -> dict[str, Any]:
    """Dotted field name → value for the flags of ``flags`` (name → dest) that were given."""
    values = {name: getattr(args, dest, None) for name, dest in flags.items()}
    return {  # nargs flags give lists; config fields hold tuples
        name: tuple(value) if isinstance(value, list) else value
        for name, value in values.items()
        if value is not None
    }


def flag_names(parser: argparse.ArgumentParser) -> dict[str, tuple[str, ...]]:
    """Argument dest → its option strings, for every optional argument of ``parser``."""
    return {a.dest: tuple(a.option_strings) for a in parser._actions if a.option_strings}


def flag_where(exc: HMILError, flags: Mapping[str, Sequence[str]], argv: Sequence[str]) -> str:
    """The flag that sets the parameter an error names (a :class:`ConfigError`'s field).

    The flag the user typed when the parameter has several (``--epochs``, ``--train.epochs``).
    A dotted config key the user did not type (``launcher.extra``) came from a config file and
    keeps its name; any other parameter is shown as its flag (``weights`` → ``--weights``).
    """
    options = flags.get(exc.where, ())
    for option in options:
        if any(token == option or token.startswith(f"{option}=") for token in argv):
            return option
    return options[0] if options and "." not in exc.where else exc.where
