"""Tissue detection and the patch grid: slide → ``patches/<slide_id>.h5`` (CLAM-compatible).

Steps for one slide:

1. :func:`plan_patches` resolves the requested magnification (or level) into where patches are
   read from: the level, the size read there, and the patch size in level-0 pixels. Without
   objective power or microns-per-pixel the magnification is unknown; the plan then falls back to
   the requested level (level 0 by default) and says so in :attr:`PatchPlan.note`.
2. :func:`tissue_mask` segments tissue on a thumbnail: HSV saturation (glass is white and grey,
   stained tissue is coloured), median filter, Otsu threshold clipped to a sane range (lowered
   to just above the glass's own saturation when the tissue is a small fragment on glass, see
   :func:`saturation_cut`), dark scanner padding removed, closing, small-object removal and
   small-hole filling with sizes relative to the patch area.
   Tissue contours edited in QuPath (or TRIDENT's ``contours_geojson``) replace this step:
   :func:`read_tissue_geojson` rasterises their polygons into the same mask.
3. :func:`grid_coords` lays a grid of step ``patch − overlap`` over the scanned area (edge
   patches may extend past the border, as CLAM's ``use_padding``) and :func:`tissue_fractions`
   measures the tissue fraction under each patch with an integral image; patches at or above
   the threshold stay.

All coordinates are level-0 ``(x, y)`` of the patch's top-left corner, in OpenSlide's frame
(what CLAM's and TRIDENT's ``read_region`` take). Slides with an OpenSlide bounds rectangle
(MRXS) are tiled inside it; GeoJSON (QuPath's frame) is level-0 minus its offset.

Outputs per slide (:func:`tile_slides`): ``patches/<id>.h5`` with CLAM's attribute meaning
(``patch_size`` pixels at ``patch_level``, what CLAM's ``Whole_Slide_Bag_FP`` reads),
``patches/<id>_patches.h5`` with TRIDENT's (``patch_size`` at ``target_magnification``, what
TRIDENT's ``WSIPatcher`` and torchmil's ``TridentWSIDataset`` read), the QC image
``masks/<id>.png`` and the tissue ``contours_geojson/<id>.geojson``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image, ImageDraw
from skimage.filters import median, threshold_otsu
from skimage.measure import approximate_polygon, find_contours, label
from skimage.morphology import closing, disk
from skimage.segmentation import find_boundaries

from hmil.data.bags import plain_value
from hmil.errors import HMILError, SlideError
from hmil.io import atomic_path
from hmil.progress import Progress
from hmil.slides.reader import (
    PLAUSIBLE_MPP,
    Region,
    Slide,
    fit_size,
    open_slide,
    slide_id_from_path,
    trident_best_level,
)


@dataclass(frozen=True)
class TissueConfig:
    """Parameters of the tissue mask (see :func:`tissue_mask`).

    Attributes:
        saturation_range: the Otsu threshold on saturation (0..1) is clipped into this range, so
            a slide that is all tissue or nearly all glass still gets a sensible cut.
        min_brightness: pixels whose brightest channel is below this (0..1) are scanner padding
            or debris, not tissue.
        median_radius: median filter radius on the mask thumbnail (pixels).
        closing_radius: morphological closing radius (pixels).
        min_object_patches: tissue pieces smaller than this fraction of one patch are removed.
        max_hole_patches: holes smaller than this fraction of one patch are filled.
        sparse_tissue_share: when less than this share (0..1) of the thumbnail is above the
            Otsu cut, the tissue is a small fragment on glass and the cut is lowered towards the
            glass's own saturation (:func:`saturation_cut`).
        glass_margin: on such slides, saturation (0..1) above the glass's 99th percentile that
            counts as stain.
    """

    saturation_range: tuple[float, float] = (0.04, 0.12)
    min_brightness: float = 0.1
    median_radius: int = 2
    closing_radius: int = 2
    min_object_patches: float = 0.25
    max_hole_patches: float = 0.5
    sparse_tissue_share: float = 0.02
    glass_margin: float = 0.02


@dataclass(frozen=True)
class TilingConfig:
    """What ``hmil tile`` asks for.

    Attributes:
        patch_size: patch side in pixels at the target magnification (what the encoder sees).
        magnification: target magnification (e.g. 20 for 20×); ignored when ``level`` is set.
        level: read patches from this level at its native resolution instead.
        tissue_threshold: minimum tissue fraction (0..1) of a patch.
        overlap: pixels (at the target magnification) shared by neighbouring patches, as
            TRIDENT's ``--overlap``: the grid step is ``patch_size − overlap``.
        mpp: microns per level-0 pixel to use instead of the file's (for slides without, or
            with wrong, metadata); the level-0 magnification is then ``10 / mpp``.
        trident_names: also write ``patches/<id>_patches.h5`` (TRIDENT's name and attribute
            meaning); ``hmil tile`` does.
        overwrite: re-tile slides whose patch files exist (else they are skipped, unless their
            contours GeoJSON was edited after them).
        mask_max_size: longer side of the mask thumbnail, at most (pixels).
        mask_px_per_patch: the mask is made at least this fine relative to a patch (pixels).
        tissue: tissue mask parameters.
    """

    patch_size: int = 256
    magnification: float | None = 20.0
    level: int | None = None
    tissue_threshold: float = 0.5
    overlap: int = 0
    mpp: float | None = None
    trident_names: bool = False
    overwrite: bool = False
    mask_max_size: int = 2048
    mask_px_per_patch: int = 32
    tissue: TissueConfig = field(default_factory=TissueConfig)

    def __post_init__(self) -> None:
        if self.patch_size < 8:
            raise HMILError("--patch-size", f"must be at least 8 pixels, got {self.patch_size}")
        if not 0 <= self.overlap < self.patch_size:
            raise HMILError(
                "--overlap", f"must be in [0, patch size {self.patch_size}), got {self.overlap}"
            )
        if self.mpp is not None:
            check_mpp(self.mpp, "--mpp")
        if self.magnification is not None and not self.magnification > 0:
            raise HMILError("--magnification", f"must be positive, got {self.magnification}")
        if not 0.0 <= self.tissue_threshold <= 1.0:
            raise HMILError(
                "--tissue-threshold", f"must be within [0, 1], got {self.tissue_threshold}"
            )
        if self.level is not None and self.level < 0:
            raise HMILError("--level", f"must be ≥ 0, got {self.level}")


def check_mpp(mpp: float, where: str) -> float:
    """``mpp`` if it is a plausible microns-per-pixel value, else HMILError naming ``where``."""
    lo, hi = PLAUSIBLE_MPP
    if not lo <= mpp <= hi:
        raise HMILError(where, f"microns per pixel must be within [{lo}, {hi}], got {mpp:g}")
    return float(mpp)


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
                "(choose a lower --magnification)",
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


def tissue_mask(rgb: np.ndarray, patch_area_px: float, config: TissueConfig) -> np.ndarray:
    """Segment stained tissue on a thumbnail: :func:`stained_mask`, then :func:`clean_mask`.

    Args:
        rgb: ``(h, w, 3)`` uint8 thumbnail.
        patch_area_px: area of one patch in thumbnail pixels (scales the size filters).
        config: thresholds and radii.

    Returns:
        ``(h, w)`` bool mask, True on tissue.
    """
    return clean_mask(stained_mask(rgb, config), patch_area_px, config)


def stained_mask(rgb: np.ndarray, config: TissueConfig) -> np.ndarray:
    """Pixels of a thumbnail coloured enough to be stain (:func:`saturation_cut`) and bright
    enough not to be scanner padding or debris; before any shape clean-up.

    Args:
        rgb: ``(h, w, 3)`` uint8 thumbnail.

    Returns:
        ``(h, w)`` bool mask.
    """
    saturation, brightness = _saturation(rgb, config.median_radius)
    cut = saturation_cut(saturation, brightness, config)
    return (saturation > cut) & (brightness >= config.min_brightness)


def clean_mask(stained: np.ndarray, patch_area_px: float, config: TissueConfig) -> np.ndarray:
    """Close small gaps, drop specks and fill small holes, sized relative to one patch (a piece
    much smaller than a patch can never fill one, a hole much smaller is part of the tissue).

    Args:
        stained: ``(h, w)`` bool mask from :func:`stained_mask`.
        patch_area_px: area of one patch in mask pixels.

    Returns:
        ``(h, w)`` bool mask, True on tissue.
    """
    mask = stained
    if config.closing_radius > 0:
        mask = closing(mask, disk(config.closing_radius)).astype(bool)
    mask = _drop_components(mask, config.min_object_patches * patch_area_px)
    holes = _drop_components(~mask, config.max_hole_patches * patch_area_px)
    return ~holes


def _saturation(rgb: np.ndarray, median_radius: int) -> tuple[np.ndarray, np.ndarray]:
    """HSV saturation and brightness of a thumbnail.

    The saturation is median-filtered on 8 bits (the filter removes isolated coloured noise
    pixels) and therefore comes in steps of 1/255.

    Args:
        rgb: ``(h, w, 3)`` uint8 thumbnail.
        median_radius: radius of the median filter (0: none).

    Returns:
        ``(h, w)`` float32 saturation and ``(h, w)`` float32 brightness (brightest channel),
        both in [0, 1].
    """
    img = rgb.astype(np.float32) / 255.0
    hi = img.max(axis=2)
    lo = img.min(axis=2)
    saturation = (hi - lo) / np.maximum(hi, 1e-6)
    sat8 = np.clip(saturation * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if median_radius > 0:
        sat8 = median(sat8, footprint=disk(median_radius))
    return sat8.astype(np.float32) / 255.0, hi


def saturation_cut(saturation: np.ndarray, brightness: np.ndarray, config: TissueConfig) -> float:
    """The saturation above which a thumbnail pixel is stain.

    Otsu's threshold, clipped into ``config.saturation_range``, splits glass from tissue well
    when both are well represented in the histogram. On a slide that is nearly all glass (a
    small biopsy fragment) the histogram is one huge glass peak near 0 and a small tissue
    bump, and Otsu's split lands about halfway up the tissue's own saturation: the pale rim of
    the fragment is cut off. So when less than ``config.sparse_tissue_share`` of the thumbnail
    is above the clipped Otsu cut, the cut is lowered to the glass's own saturation ceiling
    (:func:`glass_saturation`) plus ``config.glass_margin``, never below the range's lower
    end: faint stain on clean glass is found, while glass noise and grey debris (dust, ink
    smudges, air bubbles: dark but not coloured) stay out. Slides with more tissue keep the
    clipped Otsu cut unchanged.

    Args:
        saturation: ``(h, w)`` float32 saturation in [0, 1] (from :func:`_saturation`).
        brightness: ``(h, w)`` float32 brightest channel in [0, 1].
        config: the range, the sparse share and the glass margin.
    """
    s_lo, s_hi = config.saturation_range
    otsu = float(threshold_otsu(saturation)) if np.ptp(saturation) > 0 else s_hi
    cut = min(max(otsu, s_lo), s_hi)
    if float(np.mean(saturation > cut)) >= config.sparse_tissue_share:
        return cut
    glass_cut = glass_saturation(saturation, brightness) + config.glass_margin
    return max(s_lo, min(cut, glass_cut))


#: brightness levels (of 255) either side of the brightest mode that count as glass
_GLASS_BAND = 4


def glass_saturation(saturation: np.ndarray, brightness: np.ndarray) -> float:
    """99th percentile of the saturation of the glass: the ceiling of its own colour noise
    (tint, compression artefacts, the halo of dust), which stain must exceed.

    The glass is taken from the slide itself, as its brightest mode: the most common
    brightness level among the pixels at or above the median brightness (bare glass is the
    brightest large area of a slide; dark padding and debris are below it), give or take
    :data:`_GLASS_BAND` levels.

    Args:
        saturation: ``(h, w)`` float32 saturation in [0, 1].
        brightness: ``(h, w)`` float32 brightest channel in [0, 1].
    """
    levels = np.clip(brightness * 255.0 + 0.5, 0, 255).astype(np.int64)
    bright = levels[levels >= np.median(levels)]
    mode = int(np.bincount(bright, minlength=256).argmax())
    glass = np.abs(levels - mode) <= _GLASS_BAND
    return float(np.percentile(saturation[glass], 99))


def _drop_components(mask: np.ndarray, max_area: float) -> np.ndarray:
    """``mask`` without its 8-connected components of area ≤ ``max_area`` pixels."""
    if max_area < 1 or not mask.any():
        return mask
    labels = label(mask, connectivity=2)
    areas = np.bincount(labels.ravel())
    keep = areas > max_area
    keep[0] = False
    return keep[labels]


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


def save_patches(
    path: str | Path, result: TilingResult, attrs: dict[str, Any] | None = None
) -> Path:
    """Write a patch file atomically: ``coords`` ``(N, 2)`` int64 with attributes (default
    :meth:`TilingResult.coords_attrs`, CLAM's meaning) and ``tissue_fraction`` ``(N,)``."""
    out = Path(path)
    size = result.coords.size * 8 + result.fractions.size * 4  # a too-full disk: refused first
    with atomic_path(out, expected_bytes=size) as tmp, h5py.File(tmp, "w") as f:
        dset = f.create_dataset("coords", data=result.coords.astype(np.int64))
        for key, value in (result.coords_attrs() if attrs is None else attrs).items():
            dset.attrs[key] = value
        f.create_dataset("tissue_fraction", data=result.fractions.astype(np.float32))
    return out


def patch_file_paths(out_dir: str | Path, slide_id: str) -> tuple[Path, Path]:
    """``(patches/<id>.h5, patches/<id>_patches.h5)``: CLAM's and TRIDENT's names."""
    folder = Path(out_dir) / "patches"
    return folder / f"{slide_id}.h5", folder / f"{slide_id}_patches.h5"


# --------------------------------------------------------------------------- tissue GeoJSON

#: a polygon: exterior ring then hole rings, each an ``(k, 2)`` float array of level-0 (x, y)
Polygon = list[np.ndarray]

_TISSUE_CLASS = {"name": "Tissue", "color": [0, 170, 0]}


def mask_polygons(
    mask: np.ndarray, mask_scale: tuple[float, float], origin: tuple[float, float]
) -> list[Polygon]:
    """Tissue mask → polygons with holes in level-0 pixels (boundaries on pixel edges).

    Each 8-connected piece becomes one polygon: its outer boundary (the longest contour
    around it) and its holes, simplified to within half a mask pixel.
    """
    sx, sy = mask_scale
    ox, oy = origin
    labels = label(mask, connectivity=2)
    polygons: list[Polygon] = []
    for index in range(1, int(labels.max()) + 1):
        piece = np.pad(labels == index, 1)
        rings = []
        for contour in find_contours(piece.astype(np.float32), 0.5):
            ring = approximate_polygon(contour, tolerance=0.5)
            if len(ring) < 4:
                continue
            rows, cols = ring[:, 0] - 1.0, ring[:, 1] - 1.0  # undo the padding
            xy = np.stack([ox + (cols + 0.5) * sx, oy + (rows + 0.5) * sy], axis=1)
            rings.append(xy)
        if rings:
            rings.sort(key=lambda r: -abs(_ring_area(r)))
            polygons.append(rings)
    return polygons


def _ring_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def rasterize_polygons(
    polygons: list[Polygon],
    shape: tuple[int, int],
    mask_scale: tuple[float, float],
    origin: tuple[float, float],
) -> np.ndarray:
    """Level-0 polygons (exterior + holes) → ``(h, w)`` bool mask of the given scale/origin."""
    h, w = shape
    sx, sy = mask_scale
    ox, oy = origin
    image = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(image)
    for rings in polygons:
        for i, ring in enumerate(rings):
            pts = [((x - ox) / sx, (y - oy) / sy) for x, y in np.asarray(ring, dtype=np.float64)]
            if len(pts) >= 3:
                draw.polygon(pts, fill=0 if i else 1)
    return np.asarray(image, dtype=bool)


def write_tissue_geojson(
    path: str | Path, polygons: list[Polygon], offset: tuple[int, int] = (0, 0)
) -> Path:
    """Write tissue polygons as a GeoJSON ``FeatureCollection`` QuPath opens as annotations
    (class ``Tissue``) and TRIDENT reads (``tissue_id`` per feature), in QuPath's frame
    (level-0 minus ``offset``)."""
    dx, dy = offset
    features = []
    for i, rings in enumerate(polygons):
        coords = []
        for ring in rings:
            pts = [[round(float(x) - dx, 1), round(float(y) - dy, 1)] for x, y in ring]
            if pts[0] != pts[-1]:
                pts.append(pts[0])
            coords.append(pts)
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": coords},
                "properties": {
                    "objectType": "annotation",
                    "classification": _TISSUE_CLASS,
                    "tissue_id": i,
                },
            }
        )
    out = Path(path)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps({"type": "FeatureCollection", "features": features}) + "\n")
    return out


