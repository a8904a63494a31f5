"""Attention → pictures: overlays aligned with the slide, QuPath GeoJSON, top-k patch crops.

The viewer and ``hmil heatmap`` share these functions. Inputs are one attention row
``scores`` ``(N,)`` (any coarse or fine class), the bag's ``coords`` ``(N, 2)`` (level-0
top-left corners) and the level-0 patch size. Rendering works on any level-0 rectangle
(:class:`hmil.slides.Region`) at any output size, so a viewer can pan and zoom by asking for a
new region; whole-slide renders are the special case ``region = whole slide``.

Rendering is vectorised: patches are splatted into the output raster with a 2-D
difference array (four ``bincount`` entries per patch + two cumulative sums), which averages
overlapping patches and costs O(N + pixels) whatever the patch layout. Colours come from small
built-in colormap tables (no matplotlib).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from hmil.errors import HMILError, SlideError
from hmil.io import atomic_path
from hmil.slides.match import SlideMatch, check_bag_on_slide
from hmil.slides.reader import Region, Slide, fit_size

Normalization = Literal["raw", "percentile"]
NORMALIZATIONS: tuple[str, ...] = ("raw", "percentile")

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
    # the classic rainbow CLAM uses (not perceptually uniform; offered for familiarity)
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
        raise HMILError("--cmap", f"unknown colormap '{name}' (available: {', '.join(CMAPS)})")
    anchors = np.asarray(_CMAP_ANCHORS[name], dtype=np.float64)
    pos = np.linspace(0.0, 1.0, len(anchors))
    t = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(t, pos, anchors[:, c]) for c in range(3)], axis=1)
    return np.clip(np.rint(lut), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class HeatmapStyle:
    """How scores become colours.

    Attributes:
        cmap: colormap name (:data:`CMAPS`).
        alpha: overlay opacity on covered pixels, 0..1.
        normalize: ``percentile`` (rank of each score among all N, robust to the softmax's
            heavy tail) or ``raw`` (min–max scaling of the scores).
        smooth: Gaussian sigma in patches, 0..:data:`MAX_SMOOTH` (0 = blocky patches);
            smoothing never spreads colour outside the patches.
    """

    cmap: str = "viridis"
    alpha: float = 0.5
    normalize: Normalization = "percentile"
    smooth: float = 0.0

    def __post_init__(self) -> None:
        colormap_lut(self.cmap)
        if not 0.0 <= self.alpha <= 1.0:
            raise HMILError("--alpha", f"must be within [0, 1], got {self.alpha}")
        if self.normalize not in NORMALIZATIONS:
            raise HMILError("--normalize", f"expected raw or percentile, got '{self.normalize}'")
        if not 0.0 <= self.smooth <= MAX_SMOOTH:
            raise HMILError(
                "--smooth", f"must be within [0, {MAX_SMOOTH:g}] patches, got {self.smooth}"
            )


def normalize_scores(scores: np.ndarray, mode: Normalization = "percentile") -> np.ndarray:
    """Map ``(N,)`` scores to ``[0, 1]``.

    ``percentile``: average rank / (N − 1), so ties share a value and the map uses the whole
    colour range whatever the scale of the attention. ``raw``: ``(s − min) / (max − min)``.
    A constant row maps to 0.5 under both.

    Raises:
        HMILError: non-finite scores or an unknown mode.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size and not np.isfinite(s).all():
        raise HMILError("attention", f"{int((~np.isfinite(s)).sum())} non-finite scores")
    if s.size == 0:
        return s.astype(np.float32)
    lo, hi = float(s.min()), float(s.max())
    if hi <= lo:
        return np.full(s.shape, 0.5, dtype=np.float32)
    if mode == "raw":
        return ((s - lo) / (hi - lo)).astype(np.float32)
    if mode != "percentile":
        raise HMILError("--normalize", f"expected raw or percentile, got '{mode}'")
    order = np.argsort(s, kind="stable")
    sorted_s = s[order]
    # average rank of tied values: first and last position of each value's run
    first = np.searchsorted(sorted_s, sorted_s, side="left")
    last = np.searchsorted(sorted_s, sorted_s, side="right") - 1
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = (first + last) / 2.0
    return (ranks / (s.size - 1)).astype(np.float32)


