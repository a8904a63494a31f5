"""Tissue detection and the patch grid: slide → ``patches/<slide_id>.h5`` (CLAM-compatible).

Steps for one slide:

1. :func:`plan_patches` resolves the requested magnification (or level) into where patches are
   read from: the level, the size read there, and the patch size in level-0 pixels. Without
   objective power or microns-per-pixel the magnification is unknown; the plan then falls back to
   the requested level (level 0 by default) and says so in :attr:`PatchPlan.note`.
2. :func:`tissue_mask` segments tissue on a thumbnail: HSV saturation (glass is white and grey,
   stained tissue is coloured), median filter, Otsu threshold clipped to a sane range, dark
   scanner padding removed, closing, small-object removal and small-hole filling with sizes
   relative to the patch area.
3. :func:`grid_coords` lays a non-overlapping grid over the whole slide (edge patches may
   extend past the border, as CLAM's ``use_padding``) and :func:`tissue_fractions` measures the
   tissue fraction under each cell with an integral image; cells at or above the threshold stay.

All coordinates are level-0 ``(x, y)`` of the patch's top-left corner.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image, ImageDraw
from skimage.filters import median, threshold_otsu
from skimage.measure import label
from skimage.morphology import closing, disk
from skimage.segmentation import find_boundaries

from hmil.data.bags import plain_value
from hmil.errors import HMILError, SlideError
from hmil.io import atomic_path
from hmil.progress import Progress
from hmil.slides.reader import Region, Slide, fit_size, open_slide


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
    """

    saturation_range: tuple[float, float] = (0.04, 0.12)
    min_brightness: float = 0.1
    median_radius: int = 2
    closing_radius: int = 2
    min_object_patches: float = 0.25
    max_hole_patches: float = 0.5


@dataclass(frozen=True)
class TilingConfig:
    """What ``hmil tile`` asks for.

    Attributes:
        patch_size: patch side in pixels at the target magnification (what the encoder sees).
        magnification: target magnification (e.g. 20 for 20×); ignored when ``level`` is set.
        level: read patches from this level at its native resolution instead.
        tissue_threshold: minimum tissue fraction (0..1) of a patch.
        mask_max_size: longer side of the mask thumbnail, at most (pixels).
        mask_px_per_patch: the mask is made at least this fine relative to a patch (pixels).
        tissue: tissue mask parameters.
    """

    patch_size: int = 256
    magnification: float | None = 20.0
    level: int | None = None
    tissue_threshold: float = 0.5
    mask_max_size: int = 2048
    mask_px_per_patch: int = 32
    tissue: TissueConfig = field(default_factory=TissueConfig)

    def __post_init__(self) -> None:
        if self.patch_size < 8:
            raise HMILError("--patch-size", f"must be at least 8 pixels, got {self.patch_size}")
        if self.magnification is not None and not self.magnification > 0:
            raise HMILError("--magnification", f"must be positive, got {self.magnification}")
        if not 0.0 <= self.tissue_threshold <= 1.0:
            raise HMILError(
                "--tissue-threshold", f"must be within [0, 1], got {self.tissue_threshold}"
            )
        if self.level is not None and self.level < 0:
            raise HMILError("--level", f"must be ≥ 0, got {self.level}")


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


@dataclass
class TilingResult:
    """The tissue patches of one slide.

    Attributes:
        slide_id: the slide's id.
        coords: ``(N, 2)`` int64 level-0 ``(x, y)`` top-left corners, row-major order.
        fractions: ``(N,)`` float32 tissue fraction of each patch.
        plan: patch geometry.
        mask: ``(h, w)`` bool tissue mask of the thumbnail.
        mask_scale: level-0 pixels per mask pixel ``(sx, sy)``.
        level0_size: slide ``(width, height)`` at level 0.
        tissue_threshold: the threshold that selected the patches.
    """

    slide_id: str
    coords: np.ndarray
    fractions: np.ndarray
    plan: PatchPlan
    mask: np.ndarray
    mask_scale: tuple[float, float]
    level0_size: tuple[int, int]
    tissue_threshold: float

    @property
    def n_patches(self) -> int:
        return int(self.coords.shape[0])

    def coords_attrs(self) -> dict[str, Any]:
        """Attributes stored on the ``coords`` dataset (CLAM + TRIDENT names).

        ``patch_size`` × ``downsample`` = ``patch_size_level0`` always holds, so readers using
        either convention (``hmil.data.bags.infer_patch_size``, CLAM, TRIDENT) agree.
        """
        plan = self.plan
        w, h = self.level0_size
        attrs: dict[str, Any] = {
            "patch_size": plan.patch_size,
            "patch_level": plan.patch_level,
            "downsample": np.array([plan.downsample, plan.downsample], dtype=np.float64),
            "level_downsample": plan.level_downsample,
            "read_size": plan.read_size,
            "patch_size_level0": plan.patch_size_level0,
            "level0_width": w,
            "level0_height": h,
            "level_dim": np.array([w, h], dtype=np.int64),
            "tissue_threshold": self.tissue_threshold,
            "name": self.slide_id,
        }
        if plan.target_magnification is not None:
            attrs["target_magnification"] = plan.target_magnification
        if plan.level0_magnification is not None:
            attrs["level0_magnification"] = plan.level0_magnification
        return attrs


