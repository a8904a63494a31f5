"""The data the deep-zoom component gets from Python (pure; the contract of ``deepzoom.js``).

Built in parts so that each is computed only when what it depends on changes: the slide (its
tile key), the attention layer (per prediction, normalisation and smoothing — the heavy part,
cached by :mod:`viewer.components.cached_ui`), and the show settings (label, opacity, colormap:
a few bytes). The browser keeps the slide and the layer across reruns and only recolours when
``show`` changes.
"""

from __future__ import annotations

import hashlib
from typing import Any

from hmil.heatmap import HeatmapStyle
from hmil.slides.reader import Slide
from viewer.core.inference import LEVELS, SlideResult
from viewer.core.viewport import Canvas
from viewer.tiles.overlay import grid_payload, layer_values, lut_b64, patch_grid
from viewer.tiles.routes import OSD_URL, OverlaySpec, overlay_dzi_url, slide_dzi_url

#: how the attention layer is drawn (see :mod:`viewer.tiles.overlay`); the first is the default
OVERLAY_STRATEGIES = ("canvas", "tiles")
#: the view fills the window below its top, but never gets lower than this (px)
MIN_VIEW_HEIGHT = 420


def slide_part(key: str | None, slide: Slide | None) -> dict[str, Any] | None:
    """Where the tiles are and what the scale bar needs; None on the coordinate canvas."""
    if key is None or slide is None:
        return None
    w, h = slide.dimensions
    return {
        "dzi": slide_dzi_url(key),
        "width": w,
        "height": h,
        "mpp": slide.mpp,
        "power": slide.objective_power,
    }


def canvas_part(canvas: Canvas) -> dict[str, float]:
    return {"x0": canvas.x0, "y0": canvas.y0, "w": canvas.width, "h": canvas.height}


def layer_part(result: SlideResult, style: HeatmapStyle, identity: str) -> dict[str, Any]:
    """Every patch's grid cell and its colour code under every label of both levels, with the
    levels' scales (legend, code texts).

    ``identity`` names the prediction (checkpoint and bag versions); with the style's scale and
    smoothing it forms ``values_key``, which tells the browser when to re-read the bytes.
    """
    if result.coords is None:
        raise ValueError("bag has no coordinates")
    grid = patch_grid(result.coords, result.patch_size)
    attention = {level: result.attention(level) for level in LEVELS}
    scale = f"{style.normalize}|{style.per_label}|{style.smooth}"
    digest = hashlib.sha256(f"{identity}|{scale}".encode()).hexdigest()[:16]
    return {
        "grid": grid_payload(grid),
        "names": {level: list(result.names(level)) for level in LEVELS},
        "predicted": {"coarse": result.coarse_pred, "fine": result.fine_pred},
        "levels": layer_values(attention, result.coords, result.patch_size, style),
        "values_key": digest,
        "patch_size": result.patch_size,
        "n": result.n_instances,
    }


def tile_layer_urls(
    result: SlideResult, attention_key: str, style: HeatmapStyle
) -> dict[str, list[str]]:
    """Per level and label, the ``.dzi`` of its server-rendered overlay (``tiles`` strategy)."""
    return {
        level: [
            overlay_dzi_url(
                attention_key,
                OverlaySpec.format(level, k, style.cmap, style.normalize, style.smooth),
            )
            for k in range(len(result.names(level)))
        ]
        for level in LEVELS
    }


def show_part(
    level: str,
    label: str,
    mode: str,
    style: HeatmapStyle,
    outline: list[list[float]] | None,
) -> dict[str, Any]:
    """What to draw now: label, single view or all labels, opacity, the colour of each code
    under the colormap, smoothing, outline."""
    return {
        "level": level,
        "label": label,
        "mode": mode,
        "alpha": style.alpha,
        "lut": lut_b64(style.cmap),
        "smooth": style.smooth,
        "outline": outline or [],
    }


def component_data(
    slide: dict[str, Any] | None,
    canvas: dict[str, float],
    layer: dict[str, Any] | None,
    show: dict[str, Any],
    strategy: str,
    patch_box: tuple[float, float, float] | None = None,
    goto: dict[str, Any] | None = None,
    view_id: str = "",
    truth: dict[str, str] | None = None,
    nav: dict[str, bool] | None = None,
    viewport: dict[str, Any] | None = None,
    note: str = "",
) -> dict[str, Any]:
    """The whole ``data`` argument of the component (see ``deepzoom.js`` for each field)."""
    if strategy not in OVERLAY_STRATEGIES:
        raise ValueError(f"unknown overlay strategy {strategy!r} ({', '.join(OVERLAY_STRATEGIES)})")
    if layer is not None:
        layer = {**layer, "strategy": strategy if slide is not None else "canvas"}
    return {
        "osd_url": OSD_URL,
        "view_id": view_id,
        "slide": slide,
        "canvas": canvas,
        "layer": layer,
        "show": show,
        "truth": truth,
        "nav": nav,
        "note": note,
        "patch_box": list(patch_box) if patch_box else None,
        "goto": goto,
        "viewport": viewport,
        "min_height": MIN_VIEW_HEIGHT,
    }
