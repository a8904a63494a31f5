"""The run every page shows, as session state: ``run`` (the run directory as a string, '' for
none) and the sidebar's picker ``run_picker``; a run typed or given in an address is admitted
only under the data roots and only when it is a run directory."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from hmil.errors import HMILError
from viewer.core import runs
from viewer.core.paths import check_under_roots

RUN_KEY = "run"
PICKER_KEY = "run_picker"
#: the picker's option for "no run: model only"
NO_RUN = ""


def current_run(state: Mapping[str, Any]) -> Path | None:
    """The run chosen (None: no run, model-only mode)."""
    value = state.get(RUN_KEY, NO_RUN)
    return Path(value) if value else None


def open_run(state: MutableMapping[str, Any], text: str, roots: Sequence[Path]) -> str | None:
    """Make the run at ``text`` the current one (and the picker's value); returns why not
    instead when it lies outside ``roots`` or is not a run directory (state unchanged)."""
    try:
        path = check_under_roots(text, roots)
    except HMILError as exc:
        return str(exc)
    if not runs.is_run_dir(path):
        return f"{path}: not a run directory (no config.yaml)"
    state[RUN_KEY] = str(path)
    state[PICKER_KEY] = str(path)
    return None


def label_run(path: str, roots: Sequence[Path]) -> str:
    """A picker option for people: the run's place under the first data root holding it."""
    if not path:
        return "(no run: model only)"
    p = Path(path)
    for root in roots:
        if p != root and p.is_relative_to(root):
            return f"{p.relative_to(root)}  ·  {root.name}/"
    return str(p)
