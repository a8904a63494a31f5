"""The one overlay engine: class-wise attention → colour codes per patch → pixels of any region.

``hmil heatmap``'s PNG, the viewer's server-rendered overlay tiles and the browser's layer all
go through :func:`level_codes`: smooth each label's attention on the patch grid
(:mod:`hmil.patch_grid`), fit the scale (:mod:`hmil.attention_scale`: shared by the level's
labels unless ``per_label``), and turn every patch into one byte, 0 = not coloured. The PNG and
the tiles colour those bytes here (:func:`codes_rgba`: one pixel per grid cell, scaled
over the region — nearest neighbour, or bilinear when smoothing, as the browser draws it);
the browser colours the same bytes with the same table (:func:`hmil.attention_scale.code_lut`).

Shapes: ``coords`` ``(N, 2)`` level-0 top-left corners, ``scores`` ``(N,)`` one label's
attention, ``matrix`` ``(K, N)`` a level's K labels. Colours come from small built-in colormap
tables (no matplotlib).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

from hmil.attention_scale import (
    DEFAULT_SCALE,
    SCALES,
    AttentionScale,
    Legend,
    code_lut,
    code_positions,
    fit_scales,
)
from hmil.errors import AttentionError, ConfigError
from hmil.params import Interval, Options, param, validate
from hmil.patch_grid import PatchGrid, patch_grid, smooth_on_grid
from hmil.slides.reader import Region, Slide, fit_size

Normalization = Literal["relative", "raw", "percentile"]
NORMALIZATIONS: tuple[str, ...] = tuple(SCALES)

#: colormap name → anchor colours (RGB 0..255) evenly spaced on [0, 1]; interpolated to 256
_CMAP_ANCHORS: dict[str, tuple[tuple[int, int, int], ...]] = {
    # viridis and magma at 9 evenly spaced points (van der Walt & Smith's perceptual maps)
    "viridis": (
        (68, 1, 84), (71, 45, 123), (59, 82, 139), (44, 114, 142), (33, 144, 140),
        (39, 173, 129), (93, 200, 99), (170, 220, 50), (253, 231, 37),
    ),
    "magma": (
        (0, 0, 4), (29, 17, 71), (81, 18, 124), (130, 38, 129), (182, 54, 121),
        (230, 81, 100), (251, 136, 97), (254, 194, 135), (252, 253, 191),
    ),
    # Moreland's diverging cool-warm at 5 points
    "coolwarm": ((59, 76, 192), (141, 176, 254), (221, 221, 221), (244, 154, 123), (180, 4, 38)),
    # the classic rainbow CLAM uses (not perceptually uniform: it invents edges; on request only)
    "jet": (
        (0, 0, 128), (0, 0, 255), (0, 128, 255), (0, 255, 255), (128, 255, 128),
        (255, 255, 0), (255, 128, 0), (255, 0, 0), (128, 0, 0),
    ),
}  # fmt: skip
CMAPS: tuple[str, ...] = tuple(_CMAP_ANCHORS)
#: largest Gaussian sigma in patches (a wider one blurs a whole slide; memory grows with it)
MAX_SMOOTH = 64.0
#: largest longer side of a whole-slide PNG (16384² RGB is 0.8 GB in memory)
MAX_PNG_SIZE = 16384
#: largest level-0 patch side (no scanner makes a slide this many pixels wide per patch)
MAX_PATCH_SIZE = 2.0**20


def colormap_lut(name: str) -> np.ndarray:
    """The ``(256, 3)`` uint8 lookup table of colormap ``name`` (one of :data:`CMAPS`)."""
    if name not in _CMAP_ANCHORS:
        raise ConfigError("cmap", f"unknown colormap '{name}' (available: {', '.join(CMAPS)})")
    anchors = np.asarray(_CMAP_ANCHORS[name], dtype=np.float64)
    pos = np.linspace(0.0, 1.0, len(anchors))
    t = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(t, pos, anchors[:, c]) for c in range(3)], axis=1)
    return np.clip(np.rint(lut), 0, 255).astype(np.uint8)


def colormap_code_lut(name: str) -> np.ndarray:
    """The ``(256, 3)`` colour of each code under colormap ``name`` (what the PNG, the tiles
    and the browser colour with)."""
    return code_lut(colormap_lut(name))


@dataclass(frozen=True)
class HeatmapStyle:
    """How attention becomes colours; each field's help and accepted values are declared with
    it (:func:`hmil.params.param`; ``hmil heatmap --help`` shows them), checked on construction
    (:class:`~hmil.errors.ConfigError` naming the field, e.g. ``alpha``)."""

    cmap: str = param(
        "viridis",
        "colormap: viridis (default, perceptually uniform), magma, coolwarm or jet (not "
        "perceptually uniform)",
        Options(CMAPS),
    )
    alpha: float = param(0.5, "overlay opacity on coloured pixels", Interval(float, 0, 1))
    normalize: Normalization = param(  # noqa: RUF009  (param returns a dataclasses.field)
        DEFAULT_SCALE,
        "the colour scale (hmil.attention_scale.SCALES): relative = attention × an average "
        "patch's, log axis ×1–×10 shared by the level's labels, under ×1 uncoloured; "
        "percentile = rank among the patches per label; raw = attention weight, min-max of the "
        "level's labels",
        Options(NORMALIZATIONS),
    )
    smooth: float = param(
        0.0,
        "Gaussian sigma in patches (0 = blocky patches); smoothing never moves attention onto "
        "cells without a patch",
        Interval(float, 0, MAX_SMOOTH),
    )
    per_label: bool = param(
        False, "fit the relative/raw bounds to each label instead of the whole level"
    )

    def __post_init__(self) -> None:
        validate(self)


def normalize_scores(scores: np.ndarray, mode: Normalization = "percentile") -> np.ndarray:
    """Map ``(N,)`` scores to ``[0, 1]`` over this row alone (NaN = not coloured).

    ``percentile``: average rank / (N − 1), ties share a value. ``raw``: ``(s − min) / (max −
    min)``. A constant row maps to 0.5 under both. ``relative``: position on the fixed
    ×1–×10 log axis of ``N·s`` (NaN under ×1).

    Raises:
        HMILError: non-finite scores or an unknown mode.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    if mode not in NORMALIZATIONS:
        raise ConfigError("normalize", f"expected one of {', '.join(NORMALIZATIONS)}, got '{mode}'")
    if s.size == 0:
        return s.astype(np.float32)
    return fit_scales(s[None], mode)[0].positions(s)


