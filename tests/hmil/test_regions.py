"""hmil.regions: QuPath annotations read (good files and every refusal), written back as QuPath
imports them, stored per run and slide, and compared with attention (patches inside a region,
the per-region statistics against hand-computed numbers)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from shapely.geometry import MultiPolygon, Polygon, box

from hmil.errors import AttentionError, RegionError
from hmil.geojson import class_order, colour_for_class, read_features
from hmil.hierarchy import Hierarchy
from hmil.regions import (
    MAX_ANNOTATION_BYTES,
    MAX_REGIONS,
    STATS_COLUMNS,
    UNCLASSIFIED,
    Region,
    add_regions,
    annotations_collection,
    load_regions,
    merge_by_class,
    parse_annotations,
    patches_inside,
    read_annotations,
    region_stats,
    regions_path,
    remove_region,
    save_regions,
    unique_name,
    write_annotations,
    write_stats,
)

SQUARE = [[[100, 100], [400, 100], [400, 400], [100, 400], [100, 100]]]
HOLE = [[200, 200], [300, 200], [300, 300], [200, 300], [200, 200]]
BOW_TIE = [[[0, 0], [20, 20], [20, 0], [0, 20], [0, 0]]]


def feature(geometry: dict[str, Any], **properties: Any) -> dict[str, Any]:
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def polygon(coords: Any, **properties: Any) -> dict[str, Any]:
    return feature({"type": "Polygon", "coordinates": coords}, **properties)


def collection(*features: dict[str, Any]) -> str:
    return json.dumps({"type": "FeatureCollection", "features": list(features)})


def refusal(text: str | bytes, **kwargs: Any) -> str:
    with pytest.raises(RegionError) as info:
        parse_annotations(text, "ann.geojson", **kwargs)
    assert info.value.where == "ann.geojson"
    return info.value.problem


# --------------------------------------------------------------------------- parsing


def test_a_multipolygon_with_a_hole_keeps_the_hole() -> None:
    multi = {"type": "MultiPolygon", "coordinates": [[SQUARE[0], HOLE], SQUARE_FAR]}
    (region,) = parse_annotations(collection(feature(multi)), "ann.geojson")
    assert isinstance(region.geometry, MultiPolygon)
    assert region.geometry.area == 300 * 300 - 100 * 100 + 50 * 50
    assert not region.geometry.contains(box(240, 240, 260, 260))  # the hole
    assert region.name == "region 1" and region.classification == UNCLASSIFIED


SQUARE_FAR = [[[1000, 1000], [1050, 1000], [1050, 1050], [1000, 1050], [1000, 1000]]]


def test_qupath_array_form_and_both_classification_forms() -> None:
    text = json.dumps([
        polygon(SQUARE, classification={"name": "Tumour", "color": [200, 0, 0]}, name="a"),
        polygon(SQUARE, classification="Stroma"),
        polygon(SQUARE),
    ])  # fmt: skip
    regions = parse_annotations(text, "ann.geojson")
    assert [(r.name, r.classification) for r in regions] == [
        ("a", "Tumour"),
        ("Stroma 2", "Stroma"),
        ("region 3", UNCLASSIFIED),
    ]


def test_duplicate_names_are_made_unique_in_file_order() -> None:
    text = collection(
        *(polygon(SQUARE, name=n) for n in ("lesion", "lesion", "region 3", "region 3"))
    )
    names = [r.name for r in parse_annotations(text, "ann.geojson")]
    assert names == ["lesion", "lesion 2", "region 3", "region 4"]
    assert unique_name("region 3", {"region 3", "region 4"}) == "region 5"
    assert unique_name("new", {"old"}) == "new"


def test_names_lose_control_characters() -> None:
    (region,) = parse_annotations(collection(polygon(SQUARE, name="a\x1b[31m\nb")), "x")
    assert region.name == "a [31m b"


def test_json_nested_too_deeply_is_one_error() -> None:
    assert refusal("[" * 100_000 + "]" * 100_000).startswith("not JSON")


def test_bytes_are_accepted() -> None:
    assert len(parse_annotations(collection(polygon(SQUARE)).encode(), "ann.geojson")) == 1


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "not JSON"),
        (json.dumps({"type": "Feature", "geometry": None}), "not a GeoJSON FeatureCollection"),
        (json.dumps({"type": "FeatureCollection"}), "the FeatureCollection has no 'features'"),
        (collection(), "no regions"),
        (json.dumps([1]), "feature 1: not a GeoJSON Feature with a geometry"),
    ],
)
def test_files_that_are_not_annotations_are_refused(text: str, problem: str) -> None:
    assert refusal(text).startswith(problem)


def test_a_line_is_not_a_region() -> None:
    line = feature({"type": "LineString", "coordinates": [[0, 0], [5, 5]]})
    problem = refusal(collection(polygon(SQUARE), polygon(SQUARE), line))
    assert problem == "feature 3: LineString is not a region (only Polygon and MultiPolygon are)"


def test_a_bow_tie_is_refused_where_it_crosses_itself() -> None:
    problem = refusal(collection(polygon(SQUARE), polygon(BOW_TIE)))
    assert problem == "feature 2: self-intersection at (10, 10)"


@pytest.mark.parametrize(
    ("coords", "problem"),
    [
        ([[[0, 0], [1, 1]]], "feature 1: malformed Polygon coordinates"),
        ([[[0, 0], ["a", 1], [1, 1], [0, 0]]], "feature 1: malformed Polygon coordinates"),
        ([], "feature 1: an empty Polygon"),
        ([[[0, 0], [1, 0], [2, 0], [0, 0]]], "feature 1: "),  # no area: shapely's reason
    ],
)
def test_malformed_polygons_are_refused(coords: Any, problem: str) -> None:
    assert refusal(collection(polygon(coords))).startswith(problem)


def test_a_polygon_outside_the_slide_is_refused() -> None:
    inside = parse_annotations(collection(polygon(SQUARE)), "x", bounds=(400, 400))
    assert len(inside) == 1  # touching the edge is inside
    problem = refusal(collection(polygon(SQUARE)), bounds=(4000, 399))
    assert problem == "feature 1 lies outside the slide (4000 x 399 px)"
    negative = [[[-1, 0], [10, 0], [10, 10], [-1, 0]]]
    assert refusal(collection(polygon(negative)), bounds=(4000, 3000)).startswith("feature 1 lies")


def test_an_unknown_class_is_refused_and_unclassified_is_always_allowed() -> None:
    classes = ["benign", "malignant"]
    ok = parse_annotations(collection(polygon(SQUARE), polygon(SQUARE, classification="benign")),
                           "x", classes=classes)  # fmt: skip
    assert [r.classification for r in ok] == [UNCLASSIFIED, "benign"]
    problem = refusal(collection(polygon(SQUARE, classification="Tumour")), classes=classes)
    assert problem == "feature 1: unknown class 'Tumour' (known: benign, malignant)"


def test_a_non_text_class_name_is_refused() -> None:
    problem = refusal(collection(polygon(SQUARE, classification={"name": 3})))
    assert problem == "feature 1: the classification name is not text"


def test_too_many_features_are_refused() -> None:
    text = json.dumps([polygon(SQUARE)] * (MAX_REGIONS + 1))
    assert refusal(text) == f"{MAX_REGIONS + 1} features, more than the {MAX_REGIONS} allowed"


def test_a_file_over_the_cap_is_refused_before_it_is_read(tmp_path: Path) -> None:
    big = tmp_path / "big.geojson"
    big.write_text(collection(polygon(SQUARE)))
    os.truncate(big, 200 * 10**6)  # a 200 MB file, sparse: nothing is written
    with pytest.raises(RegionError) as info:
        read_annotations(big)
    assert info.value.where == str(big)
    assert info.value.problem == "190.7 MiB is over the 32.0 MiB limit"
    assert refusal(b" " * (MAX_ANNOTATION_BYTES + 1)).endswith("is over the 32.0 MiB limit")


def test_a_missing_file_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(RegionError, match="cannot be read"):
        read_annotations(tmp_path / "none.geojson")


def test_an_empty_file_reads_as_no_regions_when_allowed(tmp_path: Path) -> None:
    path = tmp_path / "empty.geojson"
    path.write_text(collection())
    assert read_annotations(path, allow_empty=True) == []
    with pytest.raises(RegionError, match="no regions"):
        read_annotations(path)


# --------------------------------------------------------------------------- writing


def test_export_is_a_qupath_annotation_collection(tmp_path: Path) -> None:
    shell = Polygon(SQUARE[0], [HOLE])
    regions = [
        Region("lesion 1", "Tumour", shell),
        Region("two parts", "", MultiPolygon([shell, Polygon(SQUARE_FAR[0])])),
    ]
    data = annotations_collection(regions)
    assert data["type"] == "FeatureCollection"
    first, second = data["features"]
    assert first["properties"] == {
        "objectType": "annotation",
        "name": "lesion 1",
        "classification": {"name": "Tumour", "color": list(colour_for_class("Tumour"))},
    }
    assert first["geometry"]["type"] == "Polygon"
    assert first["geometry"]["coordinates"][1] == [[float(x), float(y)] for x, y in HOLE]
    assert second["geometry"]["type"] == "MultiPolygon"
    assert "classification" not in second["properties"]  # QuPath's unclassified
    # the project's own GeoJSON reader reads it back: holes and parts kept
    path = write_annotations(tmp_path / "out.geojson", regions)
    back = read_features(path)
    assert [f.classification for f in back] == ["Tumour", ""]
    assert [len(f.polygons) for f in back] == [1, 2] and len(back[0].polygons[0]) == 2
    again = read_annotations(path)
    assert [(r.name, r.classification) for r in again] == [
        ("lesion 1", "Tumour"),
        ("two parts", ""),
    ]
    assert again[0].geometry.equals(shell) and again[1].geometry.area == regions[1].geometry.area


def test_outline_and_colour() -> None:
    region = Region("r", "Tumour", MultiPolygon([box(0, 0, 2, 2), box(5, 5, 6, 6)]))
    outline = region.outline()
    assert len(outline) == 2 and len(outline[0]) == 5
    assert outline[0][0] == outline[0][-1] and {tuple(p) for p in outline[0]} == {
        (0.0, 0.0), (2.0, 0.0), (2.0, 2.0), (0.0, 2.0),
    }  # fmt: skip
    assert region.colour == colour_for_class("Tumour")


def test_merge_by_class_unions_each_class() -> None:
    regions = [Region("a", "T", box(0, 0, 1, 1)), Region("b", "", box(5, 5, 6, 6)),
               Region("c", "T", box(2, 2, 3, 3))]  # fmt: skip
    merged = merge_by_class(regions)
    assert [(r.name, r.classification, r.geometry.area) for r in merged] == [
        ("T", "T", 2.0),
        ("region", "", 1.0),
    ]


# --------------------------------------------------------------------------- storing


def test_regions_are_stored_per_run_and_slide(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(RegionError, match="not a run directory"):
        save_regions(run, "s1", [Region("r", "", box(0, 0, 1, 1))])
    run.mkdir()
    assert load_regions(run, "s1") == []
    path = save_regions(run, "s1", [Region("region 1", "", box(0, 0, 10, 10))])
    assert path == run / "regions" / "s1.geojson" == regions_path(run, "s1")
    merged = add_regions(run, "s1", [Region("region 1", "T", box(20, 20, 30, 30))])
    assert [r.name for r in merged] == ["region 1", "region 2"]
    assert [r.name for r in load_regions(run, "s1")] == ["region 1", "region 2"]
    assert [r.name for r in remove_region(run, "s1", "region 1")] == ["region 2"]
    with pytest.raises(RegionError, match="no region named 'region 1'"):
        remove_region(run, "s1", "region 1")
    assert remove_region(run, "s1", "region 2") == []
    assert not path.exists() and load_regions(run, "s1") == []
    assert load_regions(run, "s2") == []


@pytest.mark.parametrize("slide_id", ["../x", "a/b", "", ".hidden", "a b", "x\n"])
def test_a_slide_id_that_is_not_a_file_name_is_refused(tmp_path: Path, slide_id: str) -> None:
    with pytest.raises(RegionError, match="not a valid slide id"):
        regions_path(tmp_path, slide_id)
    with pytest.raises(RegionError):
        save_regions(tmp_path, slide_id, [Region("r", "", box(0, 0, 1, 1))])
    assert not (tmp_path / "regions").exists()


# --------------------------------------------------------------------------- attention

#: four 256-px patches in a row, top-left corners (centres at x = 128, 384, 640, 896; y = 128)
ROW = np.array([[0, 0], [256, 0], [512, 0], [768, 0]])


def test_patches_inside_by_their_centre() -> None:
    region = Region("r", "", box(100, 100, 400, 200))  # holds the centres (128, 128), (384, 128)
    assert patches_inside(region, ROW, 256).tolist() == [True, True, False, False]
    edge = Region("e", "", box(640, 0, 700, 128))  # the centre (640, 128) lies on its corner
    assert patches_inside(edge, ROW, 256).tolist() == [False, False, True, False]
    hole = [(300, 100), (500, 100), (500, 200), (300, 200)]
    with_hole = Region("h", "", Polygon([(0, 0), (1024, 0), (1024, 256), (0, 256)], [hole]))
    assert patches_inside(with_hole, ROW, 256).tolist() == [True, False, True, True]
    with pytest.raises(AttentionError):
        patches_inside(region, np.zeros((3, 3)), 256)


def test_region_stats_hand_computed() -> None:
    region = Region("lesion 1", "T", box(0, 0, 200, 200))  # holds patch 0 only
    attention = {"coarse": np.array([[0.25, 0.25, 0.25, 0.25]]),
                 "fine": np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.3, 0.3, 0.3]])}  # fmt: skip
    labels = {"coarse": ["C"], "fine": ["T", "U"]}
    frame = region_stats([region], ROW, 256, attention, labels)
    assert list(frame.columns) == list(STATS_COLUMNS)
    assert frame[["level", "label"]].values.tolist() == [
        ["coarse", "C"],
        ["fine", "T"],
        ["fine", "U"],
    ]
    assert (frame["n_patches"] == 4).all() and (frame["n_inside"] == 1).all()
    assert (frame["region"] == "lesion 1").all() and (frame["classification"] == "T").all()
    coarse, fine_t, fine_u = frame.to_dict("records")
    assert fine_t["mean_attention"] == pytest.approx(2.8)
    assert fine_t["attention_share"] == pytest.approx(0.7)
    assert fine_t["auroc"] == 1.0
    assert fine_u["mean_attention"] == pytest.approx(0.4) and fine_u["auroc"] == 0.0
    assert coarse["mean_attention"] == pytest.approx(1.0) and coarse["auroc"] == 0.5


def test_region_stats_is_nan_where_a_side_is_empty() -> None:
    regions = [
        Region("none", "", box(5000, 5000, 5100, 5100)),
        Region("all", "", box(0, 0, 1024, 256)),
    ]
    frame = region_stats(regions, ROW, 256, {"fine": np.full((1, 4), 0.25)}, {"fine": ["T"]})
    empty, full = frame.to_dict("records")
    assert empty["n_inside"] == 0 and math.isnan(empty["mean_attention"])
    assert empty["attention_share"] == 0.0 and math.isnan(empty["auroc"])
    assert full["n_inside"] == 4 and full["attention_share"] == 1.0 and math.isnan(full["auroc"])


def test_region_stats_refuses_attention_that_does_not_fit() -> None:
    region = Region("r", "", box(0, 0, 10, 10))
    with pytest.raises(AttentionError, match="for 2 labels and 4 patches"):
        region_stats([region], ROW, 256, {"fine": np.full((1, 4), 0.25)}, {"fine": ["T", "U"]})
    with pytest.raises(AttentionError, match="non-finite"):
        region_stats([region], ROW, 256, {"fine": np.full((1, 4), np.nan)}, {"fine": ["T"]})


def test_write_stats_is_a_csv(tmp_path: Path) -> None:
    frame = region_stats([Region("r", "", box(0, 0, 200, 200))], ROW, 256,
                         {"fine": np.array([[0.7, 0.1, 0.1, 0.1]])}, {"fine": ["T"]})  # fmt: skip
    path = write_stats(tmp_path / "stats.csv", frame)
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(STATS_COLUMNS)
    assert lines[1] == "r,,fine,T,4,1,2.8,0.7,1"
    assert [p.name for p in tmp_path.iterdir()] == ["stats.csv"]  # no temporary file left


def test_colours_follow_the_runs_class_order_in_the_viewer_and_every_file(tmp_path: Path) -> None:
    bracs = Hierarchy.resolve("bracs")
    classes = class_order(bracs)
    text = collection(polygon(SQUARE, classification="UDH"), polygon(SQUARE, classification="ADH"))
    udh, adh = parse_annotations(text, "ann.geojson", classes=classes)
    # the colours `hmil heatmap --geojson` and the demo's lesion files give these classes
    assert udh.colour == colour_for_class("UDH", bracs) and adh.colour == colour_for_class(
        "ADH", bracs
    )
    assert udh.colour != adh.colour  # two classes of one hierarchy never share a colour
    add_regions(tmp_path, "s1", [udh, adh], classes)
    saved = json.loads(regions_path(tmp_path, "s1").read_text(encoding="utf-8"))
    colours = [f["properties"]["classification"]["color"] for f in saved["features"]]
    assert colours == [list(udh.colour), list(adh.colour)]
    assert [r.colour for r in load_regions(tmp_path, "s1", classes)] == [udh.colour, adh.colour]