def read_tissue_geojson(path: str | Path, offset: tuple[int, int] = (0, 0)) -> list[Polygon]:
    """Tissue polygons from a GeoJSON file (hmil's, QuPath's export, TRIDENT's
    ``contours_geojson``): every ``Polygon``/``MultiPolygon`` geometry of a
    ``FeatureCollection`` (or a single feature / geometry), coordinates + ``offset``.

    Raises:
        HMILError: naming the file when it is not JSON, not GeoJSON, or has bad coordinates.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HMILError(p, f"not a readable GeoJSON file ({str(exc)[:160]})") from None
    if isinstance(data, list):  # QuPath's "export as array" option
        geometries = [f.get("geometry") if isinstance(f, dict) else None for f in data]
    elif isinstance(data, dict) and data.get("type") == "FeatureCollection":
        geometries = [f.get("geometry") for f in data.get("features") or [] if isinstance(f, dict)]
    elif isinstance(data, dict) and data.get("type") == "Feature":
        geometries = [data.get("geometry")]
    elif isinstance(data, dict) and "coordinates" in data:
        geometries = [data]
    else:
        raise HMILError(p, "not GeoJSON (expected a FeatureCollection, Feature or geometry)")
    polygons: list[Polygon] = []
    dx, dy = offset
    try:
        for geometry in geometries:
            if not isinstance(geometry, dict):
                continue
            kind = geometry.get("type")
            coordinates = geometry.get("coordinates") or []
            parts: dict[str, list[Any]] = {"Polygon": [coordinates], "MultiPolygon": coordinates}
            for rings in parts.get(str(kind), []):
                polygon = [np.asarray(r, dtype=np.float64)[:, :2] + (dx, dy) for r in rings]
                if polygon and polygon[0].shape[0] >= 3:
                    polygons.append(polygon)
    except (TypeError, ValueError, IndexError) as exc:
        raise HMILError(p, f"malformed polygon coordinates ({str(exc)[:160]})") from None
    return polygons


@dataclass(frozen=True)
class PatchFile:
    """Patch coordinates read back from a ``patches/<slide_id>.h5`` (ours or CLAM's).

    Attributes:
        path: the file.
        coords: ``(N, 2)`` int64 level-0 top-left corners.
        attrs: the ``coords`` attributes.
    """

    path: Path
    coords: np.ndarray
    attrs: dict[str, Any]


def load_patches(path: str | Path) -> PatchFile:
    """Read a patch-coordinate file.

    Raises:
        HMILError: naming the file when it is missing, unreadable or has no ``(N, 2)`` coords.
    """
    p = Path(path)
    if not p.is_file():
        raise HMILError(p, "patch file not found (run `hmil tile` first)")
    try:
        with h5py.File(p, "r") as f:
            if "coords" not in f or not isinstance(f["coords"], h5py.Dataset):
                raise HMILError(p, "patch file has no 'coords' dataset")
            dset = f["coords"]
            coords = np.asarray(dset[()])
            attrs = {k: plain_value(v) for k, v in dset.attrs.items()}
    except HMILError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise HMILError(p, f"not a readable HDF5 patch file ({str(exc)[:200]})") from None
    if coords.ndim != 2 or coords.shape[1] != 2 or coords.dtype.kind not in "iuf":
        raise HMILError(p, f"coords must be an (N, 2) number array, found {coords.shape}")
    return PatchFile(path=p, coords=coords.astype(np.int64), attrs=attrs)


# --------------------------------------------------------------------------- QC image

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


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an ``(H, W, 3|4)`` uint8 image as PNG atomically."""
    out = Path(path)
    with atomic_path(out) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return out


# --------------------------------------------------------------------------- batch


@dataclass
class TileReport:
    """Outcome of :func:`tile_slides`.

    Attributes:
        patch_files: slide id → written ``patches/<slide_id>.h5``.
        n_patches: slide id → number of patches written.
        failures: ``(where, problem)`` per skipped slide (unreadable, 0 tissue patches, ...).
        skipped: slide id → its existing patch file (finished on an earlier run).
    """

    patch_files: dict[str, Path] = field(default_factory=dict)
    n_patches: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)
    skipped: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class SlideEntry:
    """A slide to tile, with an optional microns-per-pixel override (slide-list CSV ``mpp``)."""

    path: Path
    mpp: float | None = None