def check_patch_size(patch_size: float, where: str = "--patch-size") -> float:
    """``patch_size`` as a float if it is a usable level-0 patch side, else HMILError."""
    try:
        value = float(patch_size)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= MAX_PATCH_SIZE):
        raise HMILError(
            where,
            f"must be a positive number of level-0 pixels (≤ {MAX_PATCH_SIZE:g}), got {patch_size}",
        )
    return value


def coords_extent(coords: np.ndarray, patch_size: float) -> Region:
    """The level-0 rectangle covering every patch (the canvas when there is no slide)."""
    c = _check_coords(coords)
    x0, y0 = c.min(axis=0)
    x1, y1 = c.max(axis=0) + patch_size
    return Region(float(x0), float(y0), float(x1 - x0), float(y1 - y0))


def rasterize(
    values: np.ndarray,
    coords: np.ndarray,
    patch_size: float,
    region: Region,
    out_size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Average patch values into an output raster covering ``region``.

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
    c = _check_coords(coords)
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.shape[0] != c.shape[0]:
        raise HMILError("attention", f"{v.shape[0]} scores for {c.shape[0]} coords")
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


def heatmap_rgba(
    scores: np.ndarray,
    coords: np.ndarray,
    patch_size: float,
    region: Region,
    out_size: tuple[int, int],
    style: HeatmapStyle | None = None,
) -> np.ndarray:
    """The coloured overlay of ``region`` at ``out_size``: ``(H, W, 4)`` uint8 RGBA.

    Scores are normalised over all N patches (not only the visible ones), so colours do not
    change while panning. Alpha is ``style.alpha`` on pixels covered by a patch, 0 elsewhere.

    Patches on a common grid (what ``hmil tile``, TRIDENT and single-contour CLAM write) are
    coloured once per grid cell and resampled to the output with Pillow — the cost is then
    independent of the number of patches. Other layouts (overlapping or per-contour grids) are
    splatted at output resolution by :func:`rasterize`.
    """
    style = style or HeatmapStyle()
    values = normalize_scores(scores, style.normalize)
    c = _check_coords(coords)
    if values.shape[0] != c.shape[0]:
        raise HMILError("attention", f"{values.shape[0]} scores for {c.shape[0]} coords")
    out_w, out_h = int(out_size[0]), int(out_size[1])
    if out_w < 1 or out_h < 1 or region.w <= 0 or region.h <= 0:
        raise HMILError("region", f"empty region {region} or output size {out_size}")
    grid = _PatchGrid.build(c, patch_size)
    if grid is not None and patch_size * out_w / region.w >= 1.0:
        return grid.render(values, region, (out_w, out_h), style)
    return _splat_rgba(values, c, patch_size, region, (out_w, out_h), style)


@dataclass(frozen=True)
class _PatchGrid:
    """Patches that sit on one grid of step = patch size: cell ``(row, col)`` per patch."""

    origin: tuple[float, float]
    step: float
    shape: tuple[int, int]
    flat: np.ndarray  # (N,) cell index row * cols + col

    @classmethod
    def build(cls, coords: np.ndarray, patch_size: float) -> _PatchGrid | None:
        step = float(patch_size)
        origin = coords.min(axis=0).astype(np.float64)
        rel = (coords - origin) / step
        cells = np.rint(rel).astype(np.int64)
        if not np.allclose(rel, cells, atol=1e-6):
            return None
        rows, cols = int(cells[:, 1].max()) + 1, int(cells[:, 0].max()) + 1
        if rows * cols > 4 * coords.shape[0] + 1_000_000:  # too sparse for a dense grid
            return None
        return cls(
            (float(origin[0]), float(origin[1])),
            step,
            (rows, cols),
            cells[:, 1] * cols + cells[:, 0],
        )

    def render(
        self,
        values: np.ndarray,
        region: Region,
        out_size: tuple[int, int],
        style: HeatmapStyle,
    ) -> np.ndarray:
        rows, cols = self.shape
        total = np.bincount(self.flat, weights=values, minlength=rows * cols)
        count = np.bincount(self.flat, minlength=rows * cols)
        covered = (count > 0).reshape(rows, cols)
        cell = np.divide(total, count, out=np.zeros(rows * cols), where=count > 0)
        cell = cell.reshape(rows, cols).astype(np.float32)
        if style.smooth <= 0:
            cells = Image.fromarray(_colorize(cell, covered, style), mode="RGBA")
            return self._resample(cells, region, out_size, Image.Resampling.NEAREST)
        # smooth on the grid (sigma in patches), then interpolate values bilinearly while the
        # coverage stays sharp, and colour at output resolution
        smooth = _smooth(cell, covered, style.smooth, keep_outside=True)
        value = self._resample(
            Image.fromarray(smooth, mode="F"), region, out_size, Image.Resampling.BILINEAR
        )
        mask = self._resample(
            Image.fromarray(covered.astype(np.uint8)), region, out_size, Image.Resampling.NEAREST
        )
        return _colorize(value, mask > 0, style)

    def _resample(
        self,
        image: Image.Image,
        region: Region,
        out_size: tuple[int, int],
        resample: Image.Resampling,
    ) -> np.ndarray:
        """Grid-cell image (one pixel per cell) → the output pixels of ``region``.

        Returns:
            ``(H, W, 4)`` uint8 for an RGBA image, else ``(H, W)`` in the image's dtype; zeros
            outside the grid.
        """
        out_w, out_h = out_size
        rows, cols = self.shape
        gx0 = (region.x - self.origin[0]) / self.step
        gy0 = (region.y - self.origin[1]) / self.step
        gw, gh = region.w / self.step, region.h / self.step
        bx0, bx1 = max(gx0, 0.0), min(gx0 + gw, float(cols))
        by0, by1 = max(gy0, 0.0), min(gy0 + gh, float(rows))
        px0, px1 = round((bx0 - gx0) / gw * out_w), round((bx1 - gx0) / gw * out_w)
        py0, py1 = round((by0 - gy0) / gh * out_h), round((by1 - gy0) / gh * out_h)
        dtype = np.float32 if image.mode == "F" else np.uint8
        shape = (out_h, out_w, 4) if image.mode == "RGBA" else (out_h, out_w)
        canvas = np.zeros(shape, dtype=dtype)
        if px1 > px0 and py1 > py0:
            part = image.resize((px1 - px0, py1 - py0), resample, box=(bx0, by0, bx1, by1))
            canvas[py0:py1, px0:px1] = np.asarray(part)
        return canvas


def _colorize(value: np.ndarray, covered: np.ndarray, style: HeatmapStyle) -> np.ndarray:
    """``(H, W)`` values in [0, 1] → ``(H, W, 4)`` RGBA (alpha 0 where not covered)."""
    lut = colormap_lut(style.cmap)
    index = np.clip(np.rint(value * 255.0), 0, 255).astype(np.uint8)
    rgba = np.empty((*value.shape, 4), dtype=np.uint8)
    rgba[..., :3] = lut[index]
    rgba[..., 3] = np.where(covered, round(style.alpha * 255), 0).astype(np.uint8)
    return rgba


def _splat_rgba(
    values: np.ndarray,
    coords: np.ndarray,
    patch_size: float,
    region: Region,
    out_size: tuple[int, int],
    style: HeatmapStyle,
) -> np.ndarray:
    """General layouts: average patches per output pixel, smooth in pixels, colour."""
    out_w, out_h = out_size
    if style.smooth > 0:
        sigma_px = style.smooth * patch_size * out_w / region.w
        margin = math.ceil(3 * sigma_px)
        scale_x, scale_y = region.w / out_w, region.h / out_h
        padded = Region(
            region.x - margin * scale_x,
            region.y - margin * scale_y,
            region.w + 2 * margin * scale_x,
            region.h + 2 * margin * scale_y,
        )
        value, count = rasterize(
            values, coords, patch_size, padded, (out_w + 2 * margin, out_h + 2 * margin)
        )
        value = _smooth(value, count > 0, sigma_px)
        value = value[margin : margin + out_h, margin : margin + out_w]
        count = count[margin : margin + out_h, margin : margin + out_w]
    else:
        value, count = rasterize(values, coords, patch_size, region, (out_w, out_h))
    return _colorize(value, count > 0, style)


def _smooth(
    value: np.ndarray, covered: np.ndarray, sigma: float, keep_outside: bool = False
) -> np.ndarray:
    """Normalised Gaussian smoothing (``sigma`` in raster pixels) of ``(H, W)`` values.

    Uncovered pixels do not contribute; they receive 0 unless ``keep_outside`` (then they get
    the weighted mean of their neighbourhood, so a later interpolation has no dark rim).
    """
    from skimage.filters import gaussian

    if sigma < 0.3:
        return value
    weight = covered.astype(np.float32)
    num = gaussian(value * weight, sigma=sigma, mode="constant", preserve_range=True)
    den = gaussian(weight, sigma=sigma, mode="constant", preserve_range=True)
    out = np.divide(num, den, out=np.zeros_like(num), where=den > 1e-6)
    if keep_outside:
        return out.astype(np.float32)
    return np.where(covered, out, 0.0).astype(np.float32)


def blend(base: np.ndarray, overlay: np.ndarray) -> np.ndarray:
    """Alpha-blend ``(H, W, 4)`` RGBA ``overlay`` over ``(H, W, 3)`` uint8 ``base``."""
    if base.shape[:2] != overlay.shape[:2]:
        raise ValueError(f"base {base.shape[:2]} and overlay {overlay.shape[:2]} differ in size")
    under = Image.fromarray(np.ascontiguousarray(base[..., :3]))
    over = Image.fromarray(np.ascontiguousarray(overlay), mode="RGBA")
    under.paste(over, (0, 0), over)  # C-side blend: base·(1 − α) + colour·α
    return np.asarray(under)


def render_overlay(
    scores: np.ndarray,
    coords: np.ndarray,
    patch_size: float,
    region: Region,
    out_size: tuple[int, int],
    style: HeatmapStyle | None = None,
    slide: Slide | None = None,
) -> np.ndarray:
    """The heatmap of a viewport: ``region`` (level 0) rendered at ``out_size = (W, H)``.

    The slide is read at the coarsest level fine enough for ``out_size``; without a slide the
    overlay sits on a white canvas.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    out_w, out_h = int(out_size[0]), int(out_size[1])
    if slide is not None:
        base = slide.read_rect(region, (out_w, out_h))
    else:
        base = np.full((out_h, out_w, 3), 255, dtype=np.uint8)
    return blend(base, heatmap_rgba(scores, coords, patch_size, region, (out_w, out_h), style))


def render_heatmap(
    scores: np.ndarray,
    coords: np.ndarray,
    patch_size: float,
    slide: Slide | None = None,
    max_size: int = 2048,
    style: HeatmapStyle | None = None,
) -> np.ndarray:
    """Whole-slide heatmap (or, without a slide, the extent of the coords) with its longer side
    at most ``max_size`` pixels — never a level-0 canvas.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    if not 1 <= max_size <= MAX_PNG_SIZE:
        raise HMILError("--max-size", f"must be within [1, {MAX_PNG_SIZE}], got {max_size}")
    if slide is not None:
        w, h = slide.dimensions
        region = Region(0.0, 0.0, float(w), float(h))
    else:
        region = coords_extent(coords, patch_size)
    out_size = fit_size(region.w, region.h, max_size)
    return render_overlay(scores, coords, patch_size, region, out_size, style, slide)


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an ``(H, W, 3|4)`` uint8 image as PNG atomically."""
    out = Path(path)
    with atomic_path(out) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return out


# --------------------------------------------------------------------------- GeoJSON


#: QuPath classification colours per label index (Tableau 10), RGB 0..255
_CLASS_COLOURS: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip


def class_colour(index: int) -> tuple[int, int, int]:
    """The colour of the ``index``-th label in GeoJSON classifications (cycles after 10)."""
    return _CLASS_COLOURS[index % len(_CLASS_COLOURS)]


def top_labels(attention: Mapping[str, np.ndarray]) -> list[str]:
    """Per patch, the label whose attention on it is highest (ties: the first label).

    Each label's attention row sums to 1 over the slide's patches, so rows are comparable: the
    top label is the class that draws most on the patch.

    Args:
        attention: label → ``(N,)`` attention, in class order.

    Returns:
        ``N`` label names.
    """
    names = list(attention)
    rows = np.stack([np.asarray(attention[n], dtype=np.float64).ravel() for n in names])
    return [names[i] for i in rows.argmax(axis=0)]


def _classifications(labels: list[str] | None, n: int) -> list[str]:
    """Per-patch JSON of ``properties.classification`` (QuPath: ``{"name", "color"}``)."""
    if labels is None:
        return [""] * n
    if len(labels) != n:
        raise HMILError("classification", f"{len(labels)} labels for {n} patches")
    order = list(dict.fromkeys(labels))
    text = {
        name: ',"classification":'
        + json.dumps({"name": name, "color": list(class_colour(i))}, separators=(",", ":"))
        for i, name in enumerate(order)
    }
    return [text[name] for name in labels]


def geojson_collection(
    coords: np.ndarray,
    patch_size: float,
    measurements: Mapping[str, np.ndarray],
    object_type: str = "detection",
    classification: list[str] | None = None,
    offset: tuple[float, float] = (0, 0),
) -> dict[str, object]:
    """A QuPath-importable ``FeatureCollection``: one square ``Polygon`` per patch.

    Args:
        coords: ``(N, 2)`` level-0 top-left corners.
        patch_size: level-0 patch side.
        measurements: measurement name → ``(N,)`` values (e.g. ``attention_IC``); stored per
            feature under ``properties.measurements``.
        object_type: QuPath object type (``detection`` is light enough for 100k patches).
        classification: per patch, a class name for ``properties.classification`` (e.g.
            :func:`top_labels`), written as ``{"name", "color"}`` as QuPath requires.
        offset: subtracted from the coordinates (a slide's :attr:`~hmil.slides.Slide.offset`:
            QuPath shows OpenSlide slides cropped to their bounds).

    Returns:
        The GeoJSON object (geometry in QuPath's image pixels, y down).
    """
    text = geojson_text(coords, patch_size, measurements, object_type, classification, offset)
    return json.loads(text)


def geojson_text(
    coords: np.ndarray,
    patch_size: float,
    measurements: Mapping[str, np.ndarray],
    object_type: str = "detection",
    classification: list[str] | None = None,
    offset: tuple[float, float] = (0, 0),
) -> str:
    """The text of :func:`geojson_collection` (see there for the arguments)."""
    return "".join(
        _geojson_chunks(coords, patch_size, measurements, object_type, classification, offset)
    )


def _geojson_chunks(
    coords: np.ndarray,
    patch_size: float,
    measurements: Mapping[str, np.ndarray],
    object_type: str,
    classification: list[str] | None,
    offset: tuple[float, float],
) -> Iterator[str]:
    """The GeoJSON text feature by feature, from string templates (about 4× faster than
    building the dict and ``json.dumps`` for 100k patches, and without holding either).
    Integer coordinates are written as integers."""
    c = _check_coords(coords)
    names = [json.dumps(name) + ":" for name in measurements]
    columns = []
    for name, vals in measurements.items():
        arr = np.asarray(vals, dtype=np.float64).ravel()
        if arr.shape[0] != c.shape[0]:
            raise HMILError(name, f"{arr.shape[0]} values for {c.shape[0]} patches")
        if not np.isfinite(arr).all():
            raise HMILError(name, "non-finite measurement values")
        columns.append(arr.tolist())
    classes = _classifications(classification, c.shape[0])
    dx, dy = offset
    integral = (
        float(patch_size).is_integer()
        and np.issubdtype(c.dtype, np.integer)
        and float(dx).is_integer()
        and float(dy).is_integer()
    )
    if integral:
        s: float = int(patch_size)
        xs = (c[:, 0].astype(np.int64) - int(dx)).tolist()
        ys = (c[:, 1].astype(np.int64) - int(dy)).tolist()
    else:
        s = float(patch_size)
        xs = (c[:, 0].astype(np.float64) - float(dx)).tolist()
        ys = (c[:, 1].astype(np.float64) - float(dy)).tolist()
    kind = json.dumps(object_type)
    yield '{"type":"FeatureCollection","features":['
    for i, (x, y, cls, *values) in enumerate(zip(xs, ys, classes, *columns, strict=True)):
        x1, y1 = x + s, y + s
        meas = ",".join([n + repr(v) for n, v in zip(names, values, strict=True)])
        yield (
            ("," if i else "")
            + '{"type":"Feature","geometry":{"type":"Polygon","coordinates":'
            + f"[[[{x},{y}],[{x1},{y}],[{x1},{y1}],[{x},{y1}],[{x},{y}]]]}},"
            + f'"properties":{{"objectType":{kind},"name":"patch {i}"{cls},'
            + f'"measurements":{{{meas}}}}}}}'
        )
    yield "]}"


def write_geojson(
    path: str | Path,
    coords: np.ndarray,
    patch_size: float,
    measurements: Mapping[str, np.ndarray],
    object_type: str = "detection",
    classification: list[str] | None = None,
    offset: tuple[float, float] = (0, 0),
) -> Path:
    """Write the :func:`geojson_collection` of the patches to ``path`` atomically (streamed)."""
    chunks = _geojson_chunks(coords, patch_size, measurements, object_type, classification, offset)
    first = next(chunks)  # validates the inputs before a file is created
    out = Path(path)
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(first)
        for chunk in chunks:
            handle.write(chunk)
    return out


# --------------------------------------------------------------------------- top-k crops


def topk_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, highest first (ties: lower index first)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    k = max(0, min(int(k), s.size))
    order = np.lexsort((np.arange(s.size), -s))
    return order[:k]


def save_topk_crops(
    slide: Slide,
    coords: np.ndarray,
    patch_size: float,
    scores: np.ndarray,
    k: int,
    out_dir: str | Path,
    label: str,
    crop_px: int | None = None,
) -> list[Path]:
    """Save the ``k`` highest-scoring patches of ``label`` as PNGs.

    Files go to ``out_dir/<label>/<rank>_<slide_id>_x<X>_y<Y>_a<score>.png`` (CLAM's naming,
    rank from 00); each crop shows the patch's level-0 square at ``crop_px`` pixels (default:
    the level-0 size, at most 512).
    """
    c = _check_coords(coords)
    size0 = float(patch_size)
    px = int(crop_px or min(round(size0), 512))
    folder = Path(out_dir) / _safe_name(label)
    paths: list[Path] = []
    for rank, i in enumerate(topk_indices(scores, k)):
        x, y = int(c[i, 0]), int(c[i, 1])
        crop = slide.read_rect(Region(x, y, size0, size0), (px, px))
        name = f"{rank:02d}_{slide.slide_id}_x{x}_y{y}_a{float(scores[i]):.4g}.png"
        paths.append(save_png(folder / name, crop))
    return paths


def _safe_name(label: str) -> str:
    """A label usable as a folder name (path separators and odd characters replaced)."""
    cleaned = re.sub(r"[^A-Za-z0-9._+-]+", "_", label).strip("._")
    return cleaned or "label"


def _check_coords(coords: np.ndarray) -> np.ndarray:
    c = np.asarray(coords)
    if c.ndim != 2 or c.shape[1] != 2 or c.shape[0] == 0:
        raise HMILError("coords", f"expected a non-empty (N, 2) array, got shape {c.shape}")
    return c


# --------------------------------------------------------------------------- one call


@dataclass
class HeatmapOutputs:
    """Files written by :func:`export_heatmap`."""

    png: Path
    geojson: Path | None = None
    crops: dict[str, list[Path]] | None = None


def export_heatmap(
    attention: Mapping[str, np.ndarray],
    label: str,
    coords: np.ndarray,
    patch_size: float,
    out_png: str | Path,
    *,
    slide: Slide | None = None,
    geojson: str | Path | None = None,
    crops_dir: str | Path | None = None,
    topk: int = 0,
    max_size: int = 2048,
    style: HeatmapStyle | None = None,
    crop_px: int | None = None,
    bag_attrs: Mapping[str, object] | None = None,
    allow_slide_mismatch: bool = False,
) -> HeatmapOutputs:
    """Heatmap PNG of ``label`` (+ GeoJSON of every label, + top-k crops of every label).

    Args:
        attention: label → ``(N,)`` attention of one hierarchy level, in class order.
        label: the class drawn in the PNG.
        coords: ``(N, 2)`` level-0 top-left corners.
        patch_size: level-0 patch side.
        out_png: PNG path (longer side ≤ ``max_size``).
        slide: draw over this slide (else a white canvas over the coords' extent).
        geojson: also write QuPath GeoJSON with ``attention_<label>`` for every label and the
            patch's :func:`top_labels` as its ``classification``, in QuPath's coordinates
            (level-0 minus the slide's bounds offset, from ``slide`` or the bag's attributes).
        crops_dir: with ``topk`` > 0, save each label's top-k patches under
            ``crops_dir/<label>/`` (needs ``slide``).
        topk: patches per label to crop.
        max_size: longer side of the PNG.
        style: colours, normalisation, smoothing.
        crop_px: crop size in pixels (default: level-0 size, at most 512).
        bag_attrs: the bag's attributes; the slide fields recorded by ``hmil tile`` (``name``,
            ``level0_width``/``level0_height``, ``mpp``) must match ``slide``, else the coords
            must lie inside it (:func:`hmil.slides.match.check_bag_on_slide`).
        allow_slide_mismatch: draw over ``slide`` even when the bag records another (a renamed
            slide file); the check still runs.
    """
    if label not in attention:
        raise HMILError("--label", f"unknown label '{label}' (choose from: {', '.join(attention)})")
    c = _check_coords(coords)
    patch_size = check_patch_size(patch_size)
    if slide is not None:
        _check_on_slide(c, slide, bag_attrs or {}, allow_slide_mismatch)
    if topk > 0 and (slide is None or crops_dir is None):
        raise HMILError("--topk", "needs --slide and --crops DIR (crops are cut from the slide)")
    image = render_heatmap(attention[label], c, patch_size, slide, max_size, style)
    outputs = HeatmapOutputs(png=Path(out_png))
    # the PNG is renamed into place only once the GeoJSON is written: a failed export leaves
    # neither (nothing half-done)
    with atomic_path(out_png) as png_tmp:
        Image.fromarray(image).save(png_tmp, format="PNG")
        if geojson is not None:
            measurements = {f"attention_{name}": row for name, row in attention.items()}
            outputs.geojson = write_geojson(
                geojson, c, patch_size, measurements,
                classification=top_labels(attention),
                offset=slide.offset if slide is not None else bag_offset(bag_attrs or {}),
            )  # fmt: skip
    if topk > 0 and slide is not None and crops_dir is not None:
        outputs.crops = {
            name: save_topk_crops(slide, c, patch_size, row, topk, crops_dir, name, crop_px)
            for name, row in attention.items()
        }
    return outputs


def bag_offset(attrs: Mapping[str, object]) -> tuple[int, int]:
    """The level-0 offset of the scanned area recorded by ``hmil tile`` (``bounds_x``/``y``)."""
    x, y = attrs.get("bounds_x", 0), attrs.get("bounds_y", 0)
    return (int(x), int(y)) if isinstance(x, int | float) and isinstance(y, int | float) else (0, 0)


def _check_on_slide(
    coords: np.ndarray, slide: Slide, attrs: Mapping[str, object], allow_mismatch: bool = False
) -> SlideMatch:
    """The shared bag-on-slide check (:func:`hmil.slides.match.check_bag_on_slide`), its
    refusal pointing at the command's flags."""
    try:
        return check_bag_on_slide(attrs, coords, slide, allow_mismatch=allow_mismatch)
    except SlideError as exc:
        raise SlideError(
            exc.where, f"{exc.problem} (wrong --slide? --allow-slide-mismatch draws it anyway)"
        ) from None
