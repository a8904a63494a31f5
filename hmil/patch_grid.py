"""The grid a bag's patches sit on, and smoothing over it.

Both pictures of the attention — the exported PNG (:mod:`hmil.overlay`) and the browser's
layer (``viewer``) — colour one cell per grid position and scale that small image over the
slide, so they share this grid: the same cells, the same painting order, the same colours.

Shapes: ``coords`` ``(N, 2)`` level-0 top-left corners; ``values`` ``(N,)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: largest grid (cells) coloured as one image; finer layouts snap to the patch size
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

    @property
    def n(self) -> int:
        return int(self.cells.shape[0])

    def paint(self, values: np.ndarray, fill: int | float = 0) -> np.ndarray:
        """``(rows, cols)`` image with each patch's value over its ``span × span`` cells, in
        patch order (a later patch covers an earlier one, as in the browser); ``fill``
        elsewhere. ``values`` ``(N,)``; the image takes their dtype."""
        v = np.asarray(values)
        owner = self.owners()
        image = np.full((self.rows, self.cols), fill, dtype=v.dtype)
        covered = owner >= 0
        image[covered] = v[owner[covered]]
        return image

    def owners(self) -> np.ndarray:
        """``(rows, cols)`` int64: the last patch covering each cell, -1 where none does."""
        owner = np.full((self.rows, self.cols), -1, dtype=np.int64)
        col, row = self.cells[:, 0], self.cells[:, 1]
        index = np.arange(self.n, dtype=np.int64)
        for dy in range(self.span):
            for dx in range(self.span):
                np.maximum.at(owner, (row + dy, col + dx), index)
        return owner


def patch_grid(coords: np.ndarray, patch_size: float) -> PatchGrid:
    """The coarsest grid every patch corner lies on (the patch size for tiled grids, the
    stride for overlapping ones); patches are snapped to a patch-size grid when no grid of at
    most :data:`MAX_GRID_CELLS` cells fits them."""
    c = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    size = max(1, int(round(patch_size)))
    if c.shape[0] == 0:
        return PatchGrid((0.0, 0.0), float(size), 1, 1, np.zeros((0, 2), np.int64), 1)
    origin = c.min(axis=0)
    rel = c - origin
    step = math.gcd(size, int(np.gcd.reduce(rel.ravel())))
    exact = True
    if step < max(1, size // MIN_STEP_FRACTION) or size % step:
        step, exact = size, bool((rel % size == 0).all())
    span = max(1, int(round(size / step)))
    cells = np.rint(rel / step).astype(np.int64)
    cols, rows = int(cells[:, 0].max()) + span, int(cells[:, 1].max()) + span
    if cols * rows > MAX_GRID_CELLS:
        step, exact, span = size, False, 1
        cells = np.rint(rel / step).astype(np.int64)
        cols, rows = int(cells[:, 0].max()) + 1, int(cells[:, 1].max()) + 1
    return PatchGrid(
        (float(origin[0]), float(origin[1])), float(step), cols, rows, cells, span, exact
    )


def smooth_on_grid(values: np.ndarray, grid: PatchGrid, sigma_patches: float) -> np.ndarray:
    """``(N,)`` values after a normalised Gaussian on the patch grid (``sigma`` in patches),
    read back at each patch; cells without a patch do not contribute, so the smoothed map
    never leaks attention onto glass."""
    if sigma_patches <= 0 or values.size == 0:
        return np.asarray(values, dtype=np.float64)
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
    return np.asarray(out, dtype=np.float64)