def contours_path(out_dir: str | Path, slide_id: str) -> Path:
    """``contours_geojson/<id>.geojson`` (TRIDENT's folder name), the slide's tissue polygons."""
    return Path(out_dir) / "contours_geojson" / f"{slide_id}.geojson"


def tile_slides(
    slides: Iterable[str | Path | SlideEntry],
    out_dir: str | Path,
    config: TilingConfig,
    *,
    strict: bool = False,
    on_error: Callable[[str, str], None] | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
    tissue_dir: str | Path | None = None,
) -> TileReport:
    """Tile every slide into ``out_dir/patches/<id>.h5`` (+ ``<id>_patches.h5`` with
    ``config.trident_names``), ``out_dir/masks/<id>.png`` and
    ``out_dir/contours_geojson/<id>.geojson``.

    Reruns: a slide whose patch file exists is skipped (``report.skipped``) unless
    ``config.overwrite`` — or unless its contours GeoJSON is newer than the patch file (edited
    in QuPath): it is then re-tiled on the edited tissue. ``tissue_dir`` takes the tissue of
    every slide from ``<tissue_dir>/<id>.geojson`` instead (e.g. TRIDENT's
    ``contours_geojson``), when that file exists.

    A bad slide (unreadable, 0 tissue patches, duplicate id) is passed to ``on_error`` and
    skipped — or, with ``strict``, its :class:`HMILError` is raised at once. A slide without
    tissue patches still gets its QC image and contours, so one can see why (and draw tissue).
    """
    out = Path(out_dir)
    entries = [s if isinstance(s, SlideEntry) else SlideEntry(Path(s)) for s in slides]
    report = TileReport()
    seen: dict[str, Path] = {}
    bar = Progress(len(entries), "tile", enabled=progress)
    for entry in entries:
        try:
            job = _TileJob(entry, out, config, Path(tissue_dir) if tissue_dir else None)
            job.run(seen, report, log)
        except HMILError as exc:
            if strict:
                raise
            report.failures.append((exc.where, exc.problem))
            if on_error is not None:
                on_error(exc.where, exc.problem)
        bar.update(1)
    bar.close()
    return report


