"""Tissue masks: which thumbnail pixels are stained tissue, and masks ↔ polygons.

:func:`tissue_mask` segments tissue on a thumbnail: HSV saturation (glass is white and grey,
stained tissue is coloured), median filter, Otsu threshold clipped to a sane range (lowered to
just above the glass's own saturation when the tissue is a small fragment on glass, see
:func:`saturation_cut`), dark scanner padding removed, closing, small-object removal and
small-hole filling with sizes relative to the patch area. Tissue contours edited in QuPath (or
TRIDENT's ``contours_geojson``) replace this step: :func:`rasterize_polygons` turns their
polygons into the same mask, and :func:`mask_polygons` turns a mask into polygons.

:class:`TilingConfig` (what ``hmil tile`` asks for) and :class:`TissueConfig` (the mask's
parameters) live here too; the patch grid is :mod:`hmil.slides.tiling`, the patch files
:mod:`hmil.slides.patch_files`, the QC image :mod:`hmil.slides.tile_qc`, tiling a list of
slides :mod:`hmil.slides.tile_batch` and slide-list CSVs :mod:`hmil.slides.slide_list`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw
from skimage.filters import median, threshold_otsu
from skimage.measure import approximate_polygon, find_contours, label
from skimage.morphology import closing, disk

from hmil.errors import TilingError
from hmil.geojson import Polygon
from hmil.params import Interval, OrderedPair, param, validate
from hmil.slides.reader import PLAUSIBLE_MPP

#: tile-side rules: a patch of at least 8 pixels; fractions of 0..1
_PATCH_SIZE = Interval(int, 8, None, closed="left")
_FRACTION = Interval(float, 0, 1)
_AT_LEAST_0 = Interval(int, 0, None, closed="left")
_AT_LEAST_1 = Interval(int, 1, None, closed="left")


@dataclass(frozen=True)
class TissueConfig:
    """Parameters of the tissue mask (see :func:`tissue_mask`); each field's help and accepted
    values are declared with it (:func:`hmil.params.param`), checked on construction."""

    saturation_range: tuple[float, float] = param(
        (0.04, 0.12),
        "the Otsu threshold on saturation (0..1) is clipped into this range, so a slide that is "
        "all tissue or nearly all glass still gets a sensible cut",
        OrderedPair(_FRACTION),
    )
    min_brightness: float = param(
        0.1,
        "pixels whose brightest channel is below this (0..1) are scanner padding or debris, "
        "not tissue",
        _FRACTION,
    )
    median_radius: int = param(
        2, "median filter radius on the mask thumbnail (pixels)", _AT_LEAST_0
    )
    closing_radius: int = param(2, "morphological closing radius (pixels)", _AT_LEAST_0)
    min_object_patches: float = param(
        0.25,
        "tissue pieces smaller than this fraction of one patch are removed",
        Interval(float, 0, None, closed="left"),
    )
    max_hole_patches: float = param(
        0.5,
        "holes smaller than this fraction of one patch are filled",
        Interval(float, 0, None, closed="left"),
    )
    sparse_tissue_share: float = param(
        0.02,
        "when less than this share (0..1) of the thumbnail is above the Otsu cut, the tissue is "
        "a small fragment on glass and the cut is lowered towards the glass's own saturation "
        "(saturation_cut)",
        _FRACTION,
    )
    glass_margin: float = param(
        0.02,
        "on such slides, saturation (0..1) above the glass's 99th percentile that counts as stain",
        _FRACTION,
    )

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class TilingConfig:
    """What ``hmil tile`` asks for; each field's help and accepted values are declared with it
    (:func:`hmil.params.param`, ``hmil tile --help`` shows them), checked on construction
    (:class:`~hmil.errors.ConfigError` naming the field, e.g. ``patch_size``)."""

    patch_size: int = param(
        256, "patch side in pixels at the target magnification (what the encoder sees)", _PATCH_SIZE
    )
    magnification: float | None = param(
        20.0,
        "target magnification (e.g. 20 for 20×); ignored when level is set",
        Interval(float, 0, None, closed="neither"),
    )
    level: int | None = param(
        None, "read patches from this level at its native resolution instead", _AT_LEAST_0
    )
    tissue_threshold: float = param(0.5, "minimum tissue fraction (0..1) of a patch", _FRACTION)
    overlap: int = param(
        0,
        "pixels (at the target magnification) shared by neighbouring patches, as TRIDENT's "
        "overlap: the grid step is patch_size − overlap",
        Interval(int, 0, "patch_size", closed="left"),
    )
    mpp: float | None = param(
        None,
        "microns per level-0 pixel to use instead of the file's (for slides without, or with "
        "wrong, metadata); the level-0 magnification is then 10 / mpp",
        Interval(float, *PLAUSIBLE_MPP),
    )
    trident_names: bool = param(
        False,
        "also write patches/<id>_patches.h5 (TRIDENT's name and attribute meaning); hmil tile does",
    )
    overwrite: bool = param(
        False,
        "re-tile slides whose patch files exist (else they are skipped, unless their contours "
        "GeoJSON was edited after them)",
    )
    mask_max_size: int = param(
        2048, "longer side of the mask thumbnail, at most (pixels)", _AT_LEAST_1
    )
    mask_px_per_patch: int = param(
        32, "the mask is made at least this fine relative to a patch (pixels)", _AT_LEAST_1
    )
    tissue: TissueConfig = field(
        default_factory=TissueConfig, metadata={"help": "tissue mask parameters"}
    )

    def __post_init__(self) -> None:
        validate(self)


def check_mpp(mpp: float, where: str) -> float:
    """``mpp`` if it is a plausible microns-per-pixel value, else HMILError naming ``where``."""
    lo, hi = PLAUSIBLE_MPP
    if not lo <= mpp <= hi:
        raise TilingError(where, f"microns per pixel must be within [{lo}, {hi}], got {mpp:g}")
    return float(mpp)


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
