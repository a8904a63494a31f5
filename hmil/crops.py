"""Top-k patch crops: the patches a label's attention ranks highest, cut from the slide as PNGs
(``hmil heatmap --topk K --crops DIR``; the viewer's gallery ranks with :func:`topk_indices`)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from hmil.images import save_png
from hmil.overlay import check_coords
from hmil.slides.reader import Region, Slide


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
    c = check_coords(coords)
    size0 = float(patch_size)
    px = int(crop_px or min(round(size0), 512))
    folder = Path(out_dir) / safe_name(label)
    paths: list[Path] = []
    for rank, i in enumerate(topk_indices(scores, k)):
        x, y = int(c[i, 0]), int(c[i, 1])
        crop = slide.read_rect(Region(x, y, size0, size0), (px, px))
        name = f"{rank:02d}_{slide.slide_id}_x{x}_y{y}_a{float(scores[i]):.4g}.png"
        paths.append(save_png(folder / name, crop))
    return paths


def safe_name(label: str) -> str:
    """A label usable as a folder name (path separators and odd characters replaced)."""
    cleaned = re.sub(r"[^A-Za-z0-9._+-]+", "_", label).strip("._")
    return cleaned or "label"
