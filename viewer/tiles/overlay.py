"""Class-wise attention for the browser: a compact per-patch payload, or overlay tiles.

Two ways to draw the attention layer over the deep-zoom view (measured side by side by
:mod:`viewer.benchmark`, see the README):

* ``canvas`` (default): the page sends, once per slide and style, every patch's grid cell and
  its normalised score under every label of both levels as one byte each. The browser colours a
  one-pixel-per-cell image with the colormap and draws it scaled over the slide, so switching
  label or level, or changing the opacity, is a recolour in the browser with no request.
* ``tiles``: the server renders the overlay of one label as Deep Zoom PNG tiles
  (:func:`overlay_tile_png`), a second tiled layer in the viewer; every label switch fetches
  the visible tiles anew.

Shapes: ``coords`` ``(N, 2)`` level-0 top-left corners, ``values`` ``(N,)`` in [0, 1].
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from hmil.heatmap import HeatmapStyle, colormap_lut, heatmap_rgba, normalize_scores
from hmil.slides.reader import Region

#: largest grid (cells) the browser is asked to colour; finer layouts snap to the patch size
MAX_GRID_CELLS = 1 << 24
#: grid steps smaller than patch_size / this are not used (snap to the patch size instead)
MIN_STEP_FRACTION = 8


@dataclass(frozen=True)
class PatchGrid:
    """The grid the patches sit on.

    Attributes:
        origin: level-0 ``(x, y)`` of cell ``(0, 0)``.
        step: level-0 side of one cell.
        cols, rows: grid size in cells.
        cells: ``(N, 2)`` int ``(col, row)`` of each patch's top-left cell.
        span: cells per patch side (1 for the usual non-overlapping grid).
        exact: False when the coordinates had to be snapped to the grid.
    """

    origin: tuple[float, float]
    step: float
    cols: int
    rows: int
    cells: np.ndarray
    span: int
    exact: bool = True


def patch_grid(coords: np.ndarray, patch_size: float) -> PatchGrid:
    """The coarsest grid every patch corner lies on (the patch size for tiled grids, the
    stride for overlapping ones); patches are snapped to a patch-size grid when no grid of at
    most :data:`MAX_GRID_CELLS` cells fits them."""
    c = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    if c.shape[0] == 0:
        return PatchGrid((0.0, 0.0), float(patch_size), 1, 1, np.zeros((0, 2), np.int64), 1)
    origin = c.min(axis=0)
    rel = c - origin
    step = math.gcd(int(patch_size), int(np.gcd.reduce(rel.ravel())))
    exact = True
    if step < max(1, patch_size // MIN_STEP_FRACTION) or patch_size % step:
        step, exact = int(patch_size), bool((rel % int(patch_size) == 0).all())
    span = max(1, int(round(patch_size / step)))
    cells = np.rint(rel / step).astype(np.int64)
    cols, rows = int(cells[:, 0].max()) + span, int(cells[:, 1].max()) + span
    if cols * rows > MAX_GRID_CELLS:
        step, exact, span = int(patch_size), False, 1
        cells = np.rint(rel / step).astype(np.int64)
        cols, rows = int(cells[:, 0].max()) + 1, int(cells[:, 1].max()) + 1
    return PatchGrid(
        (float(origin[0]), float(origin[1])), float(step), cols, rows, cells, span, exact
    )


def smooth_on_grid(values: np.ndarray, grid: PatchGrid, sigma_patches: float) -> np.ndarray:
    """``(N,)`` values after a normalised Gaussian on the patch grid (``sigma`` in patches),
    read back at each patch; uncovered cells do not contribute."""
    if sigma_patches <= 0 or values.size == 0:
        return values.astype(np.float32)
    from skimage.filters import gaussian

    flat = grid.cells[:, 1] * grid.cols + grid.cells[:, 0]
    total = np.bincount(flat, weights=values, minlength=grid.rows * grid.cols)
    count = np.bincount(flat, minlength=grid.rows * grid.cols).astype(np.float64)
    cell = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    weight = (count > 0).astype(np.float64)
    shape = (grid.rows, grid.cols)
    sigma = sigma_patches * grid.span
    num = gaussian((cell * weight).reshape(shape), sigma=sigma, mode="constant")
    den = gaussian(weight.reshape(shape), sigma=sigma, mode="constant")
    out = np.divide(num, den, out=np.zeros_like(num), where=den > 1e-9).ravel()[flat]
    return out.astype(np.float32)


def quantise(values: np.ndarray) -> bytes:
    """``(N,)`` values in [0, 1] → N bytes (0..255)."""
    return np.clip(np.rint(np.asarray(values) * 255.0), 0, 255).astype(np.uint8).tobytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def lut_b64(cmap: str) -> str:
    """The colormap's ``(256, 3)`` lookup table as base64 bytes (what the browser colours with)."""
    return b64(colormap_lut(cmap).tobytes())


def layer_values(
    attention: dict[str, np.ndarray], normalize: str, smooth: float, grid: PatchGrid
) -> dict[str, list[str]]:
    """Per level, per label (in class order): base64 of the N normalised (and smoothed)
    score bytes. ``attention`` maps level → ``(K, N)``."""
    out: dict[str, list[str]] = {}
    for level, matrix in attention.items():
        rows = []
        for scores in np.asarray(matrix):
            values = normalize_scores(scores, normalize)  # type: ignore[arg-type]  # checked by caller
            rows.append(b64(quantise(smooth_on_grid(values, grid, smooth))))
        out[level] = rows
    return out


def grid_payload(grid: PatchGrid) -> dict[str, object]:
    """JSON-ready grid: origin, step, size, span and the ``(N, 2)`` cells as uint32 bytes."""
    return {
        "origin": list(grid.origin),
        "step": grid.step,
        "cols": grid.cols,
        "rows": grid.rows,
        "span": grid.span,
        "exact": grid.exact,
        "cells": b64(grid.cells.astype("<u4").tobytes()),
        "n": int(grid.cells.shape[0]),
    }


def overlay_tile_png(
    scores: np.ndarray,
    coords: np.ndarray,
    patch_size: float,
    region: Region,
    size: tuple[int, int],
    style: HeatmapStyle,
) -> bytes:
    """One server-rendered overlay tile: the attention of ``region`` at ``size`` as RGBA PNG
    (opacity is applied in the browser, so tiles are drawn opaque where covered)."""
    opaque = HeatmapStyle(
        cmap=style.cmap, alpha=1.0, normalize=style.normalize, smooth=style.smooth
    )
    rgba = heatmap_rgba(scores, coords, patch_size, region, size, opaque)
    buf = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
