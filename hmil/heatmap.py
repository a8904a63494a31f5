"""``hmil heatmap``'s files from a level's attention: the overlay PNG with its legend, the QuPath
GeoJSON (:mod:`hmil.geojson`) and the top-k patch crops (:mod:`hmil.crops`), all or none.

The pictures come from the one overlay engine (:mod:`hmil.overlay`, re-exported here for
existing callers), so ``hmil heatmap``'s PNG and the viewer's map of the same slide, label and
style agree to the colour. Inputs are a level's attention (label → ``(N,)`` row), the bag's
``coords`` ``(N, 2)`` (level-0 top-left corners) and the level-0 patch size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hmil.crops import save_topk_crops
from hmil.errors import ConfigError, SlideError
from hmil.geojson import Classification, write_detections
from hmil.hierarchy import Hierarchy
from hmil.images import write_png
from hmil.io import atomic_path
from hmil.overlay import (  # the engine, re-exported for existing callers
    CMAPS,
    MAX_PATCH_SIZE,
    MAX_PNG_SIZE,
    MAX_SMOOTH,
    NORMALIZATIONS,
    HeatmapStyle,
    Normalization,
    blend,
    check_coords,
    check_patch_size,
    colormap_lut,
    coords_extent,
    draw_legend,
    heatmap_rgba,
    level_codes,
    normalize_scores,
    rasterize,
    render_codes,
    render_heatmap,
    render_overlay,
)
from hmil.slides.match import SlideMatch, check_bag_on_slide
from hmil.slides.reader import Slide

__all__ = [
    "CMAPS",
    "MAX_PATCH_SIZE",
    "MAX_PNG_SIZE",
    "MAX_SMOOTH",
    "NORMALIZATIONS",
    "HeatmapOutputs",
    "HeatmapStyle",
    "Normalization",
    "bag_offset",
    "blend",
    "check_patch_size",
    "colormap_lut",
    "coords_extent",
    "export_heatmap",
    "heatmap_rgba",
    "normalize_scores",
    "rasterize",
    "render_heatmap",
    "render_overlay",
    "top_label_indices",
    "top_labels",
]  # fmt: skip


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
    return [names[i] for i in top_label_indices(attention)]


def top_label_indices(attention: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per patch, the index (in ``attention``'s order) of :func:`top_labels`' label: ``(N,)``."""
    rows = np.stack([np.asarray(row, dtype=np.float64).ravel() for row in attention.values()])
    return rows.argmax(axis=0)


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
    legend: bool = True,
    hierarchy: Hierarchy | None = None,
) -> HeatmapOutputs:
    """Heatmap PNG of ``label`` (+ GeoJSON of every label, + top-k crops of every label).

    Args:
        attention: label → ``(N,)`` attention of one hierarchy level, in class order.
        label: the class drawn in the PNG.
        coords: ``(N, 2)`` level-0 top-left corners.
        patch_size: level-0 patch side.
        out_png: PNG path (longer side ≤ ``max_size``).
        slide: draw over this slide (else a white canvas over the coords' extent).
        geojson: also write QuPath GeoJSON: one detection per patch classified as ``label``
            (its colour fixed by ``hierarchy``, :func:`hmil.geojson.colour_for_class`), with
            the measurements ``attention_<name>`` of every label and ``top_label_index`` (the
            index in ``attention``'s order of the patch's :func:`top_labels` label), in
            QuPath's coordinates (level-0 minus the slide's bounds offset, from ``slide`` or
            the bag's attributes).
        crops_dir: with ``topk`` > 0, save each label's top-k patches under
            ``crops_dir/<label>/`` (needs ``slide``).
        topk: patches per label to crop.
        max_size: longer side of the PNG.
        style: colours, scale, smoothing; the scale is fitted over every label of
            ``attention`` (shared) unless ``style.per_label``.
        crop_px: crop size in pixels (default: level-0 size, at most 512).
        bag_attrs: the bag's attributes; the slide fields recorded by ``hmil tile`` (``name``,
            ``level0_width``/``level0_height``, ``mpp``) must match ``slide``, else the coords
            must lie inside it (:func:`hmil.slides.match.check_bag_on_slide`).
        allow_slide_mismatch: draw over ``slide`` even when the bag records another (a renamed
            slide file); the check still runs.
        legend: draw the colour bar with the scale's values in the PNG's lower-left corner.
        hierarchy: the classes of the model, which fix each class's GeoJSON colour (without
            it a colour follows from the class name alone).
    """
    if label not in attention:
        raise ConfigError("label", f"unknown label '{label}' (choose from: {', '.join(attention)})")
    c = check_coords(coords)
    patch_size = check_patch_size(patch_size)
    if slide is not None:
        _check_on_slide(c, slide, bag_attrs or {}, allow_slide_mismatch)
    if topk > 0 and (slide is None or crops_dir is None):
        raise ConfigError("topk", "needs a slide and a crops folder (crops are cut from the slide)")
    style = style or HeatmapStyle()
    names = list(attention)
    coded = level_codes(np.stack([attention[n] for n in names]), c, patch_size, style)
    index = names.index(label)
    image = render_codes(coded.codes[index], c, patch_size, style, slide, max_size)
    if legend:
        image = draw_legend(image, coded.legend(index), style.cmap, label)
    outputs = HeatmapOutputs(png=Path(out_png))
    # the PNG is renamed into place only once the GeoJSON is written: a failed export leaves
    # neither (nothing half-done)
    with atomic_path(out_png) as png_tmp:
        write_png(png_tmp, image)
        if geojson is not None:
            measurements = {f"attention_{name}": row for name, row in attention.items()}
            measurements["top_label_index"] = top_label_indices(attention)
            outputs.geojson = write_detections(
                geojson, c, patch_size, measurements,
                classification=Classification.of(label, hierarchy),
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


#: what a refused bag-on-slide check adds to its problem (``hmil heatmap`` names its flags)
MISMATCH_HINT = " (wrong slide? allow_slide_mismatch draws it anyway)"


def _check_on_slide(
    coords: np.ndarray, slide: Slide, attrs: Mapping[str, object], allow_mismatch: bool = False
) -> SlideMatch:
    """The shared bag-on-slide check (:func:`hmil.slides.match.check_bag_on_slide`), its
    refusal pointing at the parameters that decide it (:data:`MISMATCH_HINT`)."""
    try:
        return check_bag_on_slide(attrs, coords, slide, allow_mismatch=allow_mismatch)
    except SlideError as exc:
        raise SlideError(exc.where, f"{exc.problem}{MISMATCH_HINT}") from None