def check_patch_size(patch_size: float, where: str = "patch_size") -> float:
    """``patch_size`` as a float if it is a usable level-0 patch side, else HMILError."""
    try:
        value = float(patch_size)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= MAX_PATCH_SIZE):
        raise ConfigError(
            where,
            f"must be a positive number of level-0 pixels (≤ {MAX_PATCH_SIZE:g}), got {patch_size}",
        )
    return value


def check_coords(coords: np.ndarray) -> np.ndarray:
    """``coords`` as an ``(N, 2)`` array with N ≥ 1, else HMILError."""
    c = np.asarray(coords)
    if c.ndim != 2 or c.shape[1] != 2 or c.shape[0] == 0:
        raise AttentionError("coords", f"expected a non-empty (N, 2) array, got shape {c.shape}")
    return c


def coords_extent(coords: np.ndarray, patch_size: float) -> Region:
    """The level-0 rectangle covering every patch (the canvas when there is no slide)."""
    c = check_coords(coords)
    x0, y0 = c.min(axis=0)
    x1, y1 = c.max(axis=0) + patch_size
    return Region(float(x0), float(y0), float(x1 - x0), float(y1 - y0))


# --------------------------------------------------------------------------- codes


@dataclass(frozen=True)
class LevelCodes:
    """A level's attention as colour codes.

    Attributes:
        codes: ``(K, N)`` uint8, 0 = not coloured, 1..255 colour positions.
        scales: one :class:`AttentionScale` per label (the same object when shared).
    """

    codes: np.ndarray
    scales: tuple[AttentionScale, ...]

    def legend(self, index: int) -> Legend:
        return self.scales[index].legend()


