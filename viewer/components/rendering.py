"""Pictures of the slide page: viewport renders, thumbnails, ground-truth panels, patch crops.

Everything is rendered at *screen* resolution: the base image is the visible level-0 region
resampled by :meth:`hmil.slides.reader.Slide.read_rect` from the coarsest sufficient level, and
the attention overlay is rasterised straight at the output size by :mod:`hmil.heatmap`. Images
are ``(H, W, 3)`` uint8 RGB numpy arrays.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
from PIL import Image, ImageDraw

from hmil.heatmap import (
    HeatmapStyle,
    Normalization,
    blend,
    colormap_lut,
    coords_extent,
    heatmap_rgba,
)
from hmil.heatmap import normalize_scores as _normalize
from hmil.slides.reader import Region, Slide, fit_size
from viewer.components.inference import SlideResult
from viewer.components.viewport import Canvas

GT_COLOUR = (0, 170, 60)
BOX_COLOUR = (20, 90, 255)
OUTSIDE = (228, 230, 235)


def canvas_for(slide: Slide | None, result: SlideResult | None) -> Canvas:
    """The whole slide, or without a slide file the extent of the bag's patches."""
    if slide is not None:
        w, h = slide.dimensions
        return Canvas(0.0, 0.0, float(w), float(h))
    if result is not None and result.coords is not None:
        r = coords_extent(result.coords, result.patch_size)
        return Canvas(r.x, r.y, r.w, r.h)
    return Canvas(0.0, 0.0, 1.0, 1.0)


def base_image(slide: Slide | None, region: Region, out_size: tuple[int, int]) -> np.ndarray:
    """``(H, W, 3)`` slide pixels of ``region`` at ``out_size = (W, H)``, or white without a
    slide (the coordinate canvas)."""
    w, h = int(out_size[0]), int(out_size[1])
    if slide is None:
        return np.full((h, w, 3), 255, dtype=np.uint8)
    return slide.read_rect(region, (w, h))


def overlay(
    base: np.ndarray,
    result: SlideResult,
    level: str,
    label: str,
    style: HeatmapStyle,
    region: Region,
) -> np.ndarray:
    """``base`` with the attention of ``label`` (a class of ``level``) blended over it."""
    if result.coords is None:
        return base
    h, w = base.shape[:2]
    rgba = heatmap_rgba(
        result.scores(level, label), result.coords, result.patch_size, region, (w, h), style
    )
    return blend(base, rgba)


def shade_outside(
    image: np.ndarray, canvas: Canvas, region: Region, colour: tuple[int, int, int] = OUTSIDE
) -> np.ndarray:
    """Paint the part of a view of ``region`` that lies outside ``canvas`` in ``colour``, so
    the slide's (or canvas') edges are visible when zoomed out."""
    h, w = image.shape[:2]
    sx, sy = w / region.w, h / region.h
    x0 = round((canvas.x0 - region.x) * sx)
    y0 = round((canvas.y0 - region.y) * sy)
    x1 = round((canvas.x0 + canvas.width - region.x) * sx)
    y1 = round((canvas.y0 + canvas.height - region.y) * sy)
    if x0 <= 0 and y0 <= 0 and x1 >= w and y1 >= h:
        return image
    out = np.empty_like(image)
    out[:] = colour
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if cx1 > cx0 and cy1 > cy0:
        out[cy0:cy1, cx0:cx1] = image[cy0:cy1, cx0:cx1]
    return out


def thumbnail_size(canvas: Canvas, max_size: int) -> tuple[int, int]:
    return fit_size(canvas.width, canvas.height, max_size)


def draw_box(image: np.ndarray, canvas: Canvas, region: Region, width: int = 2) -> np.ndarray:
    """Outline the level-0 ``region`` on a thumbnail ``image`` of the whole ``canvas``."""
    h, w = image.shape[:2]
    sx, sy = w / canvas.width, h / canvas.height
    x0 = (region.x - canvas.x0) * sx
    y0 = (region.y - canvas.y0) * sy
    x1 = x0 + region.w * sx
    y1 = y0 + region.h * sy
    x0, y0 = max(0.0, x0), max(0.0, y0)
    x1, y1 = min(w - 1.0, x1), min(h - 1.0, y1)
    pil = Image.fromarray(np.ascontiguousarray(image))
    if x1 > x0 and y1 > y0:
        ImageDraw.Draw(pil).rectangle((x0, y0, x1, y1), outline=BOX_COLOUR, width=width)
    return np.asarray(pil)