@dataclass(frozen=True)
class _TileJob:
    """One slide of :func:`tile_slides`: where its outputs go and whether it is finished."""

    entry: SlideEntry
    out: Path
    config: TilingConfig
    tissue_dir: Path | None

    @property
    def slide_id(self) -> str:
        return slide_id_from_path(self.entry.path)

    def outputs(self) -> list[Path]:
        clam, trident = patch_file_paths(self.out, self.slide_id)
        return [clam, trident] if self.config.trident_names else [clam]

    def edited_contours(self) -> Path | None:
        """The tissue to use instead of segmenting: ``tissue_dir``'s file, or our contours
        when they are newer than the patch file (edited after tiling)."""
        if self.tissue_dir is not None:
            candidate = self.tissue_dir / f"{self.slide_id}.geojson"
            return candidate if candidate.is_file() else None
        ours = contours_path(self.out, self.slide_id)
        if not ours.is_file():
            return None
        patch = self.outputs()[0]
        if patch.is_file() and ours.stat().st_mtime_ns <= patch.stat().st_mtime_ns:
            return None
        return ours

    def finished(self) -> bool:
        if self.config.overwrite or not all(p.is_file() for p in self.outputs()):
            return False
        return self.tissue_dir is None and self.edited_contours() is None

    def run(
        self, seen: dict[str, Path], report: TileReport, log: Callable[[str], None] | None
    ) -> None:
        """Tile the slide into ``report``; raises HMILError for a slide that must be skipped."""
        path, sid = self.entry.path, self.slide_id
        if sid in seen:
            raise HMILError(path, f"duplicate slide id '{sid}' (also {seen[sid]})")
        seen[sid] = path
        if self.finished():
            report.skipped[sid] = self.outputs()[0]
            if log is not None:
                log(f"{sid}: already tiled, skipped ({self.outputs()[0].name})")
            return
        say = log or (lambda _line: None)
        with open_slide(path) as slide:
            tissue = self._tissue(slide, say)
            override = self.entry.mpp if self.entry.mpp is not None else self.config.mpp
            if override is not None and slide.mpp is not None and abs(slide.mpp - override) > 1e-3:
                say(f"{sid}: using {override:g} µm/px instead of the file's {slide.mpp:g}")
            result = tile_slide(slide, self.config, tissue=tissue, mpp=self.entry.mpp)
            if result.plan.note:
                say(f"{sid}: {result.plan.note}")
            save_png(self.out / "masks" / f"{sid}.png", render_qc(slide, result))
            if tissue is None:  # written before the patch files: newer contours = edited
                polygons = mask_polygons(result.mask, result.mask_scale, _origin(result))
                write_tissue_geojson(contours_path(self.out, sid), polygons, slide.offset)
        if result.n_patches == 0:
            for stale in patch_file_paths(self.out, sid):  # no stale coords from a rerun
                stale.unlink(missing_ok=True)
            share = 100.0 * float(result.mask.mean())
            raise HMILError(
                path,
                f"0 patches passed the tissue threshold {self.config.tissue_threshold:g} "
                f"(tissue covers {share:.1f}% of the slide{_too_small_hint(result, self.config)}; "
                f"see masks/{sid}.png, or draw the tissue in contours_geojson/{sid}.geojson "
                "and rerun)",
            )
        clam, trident = patch_file_paths(self.out, sid)
        save_patches(clam, result)
        if self.config.trident_names:
            save_patches(trident, result, result.trident_attrs(trident.parent))
        report.patch_files[sid] = clam
        report.n_patches[sid] = result.n_patches
        plan = result.plan
        mag = plan.target_magnification
        where = f"{mag:.3g}x" if mag is not None else f"level {plan.patch_level}"
        say(
            f"{sid}: {result.n_patches} patches of {plan.patch_size}px at {where} "
            f"(level {plan.patch_level}, {plan.patch_size_level0}px at level 0)"
        )

    def _tissue(self, slide: Slide, say: Callable[[str], None]) -> list[Polygon] | None:
        source = self.edited_contours()
        if source is None:
            return None
        say(f"{self.slide_id}: tissue from {source}")
        return read_tissue_geojson(source, slide.offset)