def level_codes(
    matrix: np.ndarray, coords: np.ndarray, patch_size: float, style: HeatmapStyle
) -> LevelCodes:
    """Smooth every label's attention on the patch grid, fit the scale(s), code each patch.

    Args:
        matrix: ``(K, N)`` attention of a level's K labels (each row sums to 1).
        coords: ``(N, 2)`` level-0 top-left corners.
        patch_size: level-0 patch side.
        style: scale, per-label bounds, smoothing.
    """
    rows = np.atleast_2d(np.asarray(matrix, dtype=np.float64))
    c = check_coords(coords)
    if rows.shape[1] != c.shape[0]:
        raise AttentionError("attention", f"{rows.shape[1]} scores for {c.shape[0]} coords")
    if not np.isfinite(rows).all():
        raise AttentionError("attention", f"{int((~np.isfinite(rows)).sum())} non-finite scores")
    if style.smooth > 0:
        grid = patch_grid(c, patch_size)
        rows = np.stack([smooth_on_grid(r, grid, style.smooth) for r in rows])
    scales = fit_scales(rows, style.normalize, style.per_label)
    codes = np.stack([scale.codes(r) for scale, r in zip(scales, rows, strict=True)])
    return LevelCodes(codes, tuple(scales))


def score_codes(scores: np.ndarray, coords: np.ndarray, patch_size: float, style: HeatmapStyle
                ) -> tuple[np.ndarray, AttentionScale]:  # fmt: skip
    """One label alone: ``(N,)`` codes and its scale (a level's labels share theirs only
    through :func:`level_codes`)."""
    coded = level_codes(np.asarray(scores, dtype=np.float64)[None], coords, patch_size, style)
    return coded.codes[0], coded.scales[0]


# --------------------------------------------------------------------------- pixels


def codes_rgba(
    codes: np.ndarray,
    coords: np.ndarray,
    patch_size: float,
    region: Region,
    out_size: tuple[int, int],
    style: HeatmapStyle,
    grid: PatchGrid | None = None,
) -> np.ndarray:
    """The coloured overlay of ``region`` at ``out_size = (W, H)``: ``(H, W, 4)`` uint8 RGBA.

    Patches on a grid (what ``hmil tile``, TRIDENT and CLAM write) colour one pixel per grid
    cell, scaled to the output with Pillow — nearest neighbour, or bilinear with smoothing, as
    the browser draws the same image — so the cost does not grow with N. Off-grid layouts and
    patches smaller than an output pixel are splatted at output resolution
    (:func:`rasterize`). Alpha is ``style.alpha`` where a coloured patch lies, 0 elsewhere.
    """
    c = check_coords(coords)
    code = np.asarray(codes, dtype=np.uint8).ravel()
    if code.shape[0] != c.shape[0]:
        raise AttentionError("attention", f"{code.shape[0]} scores for {c.shape[0]} coords")
    out_w, out_h = int(out_size[0]), int(out_size[1])
    if out_w < 1 or out_h < 1 or region.w <= 0 or region.h <= 0:
        raise ConfigError("region", f"empty region {region} or output size {out_size}")
    grid = grid or patch_grid(c, patch_size)
    lut = colormap_code_lut(style.cmap)
    if grid.exact and grid.step * out_w / region.w >= 1.0:
        cells = grid.paint(code)
        rgba = np.zeros((*cells.shape, 4), dtype=np.uint8)
        rgba[..., :3] = lut[cells]
        rgba[..., 3] = np.where(cells > 0, 255, 0)
        resample = Image.Resampling.BILINEAR if style.smooth > 0 else Image.Resampling.NEAREST
        out = _resample(rgba, grid, region, (out_w, out_h), resample)
    else:
        out = _splat_rgba(code, c, patch_size, region, (out_w, out_h), lut)
    out[..., 3] = np.rint(out[..., 3].astype(np.float32) * style.alpha).astype(np.uint8)
    return out


def _resample(
    cells: np.ndarray,
    grid: PatchGrid,
    region: Region,
    out_size: tuple[int, int],
    resample: Image.Resampling,
) -> np.ndarray:
    """``(rows, cols, 4)`` grid-cell RGBA → the ``(H, W, 4)`` output pixels of ``region``
    (transparent outside the grid)."""
    out_w, out_h = out_size
    gx0 = (region.x - grid.origin[0]) / grid.step
    gy0 = (region.y - grid.origin[1]) / grid.step
    gw, gh = region.w / grid.step, region.h / grid.step
    bx0, bx1 = max(gx0, 0.0), min(gx0 + gw, float(grid.cols))
    by0, by1 = max(gy0, 0.0), min(gy0 + gh, float(grid.rows))
    px0, px1 = round((bx0 - gx0) / gw * out_w), round((bx1 - gx0) / gw * out_w)
    py0, py1 = round((by0 - gy0) / gh * out_h), round((by1 - gy0) / gh * out_h)
    canvas = np.zeros((out_h, out_w, 4), dtype=np.uint8)
    if px1 > px0 and py1 > py0:
        image = Image.fromarray(cells, mode="RGBA")
        part = image.resize((px1 - px0, py1 - py0), resample, box=(bx0, by0, bx1, by1))
        canvas[py0:py1, px0:px1] = np.asarray(part)
    return canvas


