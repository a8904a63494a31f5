"""Regions: annotation polygons on a slide, and how the model's attention falls on them.

A pathologist who reviews a slide wants to ask whether the model looks where they would: they
import the annotations they drew in QuPath (or draw regions in the viewer) and compare them
with the class-wise attention maps. A region is a valid shapely ``Polygon`` or
``MultiPolygon`` (holes kept) in LEVEL-0 PIXELS (x right, y down), the frame of a bag's
coords, with a unique name and a class name (or :data:`UNCLASSIFIED`).

* Reading (:func:`parse_annotations`, :func:`read_annotations`): a GeoJSON
  ``FeatureCollection`` (or QuPath's "export as array" list of features). Anything that would
  make a misleading overlay is refused with one :class:`~hmil.errors.RegionError` line naming
  the feature, and nothing is kept: a geometry that is not an area, a polygon that crosses
  itself, one outside the slide, an unknown class name, a file over
  :data:`MAX_ANNOTATION_BYTES` (checked before it is read).
* Storing (:func:`save_regions` and friends): ``RUN/regions/<slide_id>.geojson``, written
  atomically under a lock, so the viewer and a script can add regions at once.
* Exporting (:func:`annotations_collection`): QuPath annotations (``objectType``
  ``annotation``, ``classification`` ``{name, color}``) that QuPath imports as they are.
* Comparing (:func:`region_stats`): per region, level and class row, how much attention falls
  inside, and how well the row separates inside from outside (ROC AUC).

See docs/review.md (Regions) and docs/formats.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from hmil.crops import safe_name
from hmil.errors import AttentionError, RegionError
from hmil.geojson import colour_among, polygon_feature, write_features
from hmil.io import atomic_path

#: size cap of one annotation file or upload, checked before it is read
MAX_ANNOTATION_BYTES = 32 * 1024 * 1024
#: most features one annotation file may hold (QuPath's annotations of a slide are far fewer)
MAX_REGIONS = 10_000
#: the classification of a region without a class (QuPath: no ``classification`` property)
UNCLASSIFIED = ""
#: ``RUN/<REGIONS_DIR>/<slide_id>.geojson``
REGIONS_DIR = "regions"
#: the longest region name kept (longer ones are cut)
MAX_NAME_CHARS = 200
#: the columns of :func:`region_stats`, in order
STATS_COLUMNS = (
    "region", "classification", "level", "label", "n_patches", "n_inside",
    "mean_attention", "attention_share", "auroc",
)  # fmt: skip
#: the geometry types that are areas, GeoJSON name -> shapely class
_AREAS: dict[str, type[BaseGeometry]] = {"Polygon": Polygon, "MultiPolygon": MultiPolygon}
#: shapely's explain_validity: ``Reason[x y]``
_VALIDITY = re.compile(r"^(?P<reason>[^\[]+)\[(?P<x>\S+) (?P<y>\S+)\]$")
#: a name ending in a number (``region 3``): a duplicate counts on from it
_NUMBERED = re.compile(r"^(?P<base>.*?) (?P<n>\d+)$")


@dataclass(frozen=True)
class Region:
    """One annotated area of a slide.

    Attributes:
        name: unique per slide (``lesion 1``, ``region 3``).
        classification: a class name, or :data:`UNCLASSIFIED`.
        geometry: a valid ``Polygon`` or ``MultiPolygon`` in level-0 pixels (holes kept).
        palette: the run's class names in palette order (:func:`hmil.geojson.class_order`:
            coarse, then fine), set when the region was read against a run's classes; it
            fixes :attr:`colour`. Not part of equality.
    """

    name: str
    classification: str
    geometry: BaseGeometry
    palette: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @property
    def colour(self) -> tuple[int, int, int]:
        """The class's fixed RGB colour (:func:`hmil.geojson.colour_among` the palette): the
        one ``hmil heatmap --geojson`` and the demo's lesion files give the class, so a class
        has one colour in the viewer and in every file of the run — and two classes of one
        hierarchy never share one (a name hash alone made ``UDH`` and ``ADH`` alike)."""
        return colour_among(self.classification, self.palette)

    def feature(self) -> dict[str, Any]:
        """This region as a QuPath annotation ``Feature`` (level-0 pixels, holes as interior
        rings; an unclassified region has no ``classification``, as QuPath writes it)."""
        properties: dict[str, Any] = {"objectType": "annotation", "name": self.name}
        if self.classification != UNCLASSIFIED:
            properties["classification"] = {
                "name": self.classification,
                "color": [int(c) for c in self.colour],
            }
        parts = [polygon_feature(_rings(p), {}) for p in _parts(self.geometry)]
        if isinstance(self.geometry, Polygon):
            return {**parts[0], "properties": properties}
        geometry = {
            "type": "MultiPolygon",
            "coordinates": [p["geometry"]["coordinates"] for p in parts],
        }
        return {"type": "Feature", "geometry": geometry, "properties": properties}

    def outline(self) -> list[list[list[float]]]:
        """The exterior ring ``[[x, y], ...]`` of each polygon part (what the browser draws)."""
        return [[[float(x), float(y)] for x, y in p.exterior.coords] for p in _parts(self.geometry)]


def _parts(geometry: BaseGeometry) -> list[Polygon]:
    if isinstance(geometry, MultiPolygon):
        return list(geometry.geoms)
    if isinstance(geometry, Polygon):
        return [geometry]
    raise TypeError(f"a region is a Polygon or MultiPolygon, not {geometry.geom_type}")


def _rings(polygon: Polygon) -> list[np.ndarray]:
    """Exterior then holes, each ``(k, 2)`` level-0 (x, y)."""
    rings = [polygon.exterior, *polygon.interiors]
    return [np.asarray(ring.coords, dtype=np.float64)[:, :2] for ring in rings]


# --------------------------------------------------------------------------- reading


def parse_annotations(
    text: str | bytes,
    source: str,
    *,
    bounds: tuple[int, int] | None = None,
    classes: Sequence[str] | None = None,
) -> list[Region]:
    """The regions of a GeoJSON text (a ``FeatureCollection``, or QuPath's array of features).

    Args:
        text: the file's content.
        source: the file name the errors name.
        bounds: level-0 ``(width, height)`` of the slide: a geometry reaching beyond
            ``[0, width] x [0, height]`` is refused. None: not checked.
        classes: the allowed class names (:data:`UNCLASSIFIED` always is). None: any.

    Returns:
        One region per feature, in file order; names from ``properties.name``, else
        ``<class or "region"> <n>``, made unique.

    Raises:
        RegionError: naming ``source`` (and the feature, counted from 1) for the first problem.
    """
    return _parse(text, source, bounds, classes, allow_empty=False)


def read_annotations(
    path: str | Path,
    *,
    bounds: tuple[int, int] | None = None,
    classes: Sequence[str] | None = None,
    allow_empty: bool = False,
) -> list[Region]:
    """:func:`parse_annotations` of a file; its size is checked before it is read.
    ``allow_empty``: a collection without features gives ``[]`` (a slide with nothing to
    outline, e.g. the demo's ``normal`` slides) instead of an error."""
    return _parse(_read_capped(Path(path)), str(path), bounds, classes, allow_empty=allow_empty)


def _read_capped(path: Path) -> bytes:
    try:
        size = os.stat(path).st_size
        if size > MAX_ANNOTATION_BYTES:
            raise RegionError(path, f"{_mib(size)} is over the {_mib(MAX_ANNOTATION_BYTES)} limit")
        return path.read_bytes()
    except OSError as exc:
        raise RegionError(path, f"cannot be read ({exc.strerror or exc})") from None


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _parse(
    text: str | bytes,
    source: str,
    bounds: tuple[int, int] | None,
    classes: Sequence[str] | None,
    allow_empty: bool,
) -> list[Region]:
    size = len(text.encode("utf-8") if isinstance(text, str) else text)
    if size > MAX_ANNOTATION_BYTES:
        raise RegionError(source, f"{_mib(size)} is over the {_mib(MAX_ANNOTATION_BYTES)} limit")
    try:
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegionError(source, f"not JSON ({str(exc)[:120]})") from None
    except RecursionError:
        raise RegionError(source, "not JSON a reader can take (nested too deeply)") from None
    features = _features(data, source)
    if len(features) > MAX_REGIONS:
        raise RegionError(source, f"{len(features)} features, more than the {MAX_REGIONS} allowed")
    if not features and not allow_empty:
        raise RegionError(source, "no regions (the file holds no feature)")
    #: in the caller's order, for the error's list of known names
    allowed = None if classes is None else [*dict.fromkeys(classes)]
    regions: list[Region] = []
    taken: set[str] = set()
    for number, item in enumerate(features, start=1):
        try:
            region = _region(item, number, bounds, allowed)
        except RegionError as exc:
            raise RegionError(source, exc.problem) from None
        name = unique_name(region.name, taken)
        taken.add(name)
        regions.append(Region(name, region.classification, region.geometry, tuple(allowed or ())))
    return regions


def _features(data: Any, source: str) -> list[Any]:
    if isinstance(data, list):  # QuPath's "export as array"
        return data
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features")
        if isinstance(features, list):
            return features
        raise RegionError(source, "the FeatureCollection has no 'features' list")
    kind = data.get("type") if isinstance(data, dict) else type(data).__name__
    raise RegionError(source, f"not a GeoJSON FeatureCollection (found {str(kind)[:40]!r})")


def _region(
    item: Any, number: int, bounds: tuple[int, int] | None, allowed: list[str] | None
) -> Region:
    """One feature as a region; ``RegionError("", problem)`` (the caller names the file)."""
    where = f"feature {number}"
    if not isinstance(item, dict) or not isinstance(item.get("geometry"), dict):
        raise RegionError("", f"{where}: not a GeoJSON Feature with a geometry")
    kind = str(item["geometry"].get("type"))[:40]
    if kind not in _AREAS:
        raise RegionError(
            "", f"{where}: {kind} is not a region (only Polygon and MultiPolygon are)"
        )
    geometry = _geometry(item["geometry"], where)
    if bounds is not None:
        w, h = bounds
        x0, y0, x1, y1 = geometry.bounds
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            raise RegionError("", f"{where} lies outside the slide ({w} x {h} px)")
    raw_props = item.get("properties")
    props: dict[str, Any] = raw_props if isinstance(raw_props, dict) else {}
    classification = _class_name(props.get("classification"), where)
    if allowed is not None and classification not in (*allowed, UNCLASSIFIED):
        known = ", ".join(c for c in allowed if c != UNCLASSIFIED)
        raise RegionError("", f"{where}: unknown class '{classification}' (known: {known})")
    default = f"{classification or 'region'} {number}"
    return Region(_clean_name(props.get("name")) or _clean_name(default), classification, geometry)


def _geometry(raw: dict[str, Any], where: str) -> BaseGeometry:
    try:
        geometry = shape(raw)
        coords = shapely.get_coordinates(geometry)
    except (TypeError, ValueError, IndexError, AttributeError, shapely.errors.ShapelyError):
        raise RegionError("", f"{where}: malformed {raw.get('type')} coordinates") from None
    if geometry.is_empty or coords.shape[0] == 0:
        raise RegionError("", f"{where}: an empty {raw.get('type')}")
    if not np.isfinite(coords).all():
        raise RegionError("", f"{where}: coordinates that are not finite numbers")
    if not geometry.is_valid:
        raise RegionError("", f"{where}: {_invalid(geometry)}")
    if geometry.area <= 0:
        raise RegionError("", f"{where}: a polygon without area")
    return geometry


def _invalid(geometry: BaseGeometry) -> str:
    """shapely's reason, as ``self-intersection at (x, y)``."""
    reason = explain_validity(geometry)
    match = _VALIDITY.match(reason)
    if match is None:
        return reason[:1].lower() + reason[1:120]
    text = match["reason"].strip()
    text = text[:1].lower() + text[1:]
    return f"{text} at ({float(match['x']):g}, {float(match['y']):g})"


def _class_name(raw: Any, where: str) -> str:
    """QuPath's ``classification``: ``{"name", "color"}`` or a plain string; absent: none."""
    name = raw.get("name") if isinstance(raw, dict) else raw
    if name is None:
        return UNCLASSIFIED
    if not isinstance(name, str):
        raise RegionError("", f"{where}: the classification name is not text")
    return " ".join(name.split())


def _clean_name(raw: Any) -> str:
    """A name shown as plain text: control characters and runs of spaces become one space."""
    if not isinstance(raw, str):
        return ""
    text = "".join(c if c.isprintable() else " " for c in raw)
    return " ".join(text.split())[:MAX_NAME_CHARS]


def unique_name(name: str, taken: Iterable[str]) -> str:
    """``name``, or the next free one when it is taken: ``region 3`` -> ``region 4``,
    ``lesion`` -> ``lesion 2``."""
    used = set(taken)
    if name not in used:
        return name
    match = _NUMBERED.match(name)
    base, n = (match["base"], int(match["n"])) if match else (name, 2)
    while f"{base} {n}" in used:
        n += 1
    return f"{base} {n}"


def merge_by_class(regions: Sequence[Region]) -> list[Region]:
    """One region per class: the union of that class's regions, named after the class
    (``region`` for the unclassified), in order of first appearance.

    A lesion drawn as three polygons is one lesion: asking whether a class's attention finds
    *its* regions is a question about their union, not about each polygon alone.
    """
    groups: dict[str, list[BaseGeometry]] = {}
    palette = regions[0].palette if regions else ()
    for region in regions:
        groups.setdefault(region.classification, []).append(region.geometry)
    return [
        Region(name or "region", name, shapely.union_all(geometries), palette)
        for name, geometries in groups.items()
    ]


# --------------------------------------------------------------------------- writing


def annotations_collection(regions: Sequence[Region]) -> dict[str, Any]:
    """The regions as a QuPath-importable ``FeatureCollection`` (level-0 pixels)."""
    return {"type": "FeatureCollection", "features": [r.feature() for r in regions]}


def write_annotations(path: str | Path, regions: Sequence[Region]) -> Path:
    """Write :func:`annotations_collection` to ``path`` atomically."""
    return write_features(path, (r.feature() for r in regions))


# --------------------------------------------------------------------------- storing per run


def regions_path(run: str | Path, slide_id: str) -> Path:
    """``RUN/regions/<slide_id>.geojson``; a slide id that is not a plain file name (a path
    separator, ``..``, odd characters: :func:`hmil.crops.safe_name` would change it) is
    refused, so no path is ever built from an unchecked id."""
    if not isinstance(slide_id, str) or not slide_id or safe_name(slide_id) != slide_id:
        shown = _clean_name(slide_id)[:80] if isinstance(slide_id, str) else repr(slide_id)
        raise RegionError(
            shown or "slide_id", "not a valid slide id (letters, digits and . _ + - only)"
        )
    return Path(run) / REGIONS_DIR / f"{slide_id}.geojson"


def load_regions(
    run: str | Path, slide_id: str, classes: Sequence[str] | None = None
) -> list[Region]:
    """The regions saved for the slide; ``[]`` when none are. ``classes``: the run's class
    names in palette order (:func:`hmil.geojson.class_order`), which fix the colours (and are
    checked, as on import)."""
    path = regions_path(run, slide_id)
    if not path.is_file():
        return []
    return _parse(_read_capped(path), str(path), None, classes, allow_empty=True)


def save_regions(run: str | Path, slide_id: str, regions: Sequence[Region]) -> Path:
    """Replace the slide's regions (atomic; names made unique in order); with none, the file
    is removed. Returns the file's path."""
    path = regions_path(run, slide_id)
    with _locked(path):
        _store(path, list(regions))
    return path


def add_regions(
    run: str | Path, slide_id: str, new: Sequence[Region], classes: Sequence[str] | None = None
) -> list[Region]:
    """Add ``new`` after the slide's saved regions (a name already used is renamed:
    :func:`unique_name`) and save; returns all of them (``classes`` as in
    :func:`load_regions`)."""
    path = regions_path(run, slide_id)
    with _locked(path):
        regions = load_regions(run, slide_id, classes) + list(new)
        return _store(path, regions)


def remove_region(
    run: str | Path, slide_id: str, name: str, classes: Sequence[str] | None = None
) -> list[Region]:
    """Remove the region called ``name`` and save; returns the ones left.

    Raises:
        RegionError: when the slide has no region of that name.
    """
    path = regions_path(run, slide_id)
    with _locked(path):
        regions = load_regions(run, slide_id, classes)
        kept = [r for r in regions if r.name != name]
        if len(kept) == len(regions):
            raise RegionError(slide_id, f"no region named '{_clean_name(name)[:80]}'")
        return _store(path, kept)


def _store(path: Path, regions: list[Region]) -> list[Region]:
    taken: set[str] = set()
    named: list[Region] = []
    for region in regions:
        name = unique_name(region.name, taken)
        taken.add(name)
        named.append(Region(name, region.classification, region.geometry, region.palette))
    if named:
        write_annotations(path, named)
    else:
        path.unlink(missing_ok=True)
    return named


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``RUN/regions/.lock`` around a read-modify-write of a slide's
    file: two viewers adding regions at once both keep theirs. The run directory must exist:
    nothing is written elsewhere."""
    run = path.parent.parent
    if not run.is_dir():
        raise RegionError(run, "not a run directory")
    path.parent.mkdir(exist_ok=True)
    fd = os.open(path.parent / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# --------------------------------------------------------------------------- attention


def patches_inside(region: Region, coords: np.ndarray, patch_size: float) -> np.ndarray:
    """``(N,)`` bool: which patches have their centre in the region (its boundary included).

    Args:
        region: the region.
        coords: ``(N, 2)`` level-0 top-left corners of the patches (a bag's coords).
        patch_size: level-0 patch side; the centre is ``coords + patch_size / 2``.
    """
    c = np.asarray(coords, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 2:
        raise AttentionError("coords", f"expected an (N, 2) array, got shape {c.shape}")
    centre = c + float(patch_size) / 2
    inside: np.ndarray = shapely.intersects_xy(region.geometry, centre[:, 0], centre[:, 1])
    return np.asarray(inside, dtype=bool)


def region_stats(
    regions: Sequence[Region],
    coords: np.ndarray,
    patch_size: float,
    attention: Mapping[str, np.ndarray],
    labels: Mapping[str, Sequence[str]],
) -> pd.DataFrame:
    """How each attention row falls on each region: one row per region x level x label.

    Args:
        regions: the slide's regions.
        coords: ``(N, 2)`` level-0 top-left corners of the bag's patches.
        patch_size: level-0 patch side.
        attention: level -> ``(K, N)`` attention, each row summing to 1
            (``{"coarse": (Kc, N), "fine": (Kf, N)}``).
        labels: level -> the K class names of its rows.

    Returns:
        Columns :data:`STATS_COLUMNS`: ``n_patches`` (N), ``n_inside``, ``mean_attention``
        (``N·a`` averaged over the patches inside: 1 is what a uniform map gives, the slide
        page's "x uniform" scale; NaN with no patch inside), ``attention_share`` (the part of
        the row's attention inside), ``auroc`` (ROC AUC of the row for inside vs outside;
        NaN when either side is empty).
    """
    from sklearn.metrics import roc_auc_score

    c = np.asarray(coords)
    n = c.shape[0] if c.ndim == 2 else -1
    rows_of = {
        level: _rows(attention[level], labels.get(level, ()), level, n) for level in attention
    }
    records: list[dict[str, Any]] = []
    for region in regions:
        inside = patches_inside(region, c, patch_size)
        k = int(inside.sum())
        both = 0 < k < n
        for level, rows in rows_of.items():
            for label, a in zip(labels[level], rows, strict=True):
                total = float(a.sum())
                records.append({
                    "region": region.name,
                    "classification": region.classification,
                    "level": level,
                    "label": label,
                    "n_patches": n,
                    "n_inside": k,
                    "mean_attention": float(n * a[inside].mean()) if k else math.nan,
                    "attention_share": float(a[inside].sum()) / total if total > 0 else math.nan,
                    "auroc": float(roc_auc_score(inside, a)) if both else math.nan,
                })  # fmt: skip
    return pd.DataFrame.from_records(records, columns=list(STATS_COLUMNS))


def _rows(values: np.ndarray, names: Sequence[str], level: str, n: int) -> np.ndarray:
    rows = np.asarray(values, dtype=np.float64)
    if rows.ndim != 2 or rows.shape != (len(names), n):
        raise AttentionError(
            level, f"attention of shape {rows.shape} for {len(names)} labels and {n} patches"
        )
    if not np.isfinite(rows).all():
        raise AttentionError(level, "non-finite attention values")
    return rows


def write_stats(path: str | Path, frame: pd.DataFrame) -> Path:
    """Write the :func:`region_stats` table as CSV, atomically."""
    out = Path(path)
    with atomic_path(out) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    return out
