"""The tiling QC image ``masks/<id>.png``: the slide with its tissue contour and kept patches."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from skimage.segmentation import find_boundaries

from hmil.slides.reader import Slide, fit_size
from hmil.slides.tiling import TilingResult

#: colours of the QC image
_CONTOUR_RGB = (0, 170, 0)


_PATCH_RGB = (20, 80, 255)


def render_qc(slide: Slide, result: TilingResult, max_size: int = 1024) -> np.ndarray:
    """A QC thumbnail: slide, tissue contour (green), kept patches (blue tint + grid lines).

    Returns:
        ``(H, W, 3)`` uint8 with the longer side ≤ ``max_size``.
    """
    region = result.tiled_region
    w, h = region.w, region.h
    out_w, out_h = fit_size(w, h, max_size)
    image = slide.read_rect(region, (out_w, out_h)).astype(np.float32)
    sx, sy = w / out_w, h / out_h
    step = result.plan.step_level0 or result.plan.patch_size_level0
    # grid cell of every QC column / row, and which cells were kept (cells of the grid step)
    cx = (np.arange(out_w) * sx // step).astype(np.int64)
    cy = (np.arange(out_h) * sy // step).astype(np.int64)
    kept = np.zeros((int(cy[-1]) + 2, int(cx[-1]) + 2), dtype=bool)
    if result.n_patches:
        local = result.coords - np.array([int(region.x), int(region.y)])
        kept[local[:, 1] // step, local[:, 0] // step] = True
    fill = kept[cy[:, None], cx[None, :]]
    tint = np.array(_PATCH_RGB, dtype=np.float32)
    image[fill] = image[fill] * 0.7 + tint * 0.3
    if step / max(sx, sy) >= 6:  # cell borders are only readable when cells are big enough
        col_edge = np.r_[True, cx[1:] != cx[:-1]]
        row_edge = np.r_[True, cy[1:] != cy[:-1]]
        left = kept[cy[:, None], np.maximum(cx - 1, 0)[None, :]] & col_edge[None, :]
        above = kept[np.maximum(cy - 1, 0)[:, None], cx[None, :]] & row_edge[:, None]
        edges = (fill & (col_edge[None, :] | row_edge[:, None])) | left | above
        image[edges] = tint
    mask_big = np.asarray(
        Image.fromarray(result.mask.astype(np.uint8) * 255).resize(
            (out_w, out_h), Image.Resampling.NEAREST
        )
    ).astype(bool)
    contour = find_boundaries(mask_big, mode="inner")
    image[contour] = np.array(_CONTOUR_RGB, dtype=np.float32)
    out = Image.fromarray(np.clip(image + 0.5, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    mag = result.plan.target_magnification
    text = (
        f"{result.slide_id}: {result.n_patches} patches, {result.plan.patch_size}px"
        f" @ {f'{mag:.3g}x' if mag else f'level {result.plan.patch_level}'}"
    )
    draw.rectangle((0, 0, min(out_w, 7 * len(text) + 6), 14), fill=(255, 255, 255))
    draw.text((3, 2), text, fill=(0, 0, 0))
    return np.asarray(out)
