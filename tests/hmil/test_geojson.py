"""hmil.geojson: QuPath FeatureCollections written and read back (detections, tissue,
annotations) and class colours fixed by name and hierarchy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hmil.errors import HMILError
from hmil.geojson import (
    PALETTE,
    TISSUE,
    Classification,
    colour_for_class,
    detections_collection,
    polygon_feature,
    read_features,
    read_tissue_geojson,
    write_detections,
    write_features,
    write_tissue_geojson,
)
from hmil.hierarchy import Hierarchy

SQUARE = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]])


def test_colour_for_class_is_its_place_in_the_hierarchy() -> None:
    panda = Hierarchy.preset("panda")
    names = list(dict.fromkeys((*panda.coarse, *panda.fine)))
    assert [colour_for_class(n, panda) for n in names] == [
        PALETTE[i % len(PALETTE)] for i in range(len(names))
    ]
    assert Classification.of(names[1], panda).to_json() == {
        "name": names[1],
        "color": list(PALETTE[1]),
    }
    # a name outside the hierarchy: the same colour with or without it, call after call
    assert colour_for_class("Stroma", panda) == colour_for_class("Stroma") in PALETTE


def test_detections_carry_one_classification_and_the_offset(tmp_path: Path) -> None:
    coords = np.array([[100, 200], [356, 200]])
    ic = Classification("IC", (1, 2, 3))
    data = detections_collection(coords, 256, {"a": np.array([0.5, 1.0])}, classification=ic,
                                 offset=(100, 0))  # fmt: skip
    props = [f["properties"] for f in data["features"]]
    assert [p["classification"] for p in props] == [{"name": "IC", "color": [1, 2, 3]}] * 2
    assert [p["objectType"] for p in props] == ["detection"] * 2
    assert data["features"][1]["geometry"]["coordinates"][0][:2] == [[256, 200], [512, 200]]
    written = write_detections(tmp_path / "d.geojson", coords, 256, {"a": np.ones(2)})
    assert [f.object_type for f in read_features(written)] == ["detection"] * 2
    with pytest.raises(HMILError, match=r"non-empty \(N, 2\)"):
        write_detections(tmp_path / "e.geojson", np.zeros((0, 2)), 256, {})
    assert not (tmp_path / "e.geojson").exists()


def test_tissue_round_trips_with_its_class_and_frame(tmp_path: Path) -> None:
    hole = SQUARE[::-1] * 0.2 + 4
    path = write_tissue_geojson(tmp_path / "t.geojson", [[SQUARE + 50, hole + 50]], (50, 50))
    raw = json.loads(path.read_text())["features"][0]
    assert raw["properties"] == {
        "objectType": "annotation",
        "classification": TISSUE.to_json(),
        "tissue_id": 0,
    }
    assert raw["geometry"]["coordinates"][0][0] == raw["geometry"]["coordinates"][0][-1]
    (feature,) = read_features(path, offset=(50, 50))
    assert feature.classification == "Tissue" and feature.object_type == "annotation"
    assert [ring.shape for ring in feature.polygons[0]] == [(5, 2), (5, 2)]
    assert np.allclose(feature.polygons[0][0][:4], SQUARE + 50)


def test_annotations_from_qupath_multipolygons_and_arrays(tmp_path: Path) -> None:
    multi = {
        "type": "Feature",
        "geometry": {"type": "MultiPolygon", "coordinates": [[SQUARE.tolist()],
                                                             [(SQUARE + 20).tolist()]]},
        "properties": {"objectType": "annotation", "name": "r1",
                       "classification": {"name": "Tumor", "color": [200, 0, 0]}},
    }  # fmt: skip
    point = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}}
    (tmp_path / "a.geojson").write_text(json.dumps([multi, point]))  # "export as array"
    (feature,) = read_features(tmp_path / "a.geojson")
    assert (feature.name, feature.classification, len(feature.polygons)) == ("r1", "Tumor", 2)
    assert len(read_tissue_geojson(tmp_path / "a.geojson", offset=(1, 1))) == 2
    write_features(tmp_path / "b.geojson", [polygon_feature([SQUARE], {"name": "x"})])
    assert read_features(tmp_path / "b.geojson")[0].name == "x"
    (tmp_path / "c.geojson").write_text('{"type": "Topology"}')
    with pytest.raises(HMILError, match="not GeoJSON"):
        read_features(tmp_path / "c.geojson")
    (tmp_path / "d.geojson").write_text(
        json.dumps({"type": "Polygon", "coordinates": [[["a", "b"], [1], [2]]]})
    )
    with pytest.raises(HMILError, match="malformed polygon coordinates"):
        read_features(tmp_path / "d.geojson")