def rasterize(
    values: np.ndarray,
    coords: np.ndarray,
    patch_size: float,
    region: Region,
    out_size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Average patch values into an output raster covering ``region``.

    A 2-D difference array (four ``bincount`` entries per patch and two cumulative sums)
    averages overlapping patches in O(N + pixels) whatever the layout.

    Args:
        values: ``(N,)`` one value per patch.
        coords: ``(N, 2)`` level-0 top-left corners.
        patch_size: level-0 patch side.
        region: the level-0 rectangle the raster shows.
        out_size: raster ``(W, H)``.

    Returns:
        ``value`` ``(H, W)`` float32 (mean of the patches covering each pixel, 0 elsewhere) and
        ``count`` ``(H, W)`` int32 (how many patches cover each pixel). A patch smaller than a
        pixel still covers one pixel.
    """
    c = check_coords(coords)
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.shape[0] != c.shape[0]:
        raise AttentionError("attention", f"{v.shape[0]} scores for {c.shape[0]} coords")
    out_w, out_h = int(out_size[0]), int(out_size[1])
    sx, sy = out_w / region.w, out_h / region.h
    x0 = np.rint((c[:, 0] - region.x) * sx).astype(np.int64)
    y0 = np.rint((c[:, 1] - region.y) * sy).astype(np.int64)
    x1 = np.maximum(np.rint((c[:, 0] + patch_size - region.x) * sx).astype(np.int64), x0 + 1)
    y1 = np.maximum(np.rint((c[:, 1] + patch_size - region.y) * sy).astype(np.int64), y0 + 1)
    visible = (x1 > 0) & (x0 < out_w) & (y1 > 0) & (y0 < out_h)
    x0, x1 = np.clip(x0[visible], 0, out_w), np.clip(x1[visible], 0, out_w)
    y0, y1 = np.clip(y0[visible], 0, out_h), np.clip(y1[visible], 0, out_h)
    v = v[visible]
    stride = out_w + 1
    idx = np.concatenate([y0 * stride + x0, y0 * stride + x1, y1 * stride + x0, y1 * stride + x1])
    sign = np.concatenate([np.ones_like(v), -np.ones_like(v), -np.ones_like(v), np.ones_like(v)])
    size = (out_h + 1) * stride
    total = np.bincount(idx, weights=sign * np.tile(v, 4), minlength=size).reshape(out_h + 1, -1)
    count = np.bincount(idx, weights=sign, minlength=size).reshape(out_h + 1, -1)
    total = total.cumsum(axis=0).cumsum(axis=1)[:out_h, :out_w]
    count_i = np.rint(count.cumsum(axis=0).cumsum(axis=1)[:out_h, :out_w]).astype(np.int32)
    value = np.divide(total, count_i, out=np.zeros(total.shape), where=count_i > 0)
    return value.astype(np.float32), count_i


def _splat_rgba(
    codes: np.ndarray,
    coords: np.ndarray,
    patch_size: float,
    region: Region,
    out_size: tuple[int, int],
    lut: np.ndarray,
) -> np.ndarray:
    """Off-grid layouts: average the coloured patches' positions per output pixel (patches
    with code 0 do not count), then colour; alpha 255 where a coloured patch lies."""
    coloured = codes > 0
    rgba = np.zeros((out_size[1], out_size[0], 4), dtype=np.uint8)
    if not coloured.any():
        return rgba
    positions = code_positions(codes[coloured])
    value, count = rasterize(positions, coords[coloured], patch_size, region, out_size)
    index = (1 + np.rint(np.clip(value, 0, 1) * 254)).astype(np.int64)
    rgba[..., :3] = lut[index]
    rgba[..., 3] = np.where(count > 0, 255, 0)
    return rgba


def heatmap_rgba(
    scores: np.ndarray,
    coords: np.ndarray,
    patch_size: float,
    region: Region,
    out_size: tuple[int, int],
    style: HeatmapStyle | None = None,
) -> np.ndarray:
    """One label's overlay of ``region`` at ``out_size``, its scale fitted to this label alone:
    ``(H, W, 4)`` uint8 RGBA (see :func:`codes_rgba`). Scores are scaled over all N patches,
    not only the visible ones, so colours do not change while panning."""
    style = style or HeatmapStyle()
    codes, _ = score_codes(scores, coords, patch_size, style)
    return codes_rgba(codes, coords, patch_size, region, out_size, style)


def blend(base: np.ndarray, overlay: np.ndarray) -> np.ndarray:
    """Alpha-blend ``(H, W, 4)`` RGBA ``overlay`` over ``(H, W, 3)`` uint8 ``base``."""
    if base.shape[:2] != overlay.shape[:2]:
        raise ValueError(f"base {base.shape[:2]} and overlay {overlay.shape[:2]} differ in size")
    under = Image.fromarray(np.ascontiguousarray(base[..., :3]))
    over = Image.fromarray(np.ascontiguousarray(overlay), mode="RGBA")
    under.paste(over, (0, 0), over)  # C-side blend: base·(1 − α) + colour·α
    return np.asarray(under)


def whole_region(coords: np.ndarray, patch_size: float, slide: Slide | None) -> Region:
    """The slide's level-0 rectangle, or without a slide the extent of the patches."""
    if slide is not None:
        w, h = slide.dimensions
        return Region(0.0, 0.0, float(w), float(h))
    return coords_extent(coords, patch_size)