def load_mask(path: Path) -> np.ndarray:
    """A ground-truth mask PNG as ``(h, w)`` bool (pixels > 127 are lesion)."""
    with Image.open(path) as img:
        return np.asarray(img.convert("L")) > 127


def mask_view(
    base: np.ndarray, mask: np.ndarray, mask_scale: float, region: Region, alpha: float = 0.45
) -> np.ndarray:
    """``base`` (the view of ``region``) with the ground-truth ``mask`` tinted and outlined.

    Args:
        base: ``(H, W, 3)`` view pixels.
        mask: ``(h, w)`` bool, covering the slide at ``mask_scale`` level-0 px per mask px.
        mask_scale: level-0 pixels per mask pixel (slide width / mask width).
        region: level-0 rectangle the view shows.
        alpha: tint opacity.
    """
    out_h, out_w = base.shape[:2]
    crop = crop_mask(mask, mask_scale, region, (out_w, out_h))
    out = base.astype(np.float32)
    colour = np.asarray(GT_COLOUR, dtype=np.float32)
    out[crop] = out[crop] * (1 - alpha) + colour * alpha
    edge = crop & ~_erode(crop)
    out[edge] = colour
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def outline_mask(
    image: np.ndarray, mask: np.ndarray, mask_scale: float, region: Region
) -> np.ndarray:
    """``image`` (a view of ``region``) with the ground-truth outline drawn 2 px wide."""
    out_h, out_w = image.shape[:2]
    crop = crop_mask(mask, mask_scale, region, (out_w, out_h))
    inner = _erode(_erode(crop))
    out = image.copy()
    out[crop & ~inner] = GT_COLOUR
    return out


def crop_mask(
    mask: np.ndarray, mask_scale: float, region: Region, out_size: tuple[int, int]
) -> np.ndarray:
    """The part of ``mask`` under ``region`` resampled (nearest) to ``out_size``; ``(H, W)``
    bool, False outside the mask."""
    out_w, out_h = out_size
    canvas = np.zeros((out_h, out_w), dtype=bool)
    mh, mw = mask.shape
    gx0, gy0 = region.x / mask_scale, region.y / mask_scale
    gw, gh = region.w / mask_scale, region.h / mask_scale
    bx0, bx1 = max(gx0, 0.0), min(gx0 + gw, float(mw))
    by0, by1 = max(gy0, 0.0), min(gy0 + gh, float(mh))
    px0, px1 = round((bx0 - gx0) / gw * out_w), round((bx1 - gx0) / gw * out_w)
    py0, py1 = round((by0 - gy0) / gh * out_h), round((by1 - gy0) / gh * out_h)
    if px1 <= px0 or py1 <= py0:
        return canvas
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    part = img.resize((px1 - px0, py1 - py0), Image.Resampling.NEAREST, box=(bx0, by0, bx1, by1))
    canvas[py0:py1, px0:px1] = np.asarray(part) > 127
    return canvas


def _erode(mask: np.ndarray) -> np.ndarray:
    """One-pixel binary erosion (4-neighbourhood) without scipy."""
    out = mask.copy()
    out[1:, :] &= mask[:-1, :]
    out[:-1, :] &= mask[1:, :]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    return out


def patch_crop(
    slide: Slide | None,
    result: SlideResult,
    index: int,
    px: int,
    colour_values: np.ndarray | None = None,
    cmap: str = "viridis",
) -> np.ndarray:
    """``(px, px, 3)`` picture of patch ``index``: the slide pixels under it, or without a slide
    a swatch in the colour of its normalised score (``colour_values`` ``(N,)`` in [0, 1])."""
    if result.coords is None:
        raise ValueError("bag has no coordinates")
    x, y = (float(v) for v in result.coords[index])
    if slide is not None:
        size = float(result.patch_size)
        return slide.read_rect(Region(x, y, size, size), (px, px))
    lut = colormap_lut(cmap)
    value = 0.5 if colour_values is None else float(colour_values[index])
    colour = lut[int(np.clip(round(value * 255), 0, 255))]
    return np.broadcast_to(colour, (px, px, 3)).copy()


def normalized(result: SlideResult, level: str, label: str, mode: str) -> np.ndarray:
    """``(N,)`` scores of one class mapped to [0, 1] like the overlay does."""
    checked = cast(Normalization, mode)  # a widget's str; normalize_scores refuses others
    return _normalize(result.scores(level, label), checked)
