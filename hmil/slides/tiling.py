"""The patch grid of one slide: where patches are read (:func:`plan_patches`) and which grid
cells hold enough tissue (:func:`tile_slide`).

1. :func:`plan_patches` resolves the requested magnification (or level) into where patches are
   read from: the level, the size read there, and the patch size in level-0 pixels. Without
   objective power or microns-per-pixel the magnification is unknown; the plan then falls back to
   the requested level (level 0 by default) and says so in :attr:`PatchPlan.note`.
2. the tissue mask (:mod:`hmil.slides.tissue`) is made on a thumbnail of the scanned area, or
   rasterised from tissue polygons.
3. :func:`grid_coords` lays a grid of step ``patch − overlap`` over the scanned area (edge
   patches may extend past the border, as CLAM's ``use_padding``) and :func:`tissue_fractions`
   measures the tissue fraction under each patch with an integral image; patches at or above
   the threshold stay.

All coordinates are level-0 ``(x, y)`` of the patch's top-left corner, in OpenSlide's frame
(what CLAM's and TRIDENT's ``read_region`` take). Slides with an OpenSlide bounds rectangle
(MRXS) are tiled inside it; GeoJSON (QuPath's frame) is level-0 minus its offset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hmil.errors import SlideError
from hmil.geojson import Polygon
from hmil.slides.reader import Region, Slide, trident_best_level
from hmil.slides.tissue import TilingConfig, clean_mask, rasterize_polygons, stained_mask


@dataclass(frozen=True)
class PatchPlan:
    """Where and how big patches are for one slide.

    Attributes:
        patch_size: output patch side (pixels at the target magnification).
        patch_level: slide level the pixels are read from.
        level_downsample: that level's downsample.
        downsample: level-0 pixels per output pixel (``patch_size_level0 / patch_size``).
        patch_size_level0: patch side in level-0 pixels (the grid step).
        read_size: patch side in ``patch_level`` pixels (resized to ``patch_size`` if different).
        target_magnification: magnification of the output patches, None if unknown.
        level0_magnification: magnification of level 0, None if unknown.
        note: a sentence for the log when the plan had to fall back.
        overlap: pixels shared by neighbours at the target magnification.
        step_level0: grid step in level-0 pixels (``patch_size_level0`` without overlap).
    """

    patch_size: int
    patch_level: int
    level_downsample: float
    downsample: float
    patch_size_level0: int
    read_size: int
    target_magnification: float | None
    level0_magnification: float | None
    note: str | None = None
    overlap: int = 0
    step_level0: int = 0


@dataclass
class TilingResult:
    """The tissue patches of one slide.

    Attributes:
        slide_id: the slide's id.
        coords: ``(N, 2)`` int64 level-0 ``(x, y)`` top-left corners, row-major order.
        fractions: ``(N,)`` float32 tissue fraction of each patch.
        plan: patch geometry.
        mask: ``(h, w)`` bool tissue mask of the thumbnail of :attr:`region`.
        mask_scale: level-0 pixels per mask pixel ``(sx, sy)``.
        level0_size: slide ``(width, height)`` at level 0.
        tissue_threshold: the threshold that selected the patches.
        stained_share: share of the thumbnail found stained before the shape clean-up (None for
            tissue from polygons): with an empty :attr:`mask`, it tells a slide whose tissue was
            too small for its patches from one without stain.
        region: the level-0 rectangle tiled (the scanned area; the whole slide without bounds).
        level_dims: ``(width, height)`` of the patch level.
        offset: level-0 offset of QuPath's frame (the slide's bounds corner, else (0, 0)).
        slide_mpp: the slide file's own microns per level-0 pixel (None when it states none),
            recorded so a bag can later be matched with its slide; a ``--mpp`` override is not
            it (the file read later will still state its own).
    """

    slide_id: str
    coords: np.ndarray
    fractions: np.ndarray
    plan: PatchPlan
    mask: np.ndarray
    mask_scale: tuple[float, float]
    level0_size: tuple[int, int]
    tissue_threshold: float
    stained_share: float | None = None
    region: Region | None = None
    level_dims: tuple[int, int] | None = None
    offset: tuple[int, int] = (0, 0)
    slide_mpp: float | None = None

    @property
    def n_patches(self) -> int:
        return int(self.coords.shape[0])

    @property
    def tiled_region(self) -> Region:
        w, h = self.level0_size
        return self.region if self.region is not None else Region(0, 0, w, h)

    def coords_attrs(self) -> dict[str, Any]:
        """Attributes of ``patches/<id>.h5``, CLAM's meaning: ``patch_size`` pixels read at
        ``patch_level`` (CLAM's ``Whole_Slide_Bag_FP`` reads exactly that), ``downsample`` that
        level's downsample, so ``patch_size × downsample = patch_size_level0``.

        hmil's additions: ``patch_size_level0``, ``target_patch_size`` (the side at the target
        magnification), ``target_magnification``, ``overlap``, level-0 size, ``bounds_x/y``,
        ``mpp`` (the slide file's, when it states one; CLAM and TRIDENT ignore it).
        ``level0_magnification`` is left out on purpose: with it TRIDENT would read
        ``patch_size`` as a target-magnification size (its own file, ``<id>_patches.h5``, has it).
        """
        plan = self.plan
        w, h = self.level0_size
        lw, lh = self.level_dims or (
            round(w / plan.level_downsample),
            round(h / plan.level_downsample),
        )
        ds = plan.level_downsample
        attrs: dict[str, Any] = {
            "patch_size": plan.read_size,
            "patch_level": plan.patch_level,
            "downsample": np.array([ds, ds], dtype=np.float64),
            "downsampled_level_dim": np.array([lw, lh], dtype=np.int64),
            "level_dim": np.array([lw, lh], dtype=np.int64),
            "patch_size_level0": plan.patch_size_level0,
            "target_patch_size": plan.patch_size,
            "overlap": plan.overlap,
            "level0_width": w,
            "level0_height": h,
            "tissue_threshold": self.tissue_threshold,
            "name": self.slide_id,
        }
        if plan.target_magnification is not None:
            attrs["target_magnification"] = plan.target_magnification
        attrs.update(self._bounds_attrs())
        attrs.update(self._mpp_attrs())
        return attrs

    def trident_attrs(self, save_dir: Path | str = "") -> dict[str, Any]:
        """Attributes of ``patches/<id>_patches.h5``, exactly TRIDENT's ``coords_to_h5`` set:
        ``patch_size`` at ``target_magnification`` (TRIDENT reads
        ``round(patch_size × level0_magnification / target_magnification)`` level-0 pixels).

        Without a known magnification TRIDENT can only use its CLAM-compatible reader, so the
        CLAM attributes (:meth:`coords_attrs`) are written instead.
        """
        plan = self.plan
        if plan.target_magnification is None or plan.level0_magnification is None:
            return self.coords_attrs()
        w, h = self.level0_size
        attrs: dict[str, Any] = {
            "patch_size": plan.patch_size,
            "patch_size_level0": plan.patch_size_level0,
            "level0_magnification": plan.level0_magnification,
            "target_magnification": plan.target_magnification,
            "overlap": plan.overlap,
            "name": self.slide_id,
            "savetodir": str(save_dir),
            "level0_width": w,
            "level0_height": h,
        }
        attrs.update(self._bounds_attrs())
        attrs.update(self._mpp_attrs())
        return attrs

    def _bounds_attrs(self) -> dict[str, Any]:
        if self.offset == (0, 0):
            return {}
        return {"bounds_x": int(self.offset[0]), "bounds_y": int(self.offset[1])}

    def _mpp_attrs(self) -> dict[str, Any]:
        """``mpp``: the slide file's microns per level-0 pixel, which with ``name`` and the
        level-0 size lets a bag be matched with its slide (:mod:`hmil.slides.match`)."""
        return {} if self.slide_mpp is None else {"mpp": float(self.slide_mpp)}


def plan_patches(slide: Slide, config: TilingConfig, mpp: float | None = None) -> PatchPlan:
    """Resolve ``config`` (magnification or level) into the patch geometry of ``slide``.

    The read level is the one TRIDENT's patcher picks (:func:`trident_best_level`), so TRIDENT
    reading hmil's tiles reads the same pixels.

    Args:
        mpp: microns per level-0 pixel overriding the file's (else ``config.mpp``, else the
            slide's own magnification).

    Raises:
        SlideError: the requested level does not exist, or the requested magnification is
            higher than the slide's level 0 (patches would be upsampled).
    """
    mpp = mpp if mpp is not None else config.mpp
    native = 10.0 / mpp if mpp is not None else slide.magnification
    note: str | None = None
    if config.level is not None:
        if config.level >= slide.level_count:
            raise SlideError(
                slide.path, f"level {config.level} does not exist (0..{slide.level_count - 1})"
            )
        downsample = slide.level_downsamples[config.level]
    elif native is not None and config.magnification is not None:
        downsample = native / config.magnification
        if downsample < 0.99:
            raise SlideError(
                slide.path,
                f"requested {config.magnification:g}x but level 0 is {native:g}x "
                "(choose a lower magnification)",
            )
        downsample = max(downsample, 1.0)
    else:
        downsample = 1.0
        if config.magnification is not None:
            note = (
                f"magnification unknown (no objective power or microns-per-pixel in the file); "
                f"tiling at level 0 (downsample 1) instead of {config.magnification:g}x"
            )
    level = config.level if config.level is not None else trident_best_level(slide, downsample)
    level_ds = slide.level_downsamples[level]
    size0 = max(1, round(config.patch_size * downsample))
    read_size = max(1, round(size0 / level_ds))
    overlap0 = round(config.overlap * downsample)
    return PatchPlan(
        patch_size=config.patch_size,
        patch_level=level,
        level_downsample=level_ds,
        downsample=size0 / config.patch_size,
        patch_size_level0=size0,
        read_size=read_size,
        target_magnification=native / downsample if native is not None else None,
        level0_magnification=native,
        note=note,
        overlap=config.overlap,
        step_level0=max(1, size0 - overlap0),
    )


def grid_coords(width: int, height: int, step: int) -> np.ndarray:
    """Top-left corners of a ``step``-pixel grid covering ``width × height`` (row-major).

    Returns:
        ``(rows * cols, 2)`` int64 ``(x, y)``; the last row/column may extend past the border.
    """
    xs = np.arange(0, max(width, 1), step, dtype=np.int64)
    ys = np.arange(0, max(height, 1), step, dtype=np.int64)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def tissue_fractions(
    mask: np.ndarray, mask_scale: tuple[float, float], coords: np.ndarray, size0: int
) -> np.ndarray:
    """Fraction of each patch covered by tissue, from an integral image of the mask.

    Args:
        mask: ``(h, w)`` bool tissue mask.
        mask_scale: level-0 pixels per mask pixel ``(sx, sy)``.
        coords: ``(N, 2)`` level-0 top-left corners.
        size0: patch side in level-0 pixels.

    Returns:
        ``(N,)`` float32 in [0, 1]; parts of a patch outside the slide count as background.
    """
    h, w = mask.shape
    integral = np.zeros((h + 1, w + 1), dtype=np.int64)
    integral[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1)
    sx, sy = mask_scale
    x0 = np.rint(coords[:, 0] / sx).astype(np.int64)
    y0 = np.rint(coords[:, 1] / sy).astype(np.int64)
    x1 = np.maximum(x0 + 1, np.rint((coords[:, 0] + size0) / sx).astype(np.int64))
    y1 = np.maximum(y0 + 1, np.rint((coords[:, 1] + size0) / sy).astype(np.int64))
    area = (x1 - x0) * (y1 - y0)
    cx0, cx1 = np.clip(x0, 0, w), np.clip(x1, 0, w)
    cy0, cy1 = np.clip(y0, 0, h), np.clip(y1, 0, h)
    inside = integral[cy1, cx1] - integral[cy0, cx1] - integral[cy1, cx0] + integral[cy0, cx0]
    return (inside / area).astype(np.float32)


def tile_slide(
    slide: Slide,
    config: TilingConfig,
    tissue: list[Polygon] | None = None,
    mpp: float | None = None,
) -> TilingResult:
    """Tissue mask + patch grid of one open slide (see the module docstring).

    Args:
        slide: the open slide; only its scanned area (:attr:`Slide.scanned_region`) is tiled.
        config: patch size, magnification, overlap, threshold.
        tissue: tissue polygons in level-0 pixels (e.g. from :func:`read_tissue_geojson`) used
            instead of segmenting the thumbnail.
        mpp: microns per level-0 pixel overriding the file's.
    """
    plan = plan_patches(slide, config, mpp=mpp)
    region = slide.scanned_region
    rw, rh = int(region.w), int(region.h)
    size0 = plan.patch_size_level0
    scale = max(max(rw, rh) / config.mask_max_size, size0 / config.mask_px_per_patch, 1.0)
    mask_w, mask_h = max(1, round(rw / scale)), max(1, round(rh / scale))
    mask_scale = (rw / mask_w, rh / mask_h)
    if tissue is None:
        thumb = slide.read_rect(region, (mask_w, mask_h))
        patch_area = (size0 / mask_scale[0]) * (size0 / mask_scale[1])
        stained = stained_mask(thumb, config.tissue)
        mask = clean_mask(stained, patch_area, config.tissue)
        stained_share: float | None = float(stained.mean())
    else:
        mask = rasterize_polygons(tissue, (mask_h, mask_w), mask_scale, (region.x, region.y))
        stained_share = None
    local = grid_coords(rw, rh, plan.step_level0)
    fractions = tissue_fractions(mask, mask_scale, local, size0)
    keep = fractions >= config.tissue_threshold
    if config.tissue_threshold == 0.0:
        keep &= fractions > 0
    origin = np.array([int(region.x), int(region.y)], dtype=np.int64)
    return TilingResult(
        slide_id=slide.slide_id,
        coords=np.ascontiguousarray(local[keep] + origin),
        fractions=fractions[keep],
        plan=plan,
        mask=mask,
        mask_scale=mask_scale,
        level0_size=slide.dimensions,
        tissue_threshold=config.tissue_threshold,
        stained_share=stained_share,
        region=region,
        level_dims=slide.level_dimensions[plan.patch_level],
        offset=slide.offset,
        slide_mpp=slide.mpp,
    )
