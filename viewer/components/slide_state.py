"""Session-state plumbing of the slide page: viewport widgets and their callbacks.

The viewport lives in three widget keys (``vp_zoom``, ``vp_cx``, ``vp_cy``: sliders the user
can drive directly, and so can ``AppTest``); buttons, thumbnail clicks and "go to patch" write
the same keys from callbacks (callbacks run before the script, so writing widget keys there is
allowed). ``vp_canvas`` remembers which canvas the values belong to, so a new slide starts at
the fitted view.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from viewer.components import viewport as vpm
from viewer.components.viewport import Canvas, Viewport

KEYS = ("vp_zoom", "vp_cx", "vp_cy")


def canvas_key(source: str, canvas: Canvas) -> tuple[Any, ...]:
    return (source, canvas.x0, canvas.y0, canvas.width, canvas.height)


def ensure(state: MutableMapping[str, Any], key: tuple[Any, ...], canvas: Canvas) -> None:
    """Reset the viewport to the fitted view when the canvas changed (new slide)."""
    if state.get("vp_canvas") != key or any(k not in state for k in KEYS):
        write(state, vpm.initial(canvas))
        state["vp_canvas"] = key


def read(state: MutableMapping[str, Any], canvas: Canvas, view: tuple[int, int]) -> Viewport:
    vp = Viewport(float(state["vp_cx"]), float(state["vp_cy"]), int(state["vp_zoom"]))
    return vpm.clamp(canvas, vp, view)


def write(state: MutableMapping[str, Any], vp: Viewport) -> None:
    state["vp_zoom"] = int(vp.zoom)
    state["vp_cx"] = int(round(vp.cx))
    state["vp_cy"] = int(round(vp.cy))


def zoom(
    state: MutableMapping[str, Any], canvas: Canvas, view: tuple[int, int], steps: int
) -> None:
    write(state, vpm.zoom_by(canvas, read(state, canvas, view), steps, view))


def pan(
    state: MutableMapping[str, Any], canvas: Canvas, view: tuple[int, int], dx: float, dy: float
) -> None:
    write(state, vpm.pan(canvas, read(state, canvas, view), dx, dy, view))


def reset(state: MutableMapping[str, Any], canvas: Canvas, view: tuple[int, int]) -> None:
    write(state, vpm.initial(canvas))


def thumbnail_click(
    state: MutableMapping[str, Any], canvas: Canvas, view: tuple[int, int], widget_key: str
) -> None:
    """Centre on the point clicked on the thumbnail (``streamlit-image-coordinates`` value
    ``{x, y, width, height}`` in displayed pixels)."""
    value = state.get(widget_key)
    if not value:
        return
    x, y = vpm.thumbnail_to_level0(
        canvas, (value["x"], value["y"]), (value["width"], value["height"])
    )
    write(state, vpm.centre_on(canvas, read(state, canvas, view), x, y, view))


def go_to_patch(
    state: MutableMapping[str, Any],
    canvas: Canvas,
    view: tuple[int, int],
    x: float,
    y: float,
    patch_size: float,
) -> None:
    write(state, vpm.zoom_to_patch(canvas, x, y, patch_size, view))