def plan_patches(slide: Slide, config: TilingConfig) -> PatchPlan:
    """Resolve ``config`` (magnification or level) into the patch geometry of ``slide``.

    Raises:
        SlideError: the requested level does not exist, or the requested magnification is
            higher than the slide's level 0 (patches would be upsampled).
    """
    native = slide.magnification
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
    level = (
        config.level
        if config.level is not None
        else slide.get_best_level_for_downsample(downsample)
    )
    level_ds = slide.level_downsamples[level]
    size0 = max(1, round(config.patch_size * downsample))
    read_size = max(1, round(size0 / level_ds))
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
    )


def tissue_mask(rgb: np.ndarray, patch_area_px: float, config: TissueConfig) -> np.ndarray:
    """Segment stained tissue on a thumbnail.

    Args:
        rgb: ``(h, w, 3)`` uint8 thumbnail.
        patch_area_px: area of one patch in thumbnail pixels (scales the size filters).
        config: thresholds and radii.

    Returns:
        ``(h, w)`` bool mask, True on tissue.
    """
    img = rgb.astype(np.float32) / 255.0
    hi = img.max(axis=2)
    lo = img.min(axis=2)
    saturation = (hi - lo) / np.maximum(hi, 1e-6)
    sat8 = np.clip(saturation * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if config.median_radius > 0:
        sat8 = median(sat8, footprint=disk(config.median_radius))
    s_lo, s_hi = config.saturation_range
    values = sat8.astype(np.float32) / 255.0
    threshold = float(threshold_otsu(values)) if np.ptp(values) > 0 else s_hi
    threshold = min(max(threshold, s_lo), s_hi)
    mask = (values > threshold) & (hi >= config.min_brightness)
    if config.closing_radius > 0:
        mask = closing(mask, disk(config.closing_radius)).astype(bool)
    mask = _drop_components(mask, config.min_object_patches * patch_area_px)
    holes = _drop_components(~mask, config.max_hole_patches * patch_area_px)
    return ~holes


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


def tile_slide(slide: Slide, config: TilingConfig) -> TilingResult:
    """Tissue mask + patch grid of one open slide (see the module docstring)."""
    plan = plan_patches(slide, config)
    w, h = slide.dimensions
    size0 = plan.patch_size_level0
    scale = max(max(w, h) / config.mask_max_size, size0 / config.mask_px_per_patch, 1.0)
    mask_w, mask_h = max(1, round(w / scale)), max(1, round(h / scale))
    thumb = slide.read_rect(Region(0, 0, w, h), (mask_w, mask_h))
    mask_scale = (w / mask_w, h / mask_h)
    patch_area = (size0 / mask_scale[0]) * (size0 / mask_scale[1])
    mask = tissue_mask(thumb, patch_area, config.tissue)
    grid = grid_coords(w, h, size0)
    fractions = tissue_fractions(mask, mask_scale, grid, size0)
    keep = fractions >= config.tissue_threshold
    if config.tissue_threshold == 0.0:
        keep &= fractions > 0
    return TilingResult(
        slide_id=slide.slide_id,
        coords=np.ascontiguousarray(grid[keep]),
        fractions=fractions[keep],
        plan=plan,
        mask=mask,
        mask_scale=mask_scale,
        level0_size=(w, h),
        tissue_threshold=config.tissue_threshold,
    )


def save_patches(path: str | Path, result: TilingResult) -> Path:
    """Write ``patches/<slide_id>.h5`` atomically: ``coords`` ``(N, 2)`` int64 with attributes
    (:meth:`TilingResult.coords_attrs`) and ``tissue_fraction`` ``(N,)`` float32."""
    out = Path(path)
    size = result.coords.size * 8 + result.fractions.size * 4  # a too-full disk: refused first
    with atomic_path(out, expected_bytes=size) as tmp, h5py.File(tmp, "w") as f:
        dset = f.create_dataset("coords", data=result.coords.astype(np.int64))
        for key, value in result.coords_attrs().items():
            dset.attrs[key] = value
        f.create_dataset("tissue_fraction", data=result.fractions.astype(np.float32))
    return out


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
    w, h = result.level0_size
    out_w, out_h = fit_size(w, h, max_size)
    image = slide.read_rect(Region(0, 0, w, h), (out_w, out_h)).astype(np.float32)
    sx, sy = w / out_w, h / out_h
    step = result.plan.patch_size_level0
    # grid cell of every QC column / row, and which cells were kept
    cx = (np.arange(out_w) * sx // step).astype(np.int64)
    cy = (np.arange(out_h) * sy // step).astype(np.int64)
    kept = np.zeros((int(cy[-1]) + 2, int(cx[-1]) + 2), dtype=bool)
    if result.n_patches:
        kept[result.coords[:, 1] // step, result.coords[:, 0] // step] = True
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
    """

    patch_files: dict[str, Path] = field(default_factory=dict)
    n_patches: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)


def tile_slides(
    slides: Iterable[str | Path],
    out_dir: str | Path,
    config: TilingConfig,
    *,
    strict: bool = False,
    on_error: Callable[[str, str], None] | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
) -> TileReport:
    """Tile every slide into ``out_dir/patches/<id>.h5`` and ``out_dir/masks/<id>.png``.

    A bad slide (unreadable, 0 tissue patches, duplicate id) is passed to ``on_error`` and
    skipped — or, with ``strict``, its :class:`HMILError` is raised at once. A slide without
    tissue patches still gets its QC image, so one can see why.
    """
    out = Path(out_dir)
    paths = [Path(s) for s in slides]
    report = TileReport()
    seen: dict[str, Path] = {}
    bar = Progress(len(paths), "tile", enabled=progress)
    for path in paths:
        try:
            _tile_one(path, out, config, seen, report, log)
        except HMILError as exc:
            if strict:
                raise
            report.failures.append((exc.where, exc.problem))
            if on_error is not None:
                on_error(exc.where, exc.problem)
        bar.update(1)
    bar.close()
    return report


def _tile_one(
    path: Path,
    out: Path,
    config: TilingConfig,
    seen: dict[str, Path],
    report: TileReport,
    log: Callable[[str], None] | None,
) -> None:
    """Tile one slide into ``report``; raises HMILError for a slide that must be skipped."""
    with open_slide(path) as slide:
        sid = slide.slide_id
        if sid in seen:
            raise HMILError(path, f"duplicate slide id '{sid}' (also {seen[sid]})")
        seen[sid] = path
        result = tile_slide(slide, config)
        if result.plan.note and log is not None:
            log(f"{sid}: {result.plan.note}")
        save_png(out / "masks" / f"{sid}.png", render_qc(slide, result))
    if result.n_patches == 0:
        (out / "patches" / f"{sid}.h5").unlink(missing_ok=True)  # no stale coords from a rerun
        tissue = 100.0 * float(result.mask.mean())
        raise HMILError(
            path,
            f"0 patches passed the tissue threshold {config.tissue_threshold:g} "
            f"(tissue covers {tissue:.1f}% of the slide; see masks/{sid}.png)",
        )
    target = save_patches(out / "patches" / f"{sid}.h5", result)
    report.patch_files[sid] = target
    report.n_patches[sid] = result.n_patches
    if log is not None:
        plan = result.plan
        mag = plan.target_magnification
        where = f"{mag:.3g}x" if mag is not None else f"level {plan.patch_level}"
        log(
            f"{sid}: {result.n_patches} patches of {plan.patch_size}px at {where} "
            f"(level {plan.patch_level}, {plan.patch_size_level0}px at level 0)"
        )
