"""The slide page's regions without Streamlit: a drawing from the browser checked and turned into
a polygon, the view's region / draw / caption data, and the attention-vs-region table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from shapely.geometry import MultiPolygon, Polygon, box

from hmil.errors import RegionError
from hmil.regions import UNCLASSIFIED, Region, region_stats
from viewer.core import regions as core

SQUARE = [[10, 10], [110, 10], [110, 60], [10, 60]]


def _drawing(**over: object) -> dict[str, object]:
    return {"nonce": "n1", "shape": "polygon", "points": SQUARE, **over}


def test_a_polygon_drawing_keeps_its_points() -> None:
    drawing = core.read_drawing(_drawing(), set())
    assert drawing.nonce == "n1" and drawing.shape == "polygon"
    assert drawing.geometry.area == pytest.approx(100 * 50)
    assert drawing.geometry.bounds == (10, 10, 110, 60)


def test_a_rectangle_is_the_box_around_its_points() -> None:
    drawing = core.read_drawing(
        _drawing(shape="rectangle", points=[[110, 60], [10.5, 10], [50, 30]]), set()
    )
    assert drawing.geometry.equals(box(10.5, 10, 110, 60))
    assert drawing.geometry.area == pytest.approx(99.5 * 50)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("not a dict", "not a drawing"),
        ([1, 2], "not a drawing"),
        (_drawing(nonce=3), "no valid nonce"),
        (_drawing(nonce=""), "no valid nonce"),
        (_drawing(nonce="x" * 101), "no valid nonce"),
        (_drawing(nonce="seen"), "already received"),
        (_drawing(shape="circle"), "unknown shape"),
        (_drawing(points="1,2,3"), "not a list"),
        (_drawing(points=[[0, 0], [1, 1]]), "2 point(s) (at least 3)"),
        (_drawing(points=[[0, 0]] * 10_001), "10001 points (at most 10000)"),
        (_drawing(points=[[0, 0], [1, 1], [2]]), "not [x, y]"),
        (_drawing(points=[[0, 0], [1, 1], ["2", 3]]), "not a number"),
        (_drawing(points=[[0, 0], [1, 1], [True, 3]]), "not a number"),
        (_drawing(points=[[0, 0], [1, 1], [math.inf, 3]]), "not finite"),
        (_drawing(points=[[0, 0], [1, 1], [2, math.nan]]), "not finite"),
    ],
)
def test_malformed_drawings_are_refused(value: object, problem: str) -> None:
    with pytest.raises(RegionError) as exc:
        core.read_drawing(value, {"seen"})
    assert exc.value.where == core.DRAWN and problem in exc.value.problem


def test_a_drawing_is_checked_as_an_imported_region() -> None:
    drawing = core.read_drawing(_drawing(), set())
    region = core.checked_region(drawing, "region 4", "ADH", (200, 100), ["ADH", "DCIS"])
    assert (region.name, region.classification) == ("region 4", "ADH")
    assert region.geometry.area == pytest.approx(5000)
    bowtie = core.read_drawing(_drawing(points=[[0, 0], [10, 10], [10, 0], [0, 10]]), set())
    refusals = [
        (bowtie, "ADH", (200, 100), "self-intersection at (5, 5)"),
        (drawing, "ADH", (100, 100), "the drawing lies outside the slide (100 x 100 px)"),
        (drawing, "FEA", (200, 100), "unknown class 'FEA'"),
    ]
    for refused, cls, bounds, problem in refusals:
        with pytest.raises(RegionError) as exc:
            core.checked_region(refused, "region 1", cls, bounds, ["ADH", "DCIS"])
        assert str(exc.value).startswith(f"{core.DRAWN}: ") and problem in exc.value.problem
    unclassified = core.checked_region(drawing, "r", UNCLASSIFIED, (200, 100), ["ADH"])
    assert unclassified.classification == UNCLASSIFIED


def test_drawn_regions_are_numbered_after_the_largest() -> None:
    shape = box(0, 0, 1, 1)
    assert core.next_name([]) == "region 1"
    names = ["lesion 1", "region 2", "region 10", "region x"]
    assert core.next_name([Region(n, "", shape) for n in names]) == "region 11"


def test_class_options_and_default() -> None:
    options = core.class_options(["benign", "atypical"], ["normal", "ADH", "atypical"])
    assert options == ["", "normal", "ADH", "atypical", "benign"]
    assert core.default_class("ADH", options) == "ADH"
    assert core.default_class(None, options) == UNCLASSIFIED
    assert core.default_class("gone", options) == UNCLASSIFIED
    assert core.class_text("") == "(unclassified)" and core.class_text("ADH") == "ADH"


def test_regions_part_has_every_ring_closed_and_flat() -> None:
    holed = Polygon([(0, 0), (100, 0), (100, 100), (0, 100)], [[(40, 40), (60, 40), (60, 60)]])
    multi = MultiPolygon([box(200, 0, 210, 10), box(300.04, 0, 310, 10)])
    part = core.regions_part([Region("lesion 1", "ADH", holed), Region("r", "", multi)])
    first, second = part
    assert first["name"] == "lesion 1" and first["classification"] == "ADH"
    assert first["colour"] == list(Region("x", "ADH", holed).colour)
    assert len(first["rings"]) == 2  # exterior and the hole
    exterior, hole = first["rings"]
    assert exterior[:2] == exterior[-2:] and len(exterior) == 10
    assert hole == [40.0, 40.0, 60.0, 40.0, 60.0, 60.0, 40.0, 40.0]
    assert len(second["rings"]) == 2 and 300.0 in second["rings"][1]  # rounded to 0.1 px


def test_draw_and_caption_parts() -> None:
    assert core.draw_part(True, "ADH", (1, 2, 3)) == {
        "enabled": True,
        "classification": "ADH",
        "colour": [1, 2, 3],
    }
    truth = {"fine": "FEA", "coarse": "atypical"}
    assert core.caption_part("s-1", "fine", "ADH", truth, "fold_0/checkpoint.pt") == {
        "slide_id": "s-1",
        "label": "fine · ADH",
        "truth": "fine · FEA",
        "model": "fold_0/checkpoint.pt",
    }
    assert core.caption_part("s-1", "coarse", "benign", None, "m.pt")["truth"] == ""


def test_stats_table_shows_the_label_and_the_truth_by_default() -> None:
    # 4 patches of 10 px on a row; the region holds the centres of the first two
    coords = np.array([[0, 0], [10, 0], [20, 0], [30, 0]])
    attention = {
        "coarse": np.array([[0.25, 0.25, 0.25, 0.25], [0.1, 0.2, 0.3, 0.4]]),
        "fine": np.array([[0.4, 0.4, 0.1, 0.1], [0.0, 0.0, 0.5, 0.5], [0.25] * 4]),
    }
    labels = {"coarse": ["benign", "malignant"], "fine": ["ADH", "DCIS", "FEA"]}
    region = Region("lesion 1", "ADH", box(0, 0, 20, 10))
    frame = region_stats([region], coords, 10, attention, labels)
    shown = core.stats_table(frame, "fine", "ADH", {"fine": "DCIS", "coarse": "malignant"}, False)
    assert list(shown.columns) == list(core.STATS_COLUMNS.values())
    assert shown["label"].tolist() == ["ADH", "DCIS"]
    adh, dcis = shown.to_dict("records")
    assert adh["mean attention (× uniform)"] == pytest.approx(1.6)  # 4 × 0.4
    assert adh["share"] == pytest.approx(0.8) and adh["AUROC"] == pytest.approx(1.0)
    assert dcis["mean attention (× uniform)"] == 0.0 and dcis["AUROC"] == pytest.approx(0.0)
    every = core.stats_table(frame, "fine", "ADH", None, True)
    assert len(every) == 5 and set(every["level"]) == {"coarse", "fine"}
    coarse = core.stats_table(frame, "coarse", "benign", None, False)
    assert coarse["label"].tolist() == ["benign"] and coarse["AUROC"].iloc[0] == 0.5
    empty = core.stats_table(pd.DataFrame(columns=frame.columns), "fine", "ADH", None, False)
    assert empty.empty and list(empty.columns) == list(core.STATS_COLUMNS.values())


def test_download_names_are_safe() -> None:
    assert core.safe_file_stem("synth-000") == "synth-000"
    assert core.safe_file_stem("../a b/c") == "_a_b_c"
    assert core.safe_file_stem("..") == "slide"
