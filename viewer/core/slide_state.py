"""Session-state plumbing of the slide page: what the deep-zoom view reports, and requests to it.

The view itself (pan, zoom, hover) lives in the browser; it reports only what the rest of the
page follows, as component triggers: a label chosen on its label strip, the opacity slider let
go, a patch clicked, "all labels" switched, next / previous slide. Their callbacks run before
the script, so they may write the page's keys (``ov_level``, ``ov_label``, ``ov_alpha``,
``ov_mode``; a clicked patch goes through ``dz_patch`` to ``patch_pick``, next / previous
through ``dz_nav``) and every panel below the view follows on the same rerun.
"Go to this patch" goes the other way: a request with a fresh ``nonce`` that the browser
applies once.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from viewer.core import address, slide_lookup
from viewer.core.inference import LEVELS

GOTO_KEY = "dz_goto"
PATCH_REQUEST = "dz_patch"
NAV_REQUEST = "dz_nav"
#: ``(slide_id, target)``: the next slide of the browse list nobody reviewed yet, as the review
#: panel last computed it for ``slide_id`` (the view's key u opens it)
NEXT_UNREVIEWED_KEY = "_rv_next_target"
#: a slide to open before the pickers are drawn (the cohort page, "Next unreviewed", key u)
OPEN_REQUEST = "open_slide"
#: "the slide file was renamed: draw anyway" (reset whenever another slide is shown)
MISMATCH_KEY = "slide_mismatch_ok"


def _trigger(state: Mapping[str, Any], component_key: str, name: str) -> Any:
    value = state.get(component_key)
    return value.get(name) if isinstance(value, Mapping) else None


def on_label(state: MutableMapping[str, Any], component_key: str) -> None:
    """A label chip was clicked: ``{level, label}`` becomes the page's level and label."""
    value = _trigger(state, component_key, "label")
    if isinstance(value, Mapping) and value.get("level") in LEVELS and value.get("label"):
        state["ov_level"] = str(value["level"])
        state["ov_label"] = str(value["label"])


def on_alpha(state: MutableMapping[str, Any], component_key: str) -> None:
    """The view's opacity slider was let go: keep the value (0..1, 2 decimals)."""
    value = _trigger(state, component_key, "alpha")
    if isinstance(value, int | float):
        state["ov_alpha"] = round(min(max(float(value), 0.0), 1.0), 2)


def on_patch(state: MutableMapping[str, Any], component_key: str) -> None:
    """A patch was clicked on the view: ask the page to inspect it (:func:`apply_patch_request`
    moves it to ``patch_pick`` before that box is drawn with the clicked patch among its
    options)."""
    value = _trigger(state, component_key, "patch")
    if isinstance(value, int) and value >= 0:
        state[PATCH_REQUEST] = value


def on_mode(state: MutableMapping[str, Any], component_key: str) -> None:
    """ "All labels" was switched on the view: ``single`` or ``all`` becomes ``ov_mode``."""
    value = _trigger(state, component_key, "mode")
    if value in ("single", "all"):
        state["ov_mode"] = str(value)


def on_nav(state: MutableMapping[str, Any], component_key: str) -> None:
    """Next (1) or previous (-1) slide was asked for on the view (button or key n / p): the
    page moves along its browse list before it draws the picker (:data:`NAV_REQUEST`); the
    next unreviewed slide (key u, ``"unreviewed"``) is opened like the review panel's button
    (:data:`OPEN_REQUEST`), when the panel found one for the slide shown."""
    value = _trigger(state, component_key, "nav")
    if value in (-1, 1):
        state[NAV_REQUEST] = int(value)
    elif value == "unreviewed":
        target = next_unreviewed_target(state)
        if target is not None:
            state[OPEN_REQUEST] = target


def next_unreviewed_target(state: MutableMapping[str, Any]) -> str | None:
    """The review panel's next unreviewed slide when it was computed for the slide shown."""
    found = state.get(NEXT_UNREVIEWED_KEY)
    if not isinstance(found, tuple) or len(found) != 2:
        return None
    shown, target = found
    return str(target) if target and shown == state.get("slide_pick") else None


def apply_patch_request(state: MutableMapping[str, Any]) -> None:
    """Consume a patch clicked on the view (run before the widgets are drawn)."""
    if PATCH_REQUEST in state:
        state["patch_pick"] = int(state.pop(PATCH_REQUEST))


def go_to_patch(state: MutableMapping[str, Any], x: float, y: float, patch_size: float) -> None:
    """Ask the view to zoom to the patch at level-0 ``(x, y)`` (applied once per nonce)."""
    previous = state.get(GOTO_KEY) or {}
    nonce = int(previous.get("nonce", 0)) + 1
    state[GOTO_KEY] = {"x": float(x), "y": float(y), "size": float(patch_size), "nonce": nonce}


def apply_nav_request(state: MutableMapping[str, Any], ids: Sequence[str]) -> None:
    """Consume a next / previous request of the view (:data:`NAV_REQUEST`): move
    ``slide_pick`` along ``ids``."""
    step = state.pop(NAV_REQUEST, None)
    if step is None:
        return
    target = slide_lookup.neighbour(ids, state.get("slide_pick"), int(step))
    if target is not None:
        state["slide_pick"] = target


def forget_previous_slide(state: MutableMapping[str, Any], shown: str) -> bool:
    """When ``shown`` is another slide than the last one shown, drop what belonged to that one
    — label (the new slide opens on its predicted label), inspected patch, go-to and viewport
    requests — and return True. A slide opened from an address keeps the address's label."""
    if state.get(address.SLIDE_SHOWN_KEY) == shown:
        return False
    first = address.SLIDE_SHOWN_KEY not in state
    state[address.SLIDE_SHOWN_KEY] = shown
    if not first:
        for key in (
            "ov_label",
            "patch_pick",
            GOTO_KEY,
            address.VIEWPORT_KEY,
            MISMATCH_KEY,
        ):
            state.pop(key, None)
    return True


def browse_nav(
    state: MutableMapping[str, Any], ids: Sequence[str], reviewing: bool = False
) -> dict[str, bool]:
    """Whether the current slide has a previous / next one in its browse list ``ids``; when
    ``reviewing`` (a run whose slides can be reviewed), ``unreviewed`` True: key u may ask
    for the next unreviewed slide. Whether there is one is decided when it is asked
    (:func:`on_nav`): the review panel finds it after the view was drawn, and a save in the
    panel re-runs the panel alone, so a flag sent with the view would be one step late."""
    current = state.get("slide_pick")
    nav = {
        "has_prev": slide_lookup.neighbour(ids, current, -1) is not None,
        "has_next": slide_lookup.neighbour(ids, current, 1) is not None,
    }
    if reviewing:
        nav["unreviewed"] = True
    return nav
