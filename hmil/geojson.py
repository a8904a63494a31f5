"""GeoJSON as QuPath reads and writes it: patch detections (``hmil heatmap --geojson``), tissue
contours (``hmil tile``'s ``contours_geojson/``) and annotations drawn by hand.

Every file is a ``FeatureCollection`` of ``Polygon`` features in QuPath's image pixels (level-0
pixels minus the slide's bounds offset, y down); ``properties.objectType`` is ``detection`` or
``annotation`` and ``properties.classification`` is ``{"name", "color": [r, g, b]}``. QuPath
keeps the first colour it sees for a class name, so a class's colour here depends only on its
name and the hierarchy (:func:`colour_for_class`): the same on every slide's file, and the same
one the viewer can use. See docs/formats.md.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hmil.errors import AttentionError, TilingError
from hmil.hierarchy import Hierarchy
from hmil.io import atomic_path

#: a polygon: exterior ring then hole rings, each an ``(k, 2)`` float array of level-0 (x, y)
Polygon = list[np.ndarray]
RGB = tuple[int, int, int]

#: class colours (Tableau 10, then its light variants from Tableau 20), RGB 0..255
PALETTE: tuple[RGB, ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
)  # fmt: skip


def class_order(hierarchy: Hierarchy) -> tuple[str, ...]:
    """The hierarchy's class names in palette order: coarse, then fine, each name once."""
    return tuple(dict.fromkeys((*hierarchy.coarse, *hierarchy.fine)))


def colour_among(name: str, names: Sequence[str]) -> RGB:
    """The fixed colour of class ``name``: its place among ``names`` (a hierarchy's
    :func:`class_order`) in :data:`PALETTE`; a name not among them takes the palette entry its
    CRC-32 picks, so it too is the same in every file."""
    order = list(dict.fromkeys(names))
    index = order.index(name) if name in order else zlib.crc32(name.encode("utf-8"))
    return PALETTE[index % len(PALETTE)]


def colour_for_class(name: str, hierarchy: Hierarchy | None = None) -> RGB:
    """The fixed colour of class ``name`` under ``hierarchy`` (:func:`colour_among` its
    :func:`class_order`; without a hierarchy, the CRC-32 entry)."""
    return colour_among(name, class_order(hierarchy) if hierarchy else ())


@dataclass(frozen=True)
class Classification:
    """QuPath's ``properties.classification``: a class name and its RGB colour."""

    name: str
    color: RGB

    @classmethod
    def of(cls, name: str, hierarchy: Hierarchy | None = None) -> Classification:
        """``name`` with its fixed colour (:func:`colour_for_class`)."""
        return cls(name, colour_for_class(name, hierarchy))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "color": [int(c) for c in self.color]}


#: the class of ``hmil tile``'s tissue contours
TISSUE = Classification("Tissue", (0, 170, 0))


@dataclass
class Feature:
    """One feature read back: its polygons (a ``MultiPolygon`` has several) in level-0 pixels.

    Attributes:
        polygons: exterior + holes of each polygon, level-0 ``(x, y)``.
        object_type: ``annotation``, ``detection`` (QuPath's ``objectType``), or ``""``.
        classification: the class name, or ``""``.
        name: the feature's ``properties.name``, or ``""``.
        properties: every property as written.
    """

    polygons: list[Polygon]
    object_type: str = ""
    classification: str = ""
    name: str = ""
    properties: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- writing


def polygon_feature(
    rings: Polygon,
    properties: Mapping[str, Any],
    offset: tuple[float, float] = (0, 0),
) -> dict[str, Any]:
    """A ``Polygon`` feature from level-0 rings (closed if they are not), in QuPath's frame
    (level-0 minus ``offset``), coordinates rounded to 0.1 pixel."""
    dx, dy = offset
    coords = []
    for ring in rings:
        pts = [[round(float(x) - dx, 1), round(float(y) - dy, 1)] for x, y in ring]
        if pts[0] != pts[-1]:
            pts.append(pts[0])
        coords.append(pts)
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": coords},
        "properties": dict(properties),
    }


def write_features(path: str | Path, features: Iterable[Mapping[str, Any]]) -> Path:
    """Write a ``FeatureCollection`` of ``features`` atomically."""
    out = Path(path)
    collection = {"type": "FeatureCollection", "features": list(features)}
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(collection) + "\n", encoding="utf-8")
    return out


def write_tissue_geojson(
    path: str | Path, polygons: list[Polygon], offset: tuple[int, int] = (0, 0)
) -> Path:
    """Tissue polygons as annotations of class ``Tissue`` that QuPath opens and TRIDENT reads
    (``tissue_id`` per feature), in QuPath's frame (level-0 minus ``offset``)."""
    features = (
        polygon_feature(
            rings,
            {"objectType": "annotation", "classification": TISSUE.to_json(), "tissue_id": i},
            offset,
        )
        for i, rings in enumerate(polygons)
    )
    return write_features(path, features)


def detections_text(
    coords: np.ndarray,
    patch_size: float,
    measurements: Mapping[str, np.ndarray],
    object_type: str = "detection",
    classification: Classification | None = None,
    offset: tuple[float, float] = (0, 0),
) -> str:
    """The text of :func:`detections_collection` (see there for the arguments)."""
    return "".join(
        detection_chunks(coords, patch_size, measurements, object_type, classification, offset)
    )


