"""Attention → files: the overlay PNG with its legend, QuPath GeoJSON, top-k patch crops.

The pictures come from the one overlay engine (:mod:`hmil.overlay`, re-exported here for
existing callers), so ``hmil heatmap``'s PNG and the viewer's map of the same slide, label and
style agree to the colour. Inputs are a level's attention (label → ``(N,)`` row), the bag's
``coords`` ``(N, 2)`` (level-0 top-left corners) and the level-0 patch size.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from hmil.errors import HMILError, SlideError
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
from hmil.slides.reader import Region, Slide

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
    "class_colour",
    "colormap_lut",
    "coords_extent",
    "export_heatmap",
    "geojson_collection",
    "geojson_text",
    "heatmap_rgba",
    "normalize_scores",
    "rasterize",
    "render_heatmap",
    "render_overlay",
    "save_png",
    "save_topk_crops",
    "top_labels",
    "topk_indices",
    "write_geojson",
]  # fmt: skip


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an ``(H, W, 3|4)`` uint8 image as PNG atomically."""
    out = Path(path)
    with atomic_path(out) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return out


# --------------------------------------------------------------------------- GeoJSON


#: QuPath classification colours per label index (Tableau 10), RGB 0..255
_CLASS_COLOURS: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip


def class_colour(index: int) -> tuple[int, int, int]:
    """The colour of the ``index``-th label in GeoJSON classifications (cycles after 10)."""
    return _CLASS_COLOURS[index % len(_CLASS_COLOURS)]


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
    rows = np.stack([np.asarray(attention[n], dtype=np.float64).ravel() for n in names])
    return [names[i] for i in rows.argmax(axis=0)]


def _classifications(labels: list[str] | None, n: int) -> list[str]:
    """Per-patch JSON of ``properties.classification`` (QuPath: ``{"name", "color"}``)."""
    if labels is None:
        return [""] * n
    if len(labels) != n:
        raise HMILError("classification", f"{len(labels)} labels for {n} patches")
    order = list(dict.fromkeys(labels))
    text = {
        name: ',"classification":'
        + json.dumps({"name": name, "color": list(class_colour(i))}, separators=(",", ":"))
        for i, name in enumerate(order)
    }
    return [text[name] for name in labels]


def geojson_collection(
    coords: np.ndarray,
    patch_size: float,
    measurements: Mapping[str, np.ndarray],
    object_type: str = "detection",
    classification: list[str] | None = None,
    offset: tuple[float, float] = (0, 0),
) -> dict[str, object]:
    """A QuPath-importable ``FeatureCollection``: one square ``Polygon`` per patch.

    Args:
        coords: ``(N, 2)`` level-0 top-left corners.
        patch_size: level-0 patch side.
        measurements: measurement name → ``(N,)`` values (e.g. ``attention_IC``); stored per
            feature under ``properties.measurements``.
        object_type: QuPath object type (``detection`` is light enough for 100k patches).
        classification: per patch, a class name for ``properties.classification`` (e.g.
            :func:`top_labels`), written as ``{"name", "color"}`` as QuPath requires.
        offset: subtracted from the coordinates (a slide's :attr:`~hmil.slides.Slide.offset`:
            QuPath shows OpenSlide slides cropped to their bounds).

    Returns:
        The GeoJSON object (geometry in QuPath's image pixels, y down).
    """
    text = geojson_text(coords, patch_size, measurements, object_type, classification, offset)
    return json.loads(text)


def geojson_text(
    coords: np.ndarray,
    patch_size: float,
    measurements: Mapping[str, np.ndarray],
    object_type: str = "detection",
    classification: list[str] | None = None,
    offset: tuple[float, float] = (0, 0),
) -> str:
    """The text of :func:`geojson_collection` (see there for the arguments)."""
    return "".join(
        _geojson_chunks(coords, patch_size, measurements, object_type, classification, offset)
    )