def render_codes(
    codes: np.ndarray,
    coords: np.ndarray,
    patch_size: float,
    style: HeatmapStyle,
    slide: Slide | None = None,
    max_size: int = 2048,
) -> np.ndarray:
    """Whole-slide picture of coded attention (or, without a slide, of the coords' extent on
    white) with its longer side at most ``max_size`` — never a level-0 canvas.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    if not 1 <= max_size <= MAX_PNG_SIZE:
        raise ConfigError("max_size", f"must be within [1, {MAX_PNG_SIZE}], got {max_size}")
    region = whole_region(coords, patch_size, slide)
    out_size = fit_size(region.w, region.h, max_size)
    base = _base(slide, region, out_size)
    return blend(base, codes_rgba(codes, coords, patch_size, region, out_size, style))


def _base(slide: Slide | None, region: Region, out_size: tuple[int, int]) -> np.ndarray:
    """``(H, W, 3)`` pixels under the overlay: the slide's ``region`` at ``out_size``, or
    white without a slide."""
    out_w, out_h = int(out_size[0]), int(out_size[1])
    if slide is not None:
        return slide.read_rect(region, (out_w, out_h))
    return np.full((out_h, out_w, 3), 255, dtype=np.uint8)


def render_overlay(
    scores: np.ndarray,
    coords: np.ndarray,
    patch_size: float,
    region: Region,
    out_size: tuple[int, int],
    style: HeatmapStyle | None = None,
    slide: Slide | None = None,
) -> np.ndarray:
    """The heatmap of a viewport: ``region`` (level 0) rendered at ``out_size = (W, H)`` over
    the slide read at the coarsest level fine enough (white without a slide).

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    size = (int(out_size[0]), int(out_size[1]))
    base = _base(slide, region, size)
    return blend(base, heatmap_rgba(scores, coords, patch_size, region, size, style))


def render_heatmap(
    scores: np.ndarray,
    coords: np.ndarray,
    patch_size: float,
    slide: Slide | None = None,
    max_size: int = 2048,
    style: HeatmapStyle | None = None,
) -> np.ndarray:
    """Whole-slide heatmap of one label, scaled over that label alone (see
    :func:`render_codes`). Returns ``(H, W, 3)`` uint8 RGB."""
    style = style or HeatmapStyle()
    codes, _ = score_codes(scores, coords, patch_size, style)
    return render_codes(codes, coords, patch_size, style, slide, max_size)


# --------------------------------------------------------------------------- legend