def detections_collection(
    coords: np.ndarray,
    patch_size: float,
    measurements: Mapping[str, np.ndarray],
    object_type: str = "detection",
    classification: Classification | None = None,
    offset: tuple[float, float] = (0, 0),
) -> dict[str, Any]:
    """A QuPath-importable ``FeatureCollection``: one square ``Polygon`` per patch.

    Args:
        coords: ``(N, 2)`` level-0 top-left corners.
        patch_size: level-0 patch side.
        measurements: measurement name → ``(N,)`` finite values (e.g. ``attention_IC``); stored
            per feature under ``properties.measurements``.
        object_type: QuPath object type (``detection`` is light enough for 100k patches).
        classification: the class every feature carries (``properties.classification``).
        offset: subtracted from the coordinates (a slide's :attr:`~hmil.slides.Slide.offset`:
            QuPath shows OpenSlide slides cropped to their bounds).

    Returns:
        The GeoJSON object (geometry in QuPath's image pixels, y down).
    """
    text = detections_text(coords, patch_size, measurements, object_type, classification, offset)
    data: dict[str, Any] = json.loads(text)
    return data


def write_detections(
    path: str | Path,
    coords: np.ndarray,
    patch_size: float,
    measurements: Mapping[str, np.ndarray],
    object_type: str = "detection",
    classification: Classification | None = None,
    offset: tuple[float, float] = (0, 0),
) -> Path:
    """Write the :func:`detections_collection` of the patches to ``path`` atomically, streamed
    (the inputs are checked before a file is created)."""
    chunks = detection_chunks(coords, patch_size, measurements, object_type, classification, offset)
    first = next(chunks)
    out = Path(path)
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(first)
        for chunk in chunks:
            handle.write(chunk)
    return out


def detection_chunks(
    coords: np.ndarray,
    patch_size: float,
    measurements: Mapping[str, np.ndarray],
    object_type: str = "detection",
    classification: Classification | None = None,
    offset: tuple[float, float] = (0, 0),
) -> Iterator[str]:
    """The GeoJSON text feature by feature, from string templates (about 4× faster than
    building the dict and ``json.dumps`` for 100k patches, and without holding either).
    Integer coordinates are written as integers. The first chunk comes only once every input
    has been checked."""
    c = np.asarray(coords)
    if c.ndim != 2 or c.shape[1] != 2 or c.shape[0] == 0:
        raise AttentionError("coords", f"expected a non-empty (N, 2) array, got shape {c.shape}")
    names = [json.dumps(name) + ":" for name in measurements]
    columns = []
    for name, vals in measurements.items():
        arr = np.asarray(vals, dtype=np.float64).ravel()
        if arr.shape[0] != c.shape[0]:
            raise AttentionError(name, f"{arr.shape[0]} values for {c.shape[0]} patches")
        if not np.isfinite(arr).all():
            raise AttentionError(name, "non-finite measurement values")
        columns.append(arr.tolist())
    cls = ""
    if classification is not None:
        cls = ',"classification":' + json.dumps(classification.to_json(), separators=(",", ":"))
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
    for i, (x, y, *values) in enumerate(zip(xs, ys, *columns, strict=True)):
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


# --------------------------------------------------------------------------- reading


def read_features(path: str | Path, offset: tuple[int, int] = (0, 0)) -> list[Feature]:
    """The polygon features of a GeoJSON file (hmil's, QuPath's export — also its "export as
    array" form —, TRIDENT's ``contours_geojson``): every ``Polygon``/``MultiPolygon`` of a
    ``FeatureCollection`` (or a single feature / geometry), coordinates + ``offset`` (QuPath's
    frame → level-0). Features without a polygon are left out.

    Raises:
        HMILError: naming the file when it is not JSON, not GeoJSON, or has bad coordinates.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TilingError(p, f"not a readable GeoJSON file ({str(exc)[:160]})") from None
    if isinstance(data, list):  # QuPath's "export as array" option
        raw = [f if isinstance(f, dict) else {} for f in data]
    elif isinstance(data, dict) and data.get("type") == "FeatureCollection":
        raw = [f for f in data.get("features") or [] if isinstance(f, dict)]
    elif isinstance(data, dict) and data.get("type") == "Feature":
        raw = [data]
    elif isinstance(data, dict) and "coordinates" in data:
        raw = [{"geometry": data}]
    else:
        raise TilingError(p, "not GeoJSON (expected a FeatureCollection, Feature or geometry)")
    features: list[Feature] = []
    try:
        for item in raw:
            polygons = _polygons(item.get("geometry"), offset)
            if polygons:
                features.append(_feature(polygons, item.get("properties")))
    except (TypeError, ValueError, IndexError) as exc:
        raise TilingError(p, f"malformed polygon coordinates ({str(exc)[:160]})") from None
    return features


def read_tissue_geojson(path: str | Path, offset: tuple[int, int] = (0, 0)) -> list[Polygon]:
    """Every polygon of a GeoJSON file (:func:`read_features`), e.g. tissue contours."""
    return [polygon for feature in read_features(path, offset) for polygon in feature.polygons]


def _polygons(geometry: Any, offset: tuple[int, int]) -> list[Polygon]:
    if not isinstance(geometry, dict):
        return []
    coordinates = geometry.get("coordinates") or []
    parts: dict[str, list[Any]] = {"Polygon": [coordinates], "MultiPolygon": coordinates}
    out: list[Polygon] = []
    for rings in parts.get(str(geometry.get("type")), []):
        polygon = [np.asarray(r, dtype=np.float64)[:, :2] + offset for r in rings]
        if polygon and polygon[0].shape[0] >= 3:
            out.append(polygon)
    return out


def _feature(polygons: list[Polygon], properties: Any) -> Feature:
    props = properties if isinstance(properties, dict) else {}
    classification = props.get("classification")
    name = classification.get("name") if isinstance(classification, dict) else classification
    return Feature(
        polygons=polygons,
        object_type=str(props.get("objectType") or ""),
        classification=str(name or ""),
        name=str(props.get("name") or ""),
        properties=props,
    )
