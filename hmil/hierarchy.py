"""Two-level label trees: coarse classes over fine classes.

A :class:`Hierarchy` is immutable and validated at construction, so every other module can trust
``parent`` and ``mapping``. Fine labels are the training targets; the coarse label of a slide is
always derived from its fine label.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hmil import yamlsafe
from hmil.errors import HierarchyError

#: Built-in trees. PANDA's coarse grouping is not published with the paper; this grouping
#: (benign {0}, low {1, 2}, high {3, 4, 5}; ISUP grade group >= 3 is clinically high risk)
#: is the project's choice, see docs/method.md ("Where the paper left a choice").
PRESETS: dict[str, dict[str, Any]] = {
    "bracs": {
        "name": "bracs",
        "coarse": ["benign", "atypical", "malignant"],
        "fine": {
            "N": "benign",
            "PB": "benign",
            "UDH": "benign",
            "FEA": "atypical",
            "ADH": "atypical",
            "DCIS": "malignant",
            "IC": "malignant",
        },
    },
    "panda": {
        "name": "panda",
        "coarse": ["benign", "low", "high"],
        "fine": {"0": "benign", "1": "low", "2": "low", "3": "high", "4": "high", "5": "high"},
    },
    "ccc": {
        "name": "ccc",
        "coarse": ["NILM", "abnormal"],
        "fine": {
            "NILM": "NILM",
            "ASC-US": "abnormal",
            "LSIL": "abnormal",
            "ASC-H": "abnormal",
            "HSIL": "abnormal",
            "SCC": "abnormal",
        },
    },
}


@dataclass(frozen=True)
class Hierarchy:
    """Coarse and fine class names and the fine→coarse parent map.

    Attributes:
        name: a label for logs and model cards.
        coarse: coarse class names, in coarse class-index order (Kc of them).
        fine: fine class names, in fine class-index order (Kf of them).
        parent: for each fine class index, the index of its coarse parent (length Kf).
    """

    name: str
    coarse: tuple[str, ...]
    fine: tuple[str, ...]
    parent: tuple[int, ...]

    def __post_init__(self) -> None:
        where = f"hierarchy '{self.name}'"
        if len(self.coarse) < 1 or len(self.fine) < 2:
            raise HierarchyError(where, "needs at least one coarse and two fine classes")
        for level, names in (("coarse", self.coarse), ("fine", self.fine)):
            if any(not isinstance(n, str) or not n for n in names):
                raise HierarchyError(where, f"{level} class names must be non-empty strings")
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise HierarchyError(where, f"duplicate {level} class name(s): {', '.join(dup)}")
        if len(self.parent) != len(self.fine):
            raise HierarchyError(where, "parent must list one coarse index per fine class")
        for fine_name, p in zip(self.fine, self.parent, strict=True):
            if not 0 <= p < len(self.coarse):
                raise HierarchyError(where, f"fine class '{fine_name}' has no valid parent")
        orphans = [c for k, c in enumerate(self.coarse) if k not in self.parent]
        if orphans:
            raise HierarchyError(
                where, f"coarse class(es) without any fine class: {', '.join(orphans)}"
            )

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "hierarchy") -> Hierarchy:
        """Build from ``{name, coarse: [..], fine: {fine_name: coarse_name, ...}}``.

        Raises :class:`HierarchyError` naming ``source`` for a fine class whose parent is
        missing or unknown, a parent that is itself a fine class (a cycle), or duplicates.
        """
        if not isinstance(data, dict):
            raise HierarchyError(source, "expected a mapping with keys 'coarse' and 'fine'")
        unknown = set(data) - {"name", "coarse", "fine"}
        if unknown:
            raise HierarchyError(source, f"unknown key(s): {', '.join(sorted(unknown))}")
        coarse = data.get("coarse")
        fine = data.get("fine")
        if not isinstance(coarse, list) or not coarse:
            raise HierarchyError(source, "'coarse' must be a non-empty list of class names")
        if not isinstance(fine, dict) or not fine:
            raise HierarchyError(source, "'fine' must map each fine class to its coarse parent")
        coarse_names = tuple(str(c) for c in coarse)
        dup = sorted({c for c in coarse_names if coarse_names.count(c) > 1})
        if dup:
            raise HierarchyError(source, f"duplicate coarse class name(s): {', '.join(dup)}")
        fine_names = tuple(str(f) for f in fine)
        parents: list[int] = []
        for fine_name, parent_name in fine.items():
            fine_name = str(fine_name)
            if parent_name is None or str(parent_name) == "":
                raise HierarchyError(source, f"fine class '{fine_name}' has no parent")
            parent_name = str(parent_name)
            if parent_name in coarse_names:
                parents.append(coarse_names.index(parent_name))
            elif parent_name in fine_names:
                raise HierarchyError(
                    source,
                    f"fine class '{fine_name}' has parent '{parent_name}', which is itself a fine "
                    "class (a cycle or a third level); parents must be coarse classes",
                )
            else:
                raise HierarchyError(
                    source, f"fine class '{fine_name}' has unknown parent '{parent_name}'"
                )
        name = str(data.get("name") or Path(source).stem)
        try:
            return cls(name=name, coarse=coarse_names, fine=fine_names, parent=tuple(parents))
        except HierarchyError as exc:
            raise HierarchyError(source, exc.problem) from None

    @classmethod
    def from_file(cls, path: str | Path) -> Hierarchy:
        """Load a YAML or JSON file in the contract's format.

        YAML goes through :mod:`hmil.yamlsafe` with every scalar kept a string, so class names
        such as ``no``, ``on`` or ``012`` stay what they say; duplicate keys (YAML or JSON) are
        an error instead of silently re-parenting a class.
        """
        p = Path(path)
        if not p.is_file():
            raise HierarchyError(p, "hierarchy file not found")
        try:
            if p.suffix.lower() == ".json":
                data = _load_json(p)
            else:
                data = yamlsafe.load_file(p, strings_only=True)
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise HierarchyError(p, f"cannot parse hierarchy file ({first})") from None
        return cls.from_dict(data, source=str(p))

    @classmethod
    def preset(cls, name: str) -> Hierarchy:
        """A built-in tree: ``bracs``, ``panda`` or ``ccc``."""
        key = name.lower()
        if key not in PRESETS:
            raise HierarchyError(
                name, f"unknown hierarchy preset (known: {', '.join(sorted(PRESETS))})"
            )
        return cls.from_dict(PRESETS[key], source=f"preset '{key}'")

    @classmethod
    def resolve(cls, name_or_path: str | Path | Hierarchy) -> Hierarchy:
        """A preset name, a YAML/JSON path, or an existing Hierarchy."""
        if isinstance(name_or_path, Hierarchy):
            return name_or_path
        text = str(name_or_path)
        if text.lower() in PRESETS:
            return cls.preset(text)
        if Path(text).suffix.lower() in {".yaml", ".yml", ".json"} or Path(text).exists():
            return cls.from_file(text)
        return cls.preset(text)

    # ---- views --------------------------------------------------------------------------
    @property
    def n_coarse(self) -> int:
        return len(self.coarse)

    @property
    def n_fine(self) -> int:
        return len(self.fine)

    @cached_property
    def mapping(self) -> np.ndarray:
        """The Kf×Kc one-hot matrix M with ``M[j, parent[j]] = 1`` (float32)."""
        m = np.zeros((self.n_fine, self.n_coarse), dtype=np.float32)
        m[np.arange(self.n_fine), np.asarray(self.parent)] = 1.0
        return m

    def parent_of(self, fine_name: str) -> str:
        """Coarse name of a fine class name."""
        return self.coarse[self.parent[self.fine_index(fine_name)]]

    def fine_index(self, fine_name: str) -> int:
        try:
            return self.fine.index(fine_name)
        except ValueError:
            raise HierarchyError(
                self.name, f"unknown fine label '{fine_name}' (known: {', '.join(self.fine)})"
            ) from None

    def children(self, coarse_index: int) -> list[int]:
        """Fine class indices under one coarse class."""
        return [j for j, p in enumerate(self.parent) if p == coarse_index]

    def to_dict(self) -> dict[str, Any]:
        """The contract's YAML/JSON form (round-trips through :meth:`from_dict`)."""
        return {
            "name": self.name,
            "coarse": list(self.coarse),
            "fine": {f: self.coarse[p] for f, p in zip(self.fine, self.parent, strict=True)},
        }

    def same_as(self, other: Hierarchy) -> bool:
        """True when both trees have the same classes in the same order (names may differ)."""
        return (self.coarse, self.fine, self.parent) == (other.coarse, other.fine, other.parent)


def _load_json(path: Path) -> Any:
    """A JSON hierarchy file (size-capped like YAML); a repeated key is a ValueError."""
    with open(path, "rb") as handle:
        data = handle.read(yamlsafe.MAX_YAML_BYTES + 1)
    if len(data) > yamlsafe.MAX_YAML_BYTES:
        raise ValueError(f"JSON file larger than the {yamlsafe.MAX_YAML_BYTES}-byte limit")
    return json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out
