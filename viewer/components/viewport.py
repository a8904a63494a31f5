"""Viewport maths for region-on-demand pan and zoom (pure functions, level-0 pixels).

The slide view shows a fixed-size image (``view_size = (W, H)`` screen pixels). What it shows is
a :class:`Viewport`: a level-0 centre and an integer zoom step. Zoom step 0 fits the whole
canvas (the slide, or the coords' extent when there is no slide file) in the view; each step
halves the level-0 pixels per screen pixel (the *downsample*) down to :data:`MIN_DOWNSAMPLE`,
i.e. past full resolution. Only the visible level-0 :class:`Region` is read, at the coarsest
slide level fine enough for that downsample, so a 100k-pixel slide is never read whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from hmil.slides.reader import Region

#: deepest zoom: 2 screen pixels per level-0 pixel
MIN_DOWNSAMPLE = 0.5
DEFAULT_VIEW_SIZE = (768, 512)


@dataclass(frozen=True)
class Canvas:
    """The level-0 rectangle that can be viewed: ``x0, y0`` top-left, ``width, height``."""

    x0: float
    y0: float
    width: float
    height: float

    @property
    def region(self) -> Region:
        return Region(self.x0, self.y0, self.width, self.height)

    @property
    def centre(self) -> tuple[float, float]:
        return self.x0 + self.width / 2, self.y0 + self.height / 2


@dataclass(frozen=True)
class Viewport:
    """Centre ``(cx, cy)`` in level-0 pixels and zoom step (0 = whole canvas)."""

    cx: float
    cy: float
    zoom: int = 0


def fit_downsample(canvas: Canvas, view_size: tuple[int, int]) -> float:
    """Level-0 pixels per screen pixel that fit the whole canvas in the view."""
    return max(canvas.width / view_size[0], canvas.height / view_size[1], 1e-9)


def max_zoom(canvas: Canvas, view_size: tuple[int, int]) -> int:
    """The zoom step whose downsample first reaches :data:`MIN_DOWNSAMPLE` (≥ 0)."""
    fit = fit_downsample(canvas, view_size)
    return max(0, math.ceil(math.log2(fit / MIN_DOWNSAMPLE) - 1e-9))


def downsample(canvas: Canvas, view_size: tuple[int, int], zoom: int) -> float:
    """Level-0 pixels per screen pixel at ``zoom`` (never below :data:`MIN_DOWNSAMPLE`)."""
    return max(MIN_DOWNSAMPLE, fit_downsample(canvas, view_size) / 2 ** max(0, zoom))


def initial(canvas: Canvas) -> Viewport:
    cx, cy = canvas.centre
    return Viewport(cx, cy, 0)


def clamp(canvas: Canvas, vp: Viewport, view_size: tuple[int, int]) -> Viewport:
    """Keep the zoom in ``0..max_zoom`` and the centre inside the canvas."""
    zoom = min(max(0, int(vp.zoom)), max_zoom(canvas, view_size))
    cx = min(max(vp.cx, canvas.x0), canvas.x0 + canvas.width)
    cy = min(max(vp.cy, canvas.y0), canvas.y0 + canvas.height)
    return Viewport(cx, cy, zoom)


def region(canvas: Canvas, vp: Viewport, view_size: tuple[int, int]) -> Region:
    """The level-0 rectangle the view shows (may extend past the canvas, drawn white)."""
    ds = downsample(canvas, view_size, vp.zoom)
    w, h = view_size[0] * ds, view_size[1] * ds
    return Region(vp.cx - w / 2, vp.cy - h / 2, w, h)


def zoom_by(canvas: Canvas, vp: Viewport, steps: int, view_size: tuple[int, int]) -> Viewport:
    """Zoom in (``steps`` > 0) or out around the current centre."""
    return clamp(canvas, replace(vp, zoom=vp.zoom + steps), view_size)


def pan(canvas: Canvas, vp: Viewport, dx: float, dy: float, view_size: tuple[int, int]) -> Viewport:
    """Move by ``dx, dy`` view widths/heights (e.g. ``dx=0.5`` = half a view to the right)."""
    r = region(canvas, vp, view_size)
    return clamp(canvas, replace(vp, cx=vp.cx + dx * r.w, cy=vp.cy + dy * r.h), view_size)


def centre_on(
    canvas: Canvas, vp: Viewport, x: float, y: float, view_size: tuple[int, int]
) -> Viewport:
    return clamp(canvas, replace(vp, cx=x, cy=y), view_size)


def thumbnail_to_level0(
    canvas: Canvas, click: tuple[float, float], shown_size: tuple[float, float]
) -> tuple[float, float]:
    """Level-0 point under a click at ``click = (x, y)`` on a thumbnail of the whole canvas
    displayed at ``shown_size = (w, h)`` pixels (the click component reports both)."""
    fx = min(max(click[0] / max(shown_size[0], 1e-9), 0.0), 1.0)
    fy = min(max(click[1] / max(shown_size[1], 1e-9), 0.0), 1.0)
    return canvas.x0 + fx * canvas.width, canvas.y0 + fy * canvas.height


def view_to_level0(
    canvas: Canvas,
    vp: Viewport,
    click: tuple[float, float],
    shown_size: tuple[float, float],
    view_size: tuple[int, int],
) -> tuple[float, float]:
    """Level-0 point under a click on the main view displayed at ``shown_size`` pixels."""
    r = region(canvas, vp, view_size)
    fx = click[0] / max(shown_size[0], 1e-9)
    fy = click[1] / max(shown_size[1], 1e-9)
    return r.x + fx * r.w, r.y + fy * r.h


def zoom_to_patch(
    canvas: Canvas, x: float, y: float, patch_size: float, view_size: tuple[int, int]
) -> Viewport:
    """Centre on the patch at top-left ``(x, y)``, zoomed so it spans about a quarter of the
    view's shorter side (its neighbours stay visible for context)."""
    target_ds = patch_size / (min(view_size) / 4)
    fit = fit_downsample(canvas, view_size)
    zoom = max(0, round(math.log2(fit / max(target_ds, MIN_DOWNSAMPLE))))
    vp = Viewport(x + patch_size / 2, y + patch_size / 2, zoom)
    return clamp(canvas, vp, view_size)


def magnification_text(ds: float, objective_power: float | None, mpp: float | None) -> str:
    """Human zoom label: ``"10.0× (1.00 µm/px)"``, or ``"downsample 4.0"`` without metadata."""
    parts = []
    if objective_power:
        parts.append(f"{objective_power / ds:.3g}×")
    if mpp:
        parts.append(f"{mpp * ds:.3g} µm/px")
    parts.append(f"{ds:.3g} level-0 px per screen px")
    return " · ".join(parts)
