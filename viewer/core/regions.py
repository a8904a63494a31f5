"""The slide page's regions as pure functions: what the deep-zoom view draws (``data["regions"]``,
``data["draw"]``, ``data["caption"]``), a drawing the browser sends back checked and turned into
a polygon, the class a new drawing gets, and the attention-vs-region table as the page shows it.

Why here: the browser is not trusted. A drawing arrives as whatever JSON the page sent (see
the protocol in ``viewer/frontend/deepzoom.js``); everything is checked here before a polygon
is built, and the polygon then goes through :mod:`hmil.regions`' own checks (inside the slide,
a known class, not crossing itself) before it is saved. No Streamlit.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

from hmil.errors import RegionError
from hmil.regions import UNCLASSIFIED, Region, annotations_collection, parse_annotations

#: the most points one drawing may have (a freehand polygon sampled at screen rate stays far
#: below; more is not a drawing)
MAX_POINTS = 10_000
#: the shapes the view draws
SHAPES = ("rectangle", "polygon")
#: the longest nonce kept (the view sends a short random string)
MAX_NONCE = 100
#: where a refused drawing is reported
DRAWN = "drawn region"
#: the name of a drawn region: "region N"
DRAWN_NAME = re.compile(r"region (\d+)")
#: the stats table's columns as the page shows them (from :func:`hmil.regions.region_stats`)
STATS_COLUMNS = {
    "region": "region",
    "level": "level",
    "label": "label",
    "mean_attention": "mean attention (× uniform)",
    "attention_share": "share",
    "auroc": "AUROC",
}

#: the table's number columns
NUMBERS = tuple(STATS_COLUMNS[c] for c in ("mean_attention", "attention_share", "auroc"))


@dataclass(frozen=True)
class Drawing:
    """A drawing the browser sent, checked: its nonce, shape and polygon (level-0 px)."""

    nonce: str
    shape: str
    geometry: BaseGeometry


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RegionError(DRAWN, "a point coordinate is not a number")
    if not math.isfinite(value):
        raise RegionError(DRAWN, "a point coordinate is not finite")
    return float(value)


def read_drawing(value: Any, seen: Sequence[str] | set[str]) -> Drawing:
    """The trigger value ``{"nonce", "shape", "points": [[x, y], ...]}`` as a :class:`Drawing`.

    Raises RegionError for anything else: not a dict, a nonce that is not a short string or
    was ``seen`` before (the same drawing sent twice), an unknown shape, fewer than 3 or more
    than :data:`MAX_POINTS` points, a point that is not two finite numbers. A rectangle
    becomes the box around its points; a polygon keeps its points in order (whether it
    crosses itself is :mod:`hmil.regions`' check).
    """
    if not isinstance(value, Mapping):
        raise RegionError(DRAWN, "not a drawing (expected an object)")
    nonce = value.get("nonce")
    if not isinstance(nonce, str) or not 0 < len(nonce) <= MAX_NONCE:
        raise RegionError(DRAWN, "the drawing has no valid nonce")
    if nonce in seen:
        raise RegionError(DRAWN, "this drawing was already received")
    shape = value.get("shape")
    if shape not in SHAPES:
        raise RegionError(DRAWN, f"unknown shape (expected {' or '.join(SHAPES)})")
    points = value.get("points")
    if not isinstance(points, list):
        raise RegionError(DRAWN, "the points are not a list")
    if len(points) > MAX_POINTS:
        raise RegionError(DRAWN, f"{len(points)} points (at most {MAX_POINTS})")
    if len(points) < 3:
        raise RegionError(DRAWN, f"{len(points)} point(s) (at least 3)")
    xy = []
    for point in points:
        if not isinstance(point, list | tuple) or len(point) != 2:
            raise RegionError(DRAWN, "a point is not [x, y]")
        xy.append((_number(point[0]), _number(point[1])))
    if shape == "rectangle":
        xs, ys = [p[0] for p in xy], [p[1] for p in xy]
        geometry: BaseGeometry = box(min(xs), min(ys), max(xs), max(ys))
    else:
        geometry = Polygon(xy)
    return Drawing(nonce=nonce, shape=str(shape), geometry=geometry)


def next_name(regions: Sequence[Region]) -> str:
    """``region N`` with N one more than the largest drawn region's number (1 for the first)."""
    numbers = [int(m.group(1)) for r in regions if (m := DRAWN_NAME.fullmatch(r.name))]
    return f"region {max(numbers, default=0) + 1}"


def checked_region(
    drawing: Drawing,
    name: str,
    classification: str,
    bounds: tuple[int, int],
    classes: Sequence[str],
) -> Region:
    """The drawing as a :class:`Region`, validated by :mod:`hmil.regions` exactly as an
    imported annotation file is (inside ``bounds`` = level-0 (width, height), a class among
    ``classes`` or unclassified, a valid polygon); raises RegionError."""
    if drawing.geometry.is_empty:
        raise RegionError(DRAWN, "the drawing has no area")
    draft = Region(name=name, classification=classification, geometry=drawing.geometry)
    text = json.dumps(annotations_collection([draft]))
    try:
        (region,) = parse_annotations(text, DRAWN, bounds=bounds, classes=classes)
    except RegionError as exc:  # the one feature of a drawing needs no number
        problem = exc.problem.removeprefix("feature 1: ").replace("feature 1 ", "the drawing ")
        raise RegionError(DRAWN, problem) from None
    return region


def class_options(coarse: Sequence[str], fine: Sequence[str]) -> list[str]:
    """What a new drawing may be classed as: unclassified, the fine classes, then the coarse
    classes (each name once)."""
    return list(dict.fromkeys([UNCLASSIFIED, *fine, *coarse]))


def default_class(true_fine: str | None, options: Sequence[str]) -> str:
    """The slide's true fine label when it has one among ``options``, else unclassified."""
    return true_fine if true_fine is not None and true_fine in options else UNCLASSIFIED


def class_text(classification: str) -> str:
    """How a class is named in the panel (unclassified has no name of its own)."""
    return classification if classification != UNCLASSIFIED else "(unclassified)"


def _parts(geometry: BaseGeometry) -> list[Polygon]:
    if isinstance(geometry, MultiPolygon):
        return list(geometry.geoms)
    return [geometry] if isinstance(geometry, Polygon) else []


def rings(geometry: BaseGeometry) -> list[list[float]]:
    """Every exterior and hole ring of a (Multi)Polygon as a closed flat list
    ``[x0, y0, x1, y1, ...]`` of level-0 px, rounded to 0.1 px (what the view draws)."""
    out: list[list[float]] = []
    for polygon in _parts(geometry):
        for ring in (polygon.exterior, *polygon.interiors):
            coords = np.asarray(ring.coords, dtype=np.float64).round(1)
            out.append([float(v) for v in coords.reshape(-1)])
    return out


def regions_part(regions: Sequence[Region]) -> list[dict[str, Any]]:
    """``data["regions"]``: name, class, colour and rings of each region."""
    return [
        {
            "name": r.name,
            "classification": r.classification,
            "colour": [int(c) for c in r.colour],
            "rings": rings(r.geometry),
        }
        for r in regions
    ]


def draw_part(enabled: bool, classification: str, colour: Sequence[int]) -> dict[str, Any]:
    """``data["draw"]``: whether drawing is offered, and the class and colour it gets."""
    return {
        "enabled": bool(enabled),
        "classification": classification,
        "colour": [int(c) for c in colour],
    }


def caption_part(
    slide_id: str, level: str, label: str, truth: Mapping[str, str] | None, model: str
) -> dict[str, str]:
    """``data["caption"]``: what the PNG export writes under the image: the slide, the label
    shown, the truth at that level (empty when unknown) and the model file."""
    true = (truth or {}).get(level, "")
    return {
        "slide_id": slide_id,
        "label": f"{level} · {label}" if label else "",
        "truth": f"{level} · {true}" if true else "",
        "model": model,
    }


def stats_table(
    frame: pd.DataFrame,
    level: str,
    label: str,
    truth: Mapping[str, str] | None,
    all_labels: bool,
) -> pd.DataFrame:
    """:func:`hmil.regions.region_stats`' rows as the panel shows them: by default only the
    label shown on the view and the true label of that level (every label with
    ``all_labels``), in :data:`STATS_COLUMNS`, rounded to 3 decimals."""
    rows = frame
    if not all_labels and not frame.empty:
        wanted = {label, (truth or {}).get(level, label)}
        rows = frame[(frame["level"] == level) & frame["label"].isin(wanted)]
    out = rows[list(STATS_COLUMNS)].rename(columns=STATS_COLUMNS).reset_index(drop=True)
    return out.round({c: 3 for c in NUMBERS})


def safe_file_stem(slide_id: str) -> str:
    """``slide_id`` with every character but letters, digits, ``.``, ``_`` and ``-`` as ``_``
    (a download's file name; never empty)."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", slide_id).strip(".")
    return stem or "slide"