def _geojson_chunks(
    coords: np.ndarray,
    patch_size: float,
    measurements: Mapping[str, np.ndarray],
    object_type: str,
    classification: list[str] | None,
    offset: tuple[float, float],
) -> Iterator[str]:
    """The GeoJSON text feature by feature, from string templates (about 4× faster than
    building the dict and ``json.dumps`` for 100k patches, and without holding either).
    Integer coordinates are written as integers."""
    c = check_coords(coords)
    names = [json.dumps(name) + ":" for name in measurements]
    columns = []
    for name, vals in measurements.items():
        arr = np.asarray(vals, dtype=np.float64).ravel()
        if arr.shape[0] != c.shape[0]:
            raise HMILError(name, f"{arr.shape[0]} values for {c.shape[0]} patches")
        if not np.isfinite(arr).all():
            raise HMILError(name, "non-finite measurement values")
        columns.append(arr.tolist())
    classes = _classifications(classification, c.shape[0])
    dx, dy = offset
    integral = (
        float(patch_size).is_integer()
        and np.issubdtype(c.dtype, np.integer)
        and float(dx).is_integer()
        and float(dy).is_integer()
    )
    if integral:
        s: float = int(patch_size)
        xs = (c[:, 0].astype(np.int64) - int(dx)).tolist()
        ys = (c[:, 1].astype(np.int64) - int(dy)).tolist()
    else:
        s = float(patch_size)
        xs = (c[:, 0].astype(np.float64) - float(dx)).tolist()
        ys = (c[:, 1].astype(np.float64) - float(dy)).tolist()
    kind = json.dumps(object_type)
    yield '{"type":"FeatureCollection","features":['
    for i, (x, y, cls, *values) in enumerate(zip(xs, ys, classes, *columns, strict=True)):
        x1, y1 = x + s, y + s
        meas = ",".join([n + repr(v) for n, v in zip(names, values, strict=True)])
        yield (
            ("," if i else "")
            + '{"type":"Feature","geometry":{"type":"Polygon","coordinates":'
            + f"[[[{x},{y}],[{x1},{y}],[{x1},{y1}],[{x},{y1}],[{x},{y}]]]}},"
            + f'"properties":{{"objectType":{kind},"name":"patch {i}"{cls},'
            + f'"measurements":{{{meas}}}}}}}'
        )
    yield "]}"


def write_geojson(
    path: str | Path,
    coords: np.ndarray,
    patch_size: float,
    measurements: Mapping[str, np.ndarray],
    object_type: str = "detection",
    classification: list[str] | None = None,
    offset: tuple[float, float] = (0, 0),
) -> Path:
    """Write the :func:`geojson_collection` of the patches to ``path`` atomically (streamed)."""
    chunks = _geojson_chunks(coords, patch_size, measurements, object_type, classification, offset)
    first = next(chunks)  # validates the inputs before a file is created
    out = Path(path)
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(first)
        for chunk in chunks:
            handle.write(chunk)
    return out


# --------------------------------------------------------------------------- top-k crops


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
    folder = Path(out_dir) / _safe_name(label)
    paths: list[Path] = []
    for rank, i in enumerate(topk_indices(scores, k)):
        x, y = int(c[i, 0]), int(c[i, 1])
        crop = slide.read_rect(Region(x, y, size0, size0), (px, px))
        name = f"{rank:02d}_{slide.slide_id}_x{x}_y{y}_a{float(scores[i]):.4g}.png"
        paths.append(save_png(folder / name, crop))
    return paths


def _safe_name(label: str) -> str:
    """A label usable as a folder name (path separators and odd characters replaced)."""
    cleaned = re.sub(r"[^A-Za-z0-9._+-]+", "_", label).strip("._")
    return cleaned or "label"


# --------------------------------------------------------------------------- one call


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
) -> HeatmapOutputs:
    """Heatmap PNG of ``label`` (+ GeoJSON of every label, + top-k crops of every label).

    Args:
        attention: label → ``(N,)`` attention of one hierarchy level, in class order.
        label: the class drawn in the PNG.
        coords: ``(N, 2)`` level-0 top-left corners.
        patch_size: level-0 patch side.
        out_png: PNG path (longer side ≤ ``max_size``).
        slide: draw over this slide (else a white canvas over the coords' extent).
        geojson: also write QuPath GeoJSON with ``attention_<label>`` for every label and the
            patch's :func:`top_labels` as its ``classification``, in QuPath's coordinates
            (level-0 minus the slide's bounds offset, from ``slide`` or the bag's attributes).
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
    """
    if label not in attention:
        raise HMILError("--label", f"unknown label '{label}' (choose from: {', '.join(attention)})")
    c = check_coords(coords)
    patch_size = check_patch_size(patch_size)
    if slide is not None:
        _check_on_slide(c, slide, bag_attrs or {}, allow_slide_mismatch)
    if topk > 0 and (slide is None or crops_dir is None):
        raise HMILError("--topk", "needs --slide and --crops DIR (crops are cut from the slide)")
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
        Image.fromarray(image).save(png_tmp, format="PNG")
        if geojson is not None:
            measurements = {f"attention_{name}": row for name, row in attention.items()}
            outputs.geojson = write_geojson(
                geojson, c, patch_size, measurements,
                classification=top_labels(attention),
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


def _check_on_slide(
    coords: np.ndarray, slide: Slide, attrs: Mapping[str, object], allow_mismatch: bool = False
) -> SlideMatch:
    """The shared bag-on-slide check (:func:`hmil.slides.match.check_bag_on_slide`), its
    refusal pointing at the command's flags."""
    try:
        return check_bag_on_slide(attrs, coords, slide, allow_mismatch=allow_mismatch)
    except SlideError as exc:
        raise SlideError(
            exc.where, f"{exc.problem} (wrong --slide? --allow-slide-mismatch draws it anyway)"
        ) from None
