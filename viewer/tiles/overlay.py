"""Class-wise attention for the browser: a compact per-patch payload, or overlay tiles.

Both come from the one overlay engine (:func:`hmil.overlay.level_codes`), so the browser's
layer, the server's overlay tiles and ``hmil heatmap``'s PNG colour every patch alike:

* ``canvas`` (default): the page sends, once per slide and style, every patch's grid cell and
  its colour code (one byte, 0 = not coloured) under every label of both levels, with each
  level's scale(s): a legend and the 256 tooltip texts of the codes. The browser colours a
  one-pixel-per-cell image with the code table and draws it scaled over the slide, so
  switching label or level, or changing the opacity, is a recolour in the browser with no
  request.
* ``tiles``: the server renders the overlay of one label as Deep Zoom PNG tiles
  (:func:`overlay_tile_png`), a second tiled layer in the viewer; every label switch fetches
  the visible tiles anew.

Shapes: ``coords`` ``(N, 2)`` level-0 top-left corners, ``matrix`` ``(K, N)`` a level's
attention.
"""

from __future__ import annotations

import base64
import functools
import io

import numpy as np
from PIL import Image

from hmil.attention_scale import distinct
from hmil.overlay import HeatmapStyle, LevelCodes, codes_rgba, colormap_code_lut, level_codes
from hmil.patch_grid import PatchGrid, patch_grid, smooth_on_grid
from hmil.slides.reader import Region

__all__ = [
    "PatchGrid",
    "b64",
    "grid_payload",
    "layer_values",
    "lut_b64",
    "overlay_tile_png",
    "patch_grid",
    "smooth_on_grid",
]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def lut_b64(cmap: str) -> str:
    """The ``(256, 3)`` colour of each code under ``cmap`` as base64 (what the browser
    colours with; code 0 is never drawn)."""
    return b64(colormap_code_lut(cmap).tobytes())


def layer_values(
    attention: dict[str, np.ndarray],
    coords: np.ndarray,
    patch_size: float,
    style: HeatmapStyle,
) -> dict[str, dict[str, object]]:
    """Per level: ``codes`` (base64 of the N code bytes of each label, in class order),
    ``scales`` (the level's distinct scales: legend and the 256 code texts) and
    ``scale_of`` (each label's index into ``scales``). ``attention`` maps level →
    ``(K, N)``."""
    out: dict[str, dict[str, object]] = {}
    for level, matrix in attention.items():
        coded = level_codes(np.asarray(matrix), coords, patch_size, style)
        unique, index = distinct(coded.scales)
        out[level] = {
            "codes": [b64(row.tobytes()) for row in coded.codes],
            "scales": [{"legend": s.legend().as_dict(), "texts": s.code_texts()} for s in unique],
            "scale_of": index,
        }
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


@functools.lru_cache(maxsize=16)
def _coded(matrix_key: bytes, shape: tuple[int, int], coords_key: bytes, patch_size: float,
           style: HeatmapStyle) -> LevelCodes:  # fmt: skip
    matrix = np.frombuffer(matrix_key, dtype=np.float32).reshape(shape)
    coords = np.frombuffer(coords_key, dtype=np.int64).reshape(-1, 2)
    return level_codes(matrix, coords, patch_size, style)


def overlay_tile_png(
    matrix: np.ndarray,
    index: int,
    coords: np.ndarray,
    patch_size: float,
    region: Region,
    size: tuple[int, int],
    style: HeatmapStyle,
) -> bytes:
    """One server-rendered overlay tile of label ``index`` of a level's ``(K, N)`` attention:
    ``region`` at ``size`` as RGBA PNG (opacity is applied in the browser, so tiles are drawn
    opaque where coloured). The level's codes are computed once per attention and style."""
    opaque = HeatmapStyle(style.cmap, 1.0, style.normalize, style.smooth, style.per_label)
    m = np.ascontiguousarray(matrix, dtype=np.float32)
    c = np.ascontiguousarray(coords, dtype=np.int64)
    coded = _coded(m.tobytes(), m.shape, c.tobytes(), float(patch_size), opaque)
    rgba = codes_rgba(coded.codes[index], c, patch_size, region, size, opaque)
    buf = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
