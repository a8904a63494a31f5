"""Pictures and shapes of the slide page that Python computes: patch crops, lesion outlines.

The slide itself and the attention layer are drawn by the browser
(:mod:`viewer.components.deepzoom_element_ui`); what is left here is what the browser cannot
make: the slide pixels of one patch (top-k gallery, inspected patch), a swatch when there is no
slide, and the ground-truth outline as polylines in level-0 pixels. Images are ``(H, W, 3)``
uint8 RGB numpy arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from hmil.attention_scale import code_positions
from hmil.overlay import HeatmapStyle, colormap_lut, coords_extent, level_codes
from hmil.slides.reader import Region, Slide
from viewer.core.inference import SlideResult
from viewer.core.viewport import Canvas


def canvas_for(slide: Slide | None, result: SlideResult | None) -> Canvas:
    """The whole slide, or without a slide file the extent of the bag's patches."""
    if slide is not None:
        w, h = slide.dimensions
        return Canvas(0.0, 0.0, float(w), float(h))
    if result is not None and result.coords is not None and len(result.coords):
        r = coords_extent(result.coords, result.patch_size)
        return Canvas(r.x, r.y, r.w, r.h)
    return Canvas(0.0, 0.0, 1.0, 1.0)


def load_mask(path: Path) -> np.ndarray:
    """A ground-truth mask PNG as ``(h, w)`` bool (pixels > 127 are lesion)."""
    with Image.open(path) as img:
        return np.asarray(img.convert("L")) > 127


def mask_outline(mask: np.ndarray, mask_scale: float, tolerance: float = 0.5) -> list[list[float]]:
    """The lesion boundary of an ``(h, w)`` bool ``mask`` as polylines in level-0 pixels.

    Each polyline is flat ``[x0, y0, x1, y1, …]`` (what the browser strokes at a constant
    width at any zoom). ``mask_scale`` is level-0 pixels per mask pixel; contours follow pixel
    edges (marching squares at 0.5 on a zero-padded mask) and are simplified to within
    ``tolerance`` mask pixels.
    """
    from skimage.measure import approximate_polygon, find_contours

    if not mask.any():
        return []
    padded = np.pad(mask.astype(np.float32), 1)
    lines = []
    for contour in find_contours(padded, 0.5):
        simple = approximate_polygon(contour, tolerance=tolerance)
        xy = (simple[:, ::-1] - 1 + 0.5) * mask_scale  # (row, col) → (x, y), undo padding
        lines.append([round(float(v), 1) for v in xy.ravel()])
    return lines


def slide_square(slide: Slide, x: float, y: float, size: float, px: int) -> np.ndarray:
    """``(px, px, 3)`` pixels of the level-0 square ``(x, y, size)`` of ``slide``."""
    return slide.read_rect(Region(x, y, size, size), (px, px))


def patch_crop(
    slide: Slide | None,
    result: SlideResult,
    index: int,
    px: int,
    colour_values: np.ndarray | None = None,
    cmap: str = "viridis",
) -> np.ndarray:
    """``(px, px, 3)`` picture of patch ``index``: the slide pixels under it, or without a slide
    a swatch in the colour of its position on the map's scale (``colour_values`` ``(N,)`` in
    [0, 1], NaN = not coloured: a light grey swatch)."""
    if result.coords is None:
        raise ValueError("bag has no coordinates")
    x, y = (float(v) for v in result.coords[index])
    if slide is not None:
        return slide_square(slide, x, y, float(result.patch_size), px)
    lut = colormap_lut(cmap)
    value = 0.5 if colour_values is None else float(colour_values[index])
    if not np.isfinite(value):
        return np.full((px, px, 3), 235, dtype=np.uint8)
    colour = lut[int(np.clip(round(value * 255), 0, 255))]
    return np.broadcast_to(colour, (px, px, 3)).copy()


def normalized(result: SlideResult, level: str, label: str, style: HeatmapStyle) -> np.ndarray:
    """``(N,)`` colour positions of one class on the map's scale (the level's shared scale
    unless ``style.per_label``), in [0, 1], NaN where the map leaves a patch uncoloured."""
    if result.coords is None:
        raise ValueError("bag has no coordinates")
    coded = level_codes(result.attention(level), result.coords, result.patch_size, style)
    return code_positions(coded.codes[result.names(level).index(label)])
