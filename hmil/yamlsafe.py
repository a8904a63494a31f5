"""The one YAML reader of the project: configs, hierarchies and the viewer's config form.

``yaml.safe_load`` runs no code, but it still accepts three things that hurt here:

* anchors and aliases: a few hundred bytes of nested ``*alias`` lists ("billion laughs")
  become gigabytes as soon as something copies the result (``dataclasses.asdict`` does);
* duplicate keys, the last one silently winning: a hierarchy's fine class quietly moves to
  another parent;
* YAML 1.1's implicit types: ``yes``/``no``/``on``/``off`` become booleans (a label named
  ``no`` turns into ``False``), ``012`` is octal 10, ``1:20`` is 80, dates become ``date``
  objects, while ``1e-4`` stays a string.

:func:`load` refuses aliases, anchors, duplicate keys, tags other than the core ones, nesting
deeper than :data:`MAX_DEPTH` and texts over a size cap, and resolves plain scalars with the
YAML 1.2 core schema: only ``true``/``false`` (any case form of those two words) are booleans,
so ``enabled: false`` works and ``no`` stays the string ``"no"``. With ``strings_only=True``
every scalar is a string (a hierarchy holds nothing but class names). Every problem is a
:class:`YAMLRefused` (a ``yaml.YAMLError``) whose message is one line with the line number.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node

#: largest YAML text read (configs and hierarchies are a few KB)
MAX_YAML_BYTES = 1 << 20
#: deepest nesting of mappings/sequences (configs need 3)
MAX_DEPTH = 32

_TAG = "tag:yaml.org,2002:"
#: the tags a document may carry, explicitly or implicitly
ALLOWED_TAGS = frozenset(_TAG + t for t in ("str", "int", "float", "bool", "null", "map", "seq"))

#: YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution)
#: (tag, pattern, possible first characters; "" is the empty scalar)
_CORE_RESOLVERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("null", r"^(?:~|null|Null|NULL|)$", ("~", "n", "N", "")),
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", tuple("tTfF")),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", tuple("-+0123456789")),
    (
        "float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        tuple("-+0123456789."),
    ),
)


class YAMLRefused(yaml.YAMLError):
    """A YAML text that is malformed or uses a refused feature (one-line message)."""


def _refuse(problem: str, node_or_mark: Any) -> YAMLRefused:
    mark = getattr(node_or_mark, "start_mark", node_or_mark)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return YAMLRefused(problem + where)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader with the refusals of this module and YAML 1.2 core scalars."""

    # a fresh table per class (PyYAML copies the parent's on the first add_implicit_resolver)
    yaml_implicit_resolvers = {}  # noqa: RUF012

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _refuse(f"aliases (*{event.anchor}) are not allowed", event.start_mark)
        if getattr(event, "anchor", None) is not None:
            raise _refuse(f"anchors (&{event.anchor}) are not allowed", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _refuse(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        if node.tag not in ALLOWED_TAGS:
            raise _refuse(f"tag {node.tag} is not allowed", node)
        return super().construct_object(node, deep=deep)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key; SafeConstructor reports it below
                continue
            if duplicate:
                raise _refuse(f"duplicate key {key!r}", key_node)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _StringsLoader(_StrictLoader):
    """Every plain scalar is a string (no implicit typing at all)."""

    # a fresh table per class (PyYAML keeps it per class and copies it on the first add)
    yaml_implicit_resolvers = {}  # noqa: RUF012


def _construct_int(loader: yaml.SafeLoader, node: Node) -> int:
    text = str(loader.construct_scalar(node))  # type: ignore[arg-type]  # a ScalarNode here
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text, 10)  # YAML 1.2: a leading 0 is decimal, not octal


def _construct_float(loader: yaml.SafeLoader, node: Node) -> float:
    text = str(loader.construct_scalar(node)).lower()  # type: ignore[arg-type]  # a ScalarNode
    special = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}
    return special[text] if text in special else float(text)


for _name, _pattern, _first in _CORE_RESOLVERS:
    _StrictLoader.add_implicit_resolver(_TAG + _name, re.compile(_pattern), list(_first))
_StrictLoader.add_constructor(_TAG + "int", _construct_int)
_StrictLoader.add_constructor(_TAG + "float", _construct_float)


def load(text: str, *, strings_only: bool = False, max_bytes: int = MAX_YAML_BYTES) -> Any:
    """Parse one YAML document (see the module docstring for what is refused).

    Args:
        text: the YAML text.
        strings_only: every scalar as a string (for files of names, like hierarchies).
        max_bytes: refuse a longer text (UTF-8 bytes) before parsing it.

    Raises:
        YAMLRefused: malformed YAML, or a refused feature; the message is one line.
    """
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > max_bytes:
        raise YAMLRefused(f"YAML text of {size} bytes exceeds the {max_bytes}-byte limit")
    loader: _StrictLoader | None = None
    try:
        loader = (_StringsLoader if strings_only else _StrictLoader)(text)  # checks characters
        return loader.get_single_data()
    except YAMLRefused:
        raise
    except yaml.MarkedYAMLError as exc:
        problem = "; ".join(part for part in (exc.context, exc.problem) if part)
        raise _refuse(problem or "malformed YAML", exc.problem_mark or exc.context_mark) from None
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()
        raise YAMLRefused(first[0] if first else "malformed YAML") from None
    except (ValueError, OverflowError) as exc:  # e.g. a float literal Python cannot hold
        raise YAMLRefused(f"bad scalar ({exc})") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_file(
    path: str | Path, *, strings_only: bool = False, max_bytes: int = MAX_YAML_BYTES
) -> Any:
    """:func:`load` of a UTF-8 file, reading at most ``max_bytes + 1`` bytes of it.

    Raises:
        YAMLRefused: as :func:`load`, or a file over ``max_bytes``.
        OSError: the file cannot be read; UnicodeDecodeError: it is not UTF-8.
    """
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise YAMLRefused(f"YAML file larger than the {max_bytes}-byte limit")
    return load(data.decode("utf-8"), strings_only=strings_only, max_bytes=max_bytes)