#: the legend box never covers more than this share of the picture's width
LEGEND_MAX_WIDTH_SHARE = 0.6
#: pictures narrower or lower than this get no legend (it would hide the map)
LEGEND_MIN_PICTURE = (200, 120)


def draw_legend(image: np.ndarray, legend: Legend, cmap: str, label: str = "") -> np.ndarray:
    """``image`` ``(H, W, 3)`` uint8 with a colour bar of ``legend`` in its lower-left corner:
    the label's name and the scale's title, the bar in the code colours with tick values, and
    what an uncoloured patch means. Pictures smaller than :data:`LEGEND_MIN_PICTURE` come back
    unchanged."""
    from PIL import ImageDraw, ImageFont

    h, w = image.shape[:2]
    if w < LEGEND_MIN_PICTURE[0] or h < LEGEND_MIN_PICTURE[1]:
        return image
    size = int(np.clip(min(w, h) / 45, 11, 28))
    font = ImageFont.load_default(size=size)
    pad, bar_h, line_h = size // 2, size, size + size // 3
    box_w = int(min(w * LEGEND_MAX_WIDTH_SHARE, max(size * 26, 200)))
    canvas = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    draw = ImageDraw.Draw(canvas)
    text_w = box_w - 2 * pad
    title = f"{label} · {legend.title}" if label else legend.title
    head = _wrap(draw, _plain(title), font, text_w, lines=2)
    note = _wrap(draw, _plain(legend.uncoloured), font, text_w, lines=1)
    box_h = pad + line_h * len(head) + bar_h + line_h * (1 + len(note)) + pad // 2
    x0, y0 = pad, h - box_h - pad
    draw.rectangle((x0, y0, x0 + box_w, y0 + box_h), fill=(255, 255, 255), outline=(120, 120, 120))
    for i, line in enumerate(head):
        draw.text((x0 + pad, y0 + pad // 2 + i * line_h), line, fill=(30, 30, 30), font=font)
    bar_x0, bar_x1 = x0 + pad, x0 + box_w - pad
    bar_y = y0 + pad // 2 + line_h * len(head)
    lut = colormap_code_lut(cmap)
    codes = 1 + np.rint(np.linspace(0, 1, bar_x1 - bar_x0) * 254).astype(np.int64)
    strip = np.broadcast_to(lut[codes][None], (bar_h, bar_x1 - bar_x0, 3))
    canvas.paste(Image.fromarray(np.ascontiguousarray(strip)), (bar_x0, bar_y))
    for position, text in legend.ticks:
        x = bar_x0 + position * (bar_x1 - bar_x0 - 1)
        draw.line((x, bar_y + bar_h, x, bar_y + bar_h + size // 3), fill=(30, 30, 30))
        plain = _plain(text)
        tw = draw.textlength(plain, font=font)
        tx = min(max(x - tw / 2, bar_x0), bar_x1 - tw)
        draw.text((tx, bar_y + bar_h + size // 3), plain, fill=(30, 30, 30), font=font)
    for i, line in enumerate(note):
        y = bar_y + bar_h + line_h * (1 + i)
        draw.text((x0 + pad, y), line, fill=(80, 80, 80), font=font)
    return np.asarray(canvas)


#: the PNG's built-in font has no glyph for these: written in ASCII instead
_ASCII = str.maketrans({"×": "x", "≥": ">=", "–": "-", "·": "-", "’": "'"})


def _plain(text: str) -> str:
    return text.translate(_ASCII)


def _wrap(draw: Any, text: str, font: Any, width: float, lines: int) -> list[str]:
    """``text`` broken at spaces into at most ``lines`` lines of ``width`` pixels (the last
    shortened with an ellipsis when it still does not fit). ``draw`` is a Pillow
    ``ImageDraw``, ``font`` one of its fonts."""
    measure = draw.textlength
    out: list[str] = []
    words = text.split()
    while words and len(out) < lines:
        line = words.pop(0)
        while words and measure(line + " " + words[0], font=font) <= width:
            line += " " + words.pop(0)
        out.append(line)
    if words or (out and measure(out[-1], font=font) > width):
        last = " ".join([out[-1], *words]) if out else ""
        while last and measure(last + "...", font=font) > width:
            last = last[:-1]
        out[-1] = last.rstrip() + "..."
    return out
