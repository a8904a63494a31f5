"""The slide page's address: every view is a link (pure functions over session state).

The URL carries what the slide page shows — run, slide, fold, level, label, the viewport and
the style — so a reload, a pasted link or the browser's back button shows the same picture.
Each parameter is declared once in :data:`PARAMS` with the session-state key it sets and how
its text is read; a value that does not parse is ignored with a note, never used.

Two writers share the address:

* the page writes it (through ``st.query_params``, which pushes a browser history entry) when a
  *driving* parameter changes — run, source, slide, fold, list, style — so back and forward
  step through slides;
* the deep-zoom view writes the *riding* ones it changes itself — level, label, opacity, mode
  and the viewport ``x``, ``y``, ``zoom`` — in place (``history.replaceState``), with no entry
  and no rerun.

So the page applies an incoming address only when it is not the one it wrote last (a new
session, a pasted link, back/forward): :func:`incoming_changed`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from hmil.overlay import CMAPS, NORMALIZATIONS

#: session-state keys of this module
WRITTEN_KEY = "_address_written"  # the parameters the page wrote last
VIEWPORT_KEY = "dz_viewport"  # a viewport request for the view: {x, y, zoom, nonce}
NOTES_KEY = "_address_notes"  # why parameters of the last incoming address were ignored
SLIDE_SHOWN_KEY = "_slide_shown"  # the slide whose label defaults were applied
#: the parameters of the viewport (written by the view, read back when an address is applied)
VIEWPORT = ("x", "y", "zoom")
SOURCES = ("run", "upload", "file")
MODES = ("single", "all")
LISTS = ("all", "wrong_fine", "wrong_coarse", "cohort")
#: parameter value → session value of the ``range`` parameter (shared or per-label scale)
RANGES = {"level": False, "label": True}


def _choice(options: tuple[str, ...]) -> Callable[[str], Any]:
    return lambda text: text if text in options else None


def _number(lo: float, hi: float) -> Callable[[str], Any]:
    def parse(text: str) -> float | None:
        try:
            value = float(text)
        except ValueError:
            return None
        return value if math.isfinite(value) and lo <= value <= hi else None

    return parse


def _text(text: str) -> str | None:
    """Any short text without control characters (slide ids, labels, paths are checked later
    against what exists)."""
    clean = text.strip()
    ok = 0 < len(clean) <= 1024 and all(ch.isprintable() for ch in clean)
    return clean if ok else None


def _fold(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) <= 4 else None


def _flag(text: str) -> bool | None:
    return {"1": True, "0": False, "true": True, "false": False}.get(text.lower())


def _range(text: str) -> bool | None:
    return RANGES.get(text)


@dataclass(frozen=True)
class Param:
    """One URL parameter of the slide page.

    Attributes:
        name: the parameter's name in the URL.
        key: the session-state key it sets.
        parse: text → value, or None when the text is not a valid value.
        drives: written by the page (a change is a new history entry); False: written by the
            deep-zoom view in place.
        show: session value → URL text (default ``str``).
    """

    name: str
    key: str
    parse: Callable[[str], Any]
    drives: bool
    show: Callable[[Any], str] = str


PARAMS: tuple[Param, ...] = (
    Param("src", "slide_source", _choice(SOURCES), True),
    Param("slide", "slide_pick", _text, True),
    Param("file", "file_pick", _text, True),
    Param("fold", "slide_fold", _fold, True),
    Param("list", "browse_list", _choice(LISTS), True),
    Param("level", "ov_level", _choice(("coarse", "fine")), False),
    Param("label", "ov_label", _text, False),
    Param("mode", "ov_mode", _choice(MODES), False),
    Param("alpha", "ov_alpha", _number(0.0, 1.0), False, lambda v: f"{float(v):g}"),
    Param("cmap", "ov_cmap", _choice(CMAPS), True),
    Param("scale", "ov_norm", _choice(NORMALIZATIONS), True),
    Param("range", "ov_per_label", _range, True, lambda v: "label" if v else "level"),
    Param("smooth", "ov_smooth", _number(0.0, 3.0), True, lambda v: f"{float(v):g}"),
    Param("outline", "ov_gt", _flag, True, lambda v: "1" if v else "0"),
)
#: parameters that only matter for one source
SOURCE_PARAMS = {"run": ("slide", "fold", "list"), "file": ("file",), "upload": ()}
BY_NAME = {p.name: p for p in PARAMS}
RUN = "run"  # applied by the app shell (the sidebar's run picker), validated there


def single(params: Mapping[str, Any]) -> dict[str, str]:
    """``st.query_params`` as ``{name: text}`` (a repeated parameter: its last value)."""
    out: dict[str, str] = {}
    for name, value in params.items():
        if isinstance(value, list | tuple):
            if value:
                out[str(name)] = str(value[-1])
        else:
            out[str(name)] = str(value)
    return out


def driving(params: Mapping[str, str]) -> dict[str, str]:
    """The driving parameters of an address (those the page writes; see the module doc)."""
    names = {p.name for p in PARAMS if p.drives} | {RUN}
    return {k: v for k, v in params.items() if k in names}


def incoming_changed(state: Mapping[str, Any], incoming: Mapping[str, str]) -> bool:
    """Whether ``incoming`` is an address the page did not write itself (a new session, a
    link, back/forward): only then is it applied. Only driving parameters are compared: the
    view rewrites the riding ones in place, and every history entry differs from its
    neighbours in a driving one."""
    last = state.get(WRITTEN_KEY)
    return last is None or driving(last) != driving(incoming)


def apply(state: MutableMapping[str, Any], incoming: Mapping[str, str]) -> list[str]:
    """Set the session keys of every valid parameter of ``incoming``; returns a note per
    ignored parameter (the caller shows them, :data:`NOTES_KEY`). A valid viewport becomes a
    request for the view (:data:`VIEWPORT_KEY`). ``run`` is left to the app shell (it is
    checked against the data roots there)."""
    notes: list[str] = []
    for name, text in incoming.items():
        param = BY_NAME.get(name)
        if param is None:
            continue
        value = param.parse(text)
        if value is None:
            notes.append(f"'{name}={text[:40]}' is not a valid value: ignored")
            continue
        state[param.key] = value
    if "slide" in incoming or "file" in incoming:
        # the address names the label to show: the new slide keeps it
        state[SLIDE_SHOWN_KEY] = shown_key(incoming)
    viewport = _viewport(incoming)
    if viewport is not None:
        previous = state.get(VIEWPORT_KEY) or {}
        state[VIEWPORT_KEY] = {**viewport, "nonce": int(previous.get("nonce", 0)) + 1}
    elif any(k in incoming for k in VIEWPORT):
        notes.append("the viewport (x, y, zoom) is incomplete or not numbers: ignored")
    return notes


def shown_key(params: Mapping[str, str]) -> str | None:
    """Which slide an address shows, as :data:`SLIDE_SHOWN_KEY` holds it (a run's slide id,
    or ``file:<path>`` for a slide file alone)."""
    if params.get("slide"):
        return params["slide"]
    return f"file:{params['file']}" if params.get("file") else None


def _viewport(incoming: Mapping[str, str]) -> dict[str, float] | None:
    try:
        x, y, zoom = (float(incoming[k]) for k in VIEWPORT)
    except (KeyError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (x, y, zoom)) or not 1e-6 < zoom <= 64:
        return None
    return {"x": x, "y": y, "zoom": zoom}


def desired(state: Mapping[str, Any], run: str | None) -> dict[str, str]:
    """The address of what the page shows now: run, source, the source's own parameters, and
    the overlay (parameters whose session key is unset are left out)."""
    source = state.get("slide_source", "run")
    out: dict[str, str] = {}
    if run and source == "run":
        out[RUN] = run
    skipped = {n for s, names in SOURCE_PARAMS.items() if s != source for n in names}
    for param in PARAMS:
        value = state.get(param.key)
        if value is None or param.name in skipped:
            continue
        out[param.name] = param.show(value)
    return out


def to_write(
    state: Mapping[str, Any], wanted: Mapping[str, str], viewport: Mapping[str, str]
) -> dict[str, str] | None:
    """The parameters to write, or None when no driving parameter changed since the page
    last wrote (the view keeps the riding ones up to date itself). ``viewport`` is included
    as last received, so writing does not throw the view's place away."""
    last = state.get(WRITTEN_KEY)
    if last is not None and driving(last) == driving(wanted):
        return None
    return {**wanted, **viewport}