def _too_small_hint(result: TilingResult, config: TilingConfig) -> str:
    """Why a slide with visible stain has no tissue: every stained piece was smaller than
    ``min_object_patches`` of a patch and was dropped as a speck. That happens when patches are
    huge relative to the tissue (e.g. a low-resolution image without magnification, tiled at
    level 0), and a smaller ``--patch-size`` is the fix; '' when it is not the case."""
    stained = result.stained_share
    if stained is None or result.mask.any() or stained < 0.0005:
        return ""
    return (
        f"; stain on {100.0 * stained:.1f}% was dropped as pieces under "
        f"{config.tissue.min_object_patches:g} of a patch ({result.plan.patch_size_level0} px "
        "at level 0): try a smaller --patch-size"
    )


def _origin(result: TilingResult) -> tuple[float, float]:
    region = result.tiled_region
    return (region.x, region.y)


def read_slide_list(path: str | Path, slides_dir: str | Path | None = None) -> list[SlideEntry]:
    """Slides from a CSV: TRIDENT's ``--custom_list_of_wsis`` (``wsi`` [, ``mpp``]) or CLAM's
    process list (``slide_id`` with the file name [, ``process`` 0/1]).

    File names are resolved against ``slides_dir`` (default: the CSV's folder); rows whose
    ``process`` is 0 are left out.

    Raises:
        HMILError: naming the CSV for a missing file, no slide column, or a bad ``mpp``.
    """
    p = Path(path)
    if not p.is_file():
        raise HMILError(p, "slide list not found")
    try:
        with open(p, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            columns = [c.strip() for c in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise HMILError(p, f"not a readable CSV ({str(exc).splitlines()[0][:160]})") from None
    column = next((c for c in ("wsi", "slide_id", "slide", "path") if c in columns), None)
    if column is None:
        raise HMILError(p, f"no slide column (expected wsi or slide_id; found {columns})")
    base = Path(slides_dir) if slides_dir is not None else p.parent
    entries: list[SlideEntry] = []
    for row_number, raw in enumerate(rows, start=2):
        row = {str(k).strip(): (v or "") for k, v in raw.items() if k is not None}
        name = str(row[column]).strip()
        if not name or str(row.get("process", "1")).strip() in ("0", "0.0"):
            continue
        mpp_text = str(row.get("mpp", "")).strip()
        try:
            mpp = check_mpp(float(mpp_text), f"{p}: row {row_number}") if mpp_text else None
        except ValueError:
            raise HMILError(p, f"row {row_number}: mpp '{mpp_text}' is not a number") from None
        entries.append(SlideEntry(base / name, mpp))
    return entries
