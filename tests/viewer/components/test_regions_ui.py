"""The slide page's "Regions" expander through AppTest (import, list, delete, download, the
attention table; bad uploads refused in one line with the saved file unchanged), a drawing sent
by the view saved or refused, and the slide page handing saved regions to the view."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import FileUploader
from viewer_fixtures import APP_TIMEOUT

from hmil import regions as lib
from hmil.geojson import PALETTE, colour_for_class
from hmil.hierarchy import Hierarchy
from viewer.components import regions_ui
from viewer.core.inference import SlideResult

SLIDE = "s-1"
#: the page's slide: 10 x 5 patches of 100 px
BOUNDS = (1000, 500)


def _page(run: str) -> None:
    from pathlib import Path

    import numpy as np
    import streamlit as st

    from viewer.components import regions_ui
    from viewer.core.inference import SlideResult

    xs, ys = np.meshgrid(np.arange(10) * 100, np.arange(5) * 100)
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1)
    n = len(coords)
    left = (coords[:, 0] < 500).astype(np.float64)
    fine = np.stack([np.full(n, 1 / n), left / left.sum(), (1 - left) / (1 - left).sum()])
    result = SlideResult(
        slide_id="s-1", coarse=("benign", "atypical"), fine=("normal", "ADH", "FEA"),
        parent=(0, 1, 1), fine_probs=np.array([0.2, 0.7, 0.1]),
        coarse_probs=np.array([0.2, 0.8]), coarse_head_probs=np.array([0.3, 0.7]),
        attention_coarse=np.stack([np.full(n, 1 / n)] * 2).astype(np.float32),
        attention_fine=fine.astype(np.float32), coords=coords, patch_size=100,
    )  # fmt: skip
    target = regions_ui.target_for(Path(run), "s-1", result, (1000, 500), "ADH")
    assert target is not None
    shown = regions_ui.load(target)
    caption = {"slide_id": "s-1", "label": "fine · ADH", "truth": "", "model": "m.pt"}
    st.session_state["_view"] = regions_ui.view_parts(target, shown, caption)
    truth = {"fine": "ADH", "coarse": "atypical"}
    regions_ui.regions_panel(target, shown)
    regions_ui.stats_section(shown, result, "fine", "ADH", truth, run)


def _feature(ring: list[list[int]], cls: str | None = "ADH", name: str = "") -> dict[str, Any]:
    props: dict[str, Any] = {"objectType": "annotation"}
    if cls is not None:
        props["classification"] = {"name": cls, "color": [1, 2, 3]}
    if name:
        props["name"] = name
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": props}  # fmt: skip


def _collection(*features: dict[str, Any]) -> bytes:
    return json.dumps({"type": "FeatureCollection", "features": list(features)}).encode()


#: the left half of the slide
LEFT = [[0, 0], [500, 0], [500, 500], [0, 500], [0, 0]]


@pytest.fixture()
def run(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "run"
    folder.mkdir()
    yield folder


def _start(run: Path) -> AppTest:
    at = AppTest.from_function(_page, args=(str(run),), default_timeout=APP_TIMEOUT)
    return _run(at)


def _run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _upload(at: AppTest, name: str, content: bytes) -> AppTest:
    (box,) = at.get("file_uploader")
    assert isinstance(box, FileUploader)
    box.set_value((name, content, "application/geo+json"))
    return _run(at)


def test_an_import_is_saved_listed_and_compared_with_attention(run: Path) -> None:
    at = _start(run)
    (panel,) = at.expander
    assert panel.label == "Regions" and not at.dataframe
    view = at.session_state["_view"]
    assert view["regions"] == []
    # the page's hierarchy in palette order: benign, atypical, normal, ADH, FEA
    tree = Hierarchy("t", ("benign", "atypical"), ("normal", "ADH", "FEA"), (0, 1, 1))
    adh = colour_for_class("ADH", tree)
    assert adh == PALETTE[3]
    assert view["draw"] == {"enabled": True, "classification": "ADH", "colour": list(adh)}
    assert at.selectbox(key=regions_ui.CLASS_KEY).value == "ADH"  # the slide's true label
    at = _upload(at, "lesion.geojson", _collection(_feature(LEFT, name="lesion 1")))
    assert [s.value for s in at.success] == [r"imported 1 region\(s\) from lesion\.geojson"]
    (saved,) = lib.load_regions(run, SLIDE)
    assert (saved.name, saved.classification, saved.geometry.area) == ("lesion 1", "ADH", 250000)
    assert at.expander[0].label == "Regions · 1"
    assert r"lesion 1 · ADH" in [c.value for c in at.caption]
    (view_region,) = at.session_state["_view"]["regions"]
    assert view_region["rings"] == [[0.0, 0.0, 500.0, 0.0, 500.0, 500.0, 0.0, 500.0, 0.0, 0.0]]
    # the table: ADH's attention lies on the left half only; the label shown is the truth
    (table,) = [d.value for d in at.dataframe]
    assert table["label"].tolist() == ["ADH"]
    row = table.iloc[0]
    assert row["mean attention (× uniform)"] == pytest.approx(2.0)  # 50 × 1/25
    assert row["share"] == pytest.approx(1.0) and row["AUROC"] == pytest.approx(1.0)
    at.toggle(key=regions_ui.ALL_LABELS_KEY).set_value(True)
    _run(at)
    (table,) = [d.value for d in at.dataframe]
    assert len(table) == 5  # 2 coarse + 3 fine labels
    fea = table[table["label"] == "FEA"].iloc[0]
    assert fea["share"] == 0.0 and fea["AUROC"] == 0.0
    # the download is the QuPath collection of the saved regions
    (download,) = at.get("download_button")
    assert download.proto.label == "Download GeoJSON (QuPath)"


def test_delete_removes_the_region(run: Path) -> None:
    lib.save_regions(run, SLIDE, lib.parse_annotations(
        _collection(_feature(LEFT, name="a"), _feature(LEFT, None, name="b")), "x",
        bounds=None, classes=None))  # fmt: skip
    at = _start(run)
    assert at.expander[0].label == "Regions · 2"
    at.button(key="rg_delete_0").click()
    _run(at)
    assert [r.name for r in lib.load_regions(run, SLIDE)] == ["b"]
    assert [s.value for s in at.success] == ["deleted a"]
    assert "b · \\(unclassified\\)" in [c.value for c in at.caption]


BOWTIE = [[0, 0], [100, 100], [100, 0], [0, 100], [0, 0]]
OUTSIDE = [[900, 0], [1100, 0], [1100, 100], [900, 100], [900, 0]]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"type": "Feature"}', r"not a GeoJSON FeatureCollection"),
        (b"<html>", r"not JSON"),
        (_collection(_feature(BOWTIE)), r"feature 1\: self\-intersection at \(50, 50\)"),
        (_collection(_feature(OUTSIDE)), r"feature 1 lies outside the slide \(1000 x 500 px\)"),
        (_collection(_feature(LEFT, "FEA2")), r"feature 1\: unknown class 'FEA2'"),
        (_collection(), r"no regions"),
    ],
)
def test_a_bad_upload_is_refused_in_one_line(run: Path, content: bytes, problem: str) -> None:
    path = lib.save_regions(run, SLIDE, [lib.Region("kept", "ADH", _left())])
    before = path.read_bytes()
    at = _upload(_start(run), "bad.geojson", content)
    (error,) = at.error
    assert error.value.startswith(r"bad\.geojson\: ") and problem in error.value
    assert path.read_bytes() == before


def test_an_upload_over_the_cap_is_refused_before_it_is_read(
    run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = lib.save_regions(run, SLIDE, [lib.Region("kept", "ADH", _left())])
    before = path.read_bytes()
    cap = len(before) + 1  # the saved file still loads; the upload is one byte over
    monkeypatch.setattr(lib, "MAX_ANNOTATION_BYTES", cap)
    calls: list[object] = []

    def parse(*args: object, **kwargs: object) -> list[lib.Region]:
        calls.append(args)
        return []

    monkeypatch.setattr(lib, "parse_annotations", parse)
    at = _upload(_start(run), "big.geojson", b" " * (cap + 1))
    (error,) = at.error
    assert error.value.startswith(r"big\.geojson\: ") and f"at most {cap} bytes" in error.value
    assert calls == [] and path.read_bytes() == before


def _left() -> Any:
    from shapely.geometry import box

    return box(0, 0, 500, 500)


def _result() -> SlideResult:
    n = 2
    return SlideResult(
        slide_id=SLIDE, coarse=("benign", "atypical"), fine=("normal", "ADH", "FEA"),
        parent=(0, 1, 1), fine_probs=np.ones(3) / 3, coarse_probs=np.ones(2) / 2,
        coarse_head_probs=np.ones(2) / 2, attention_coarse=np.ones((2, n)) / n,
        attention_fine=np.ones((3, n)) / n, coords=np.zeros((n, 2), dtype=np.int64),
        patch_size=100,
    )  # fmt: skip


def test_a_drawing_from_the_view_is_saved_once(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state: dict[str, Any] = {}
    monkeypatch.setattr(regions_ui, "session_state", lambda: state)
    target = regions_ui.target_for(run, SLIDE, _result(), BOUNDS, "ADH")
    points = [[10, 10], [200, 10], [200, 300], [10, 300]]
    state["deepzoom"] = {"region": {"nonce": "a1", "shape": "rectangle", "points": points}}
    regions_ui.on_region(target, "deepzoom")
    assert state[regions_ui.MESSAGE_KEY] == ("ok", "saved region 1 (ADH)")
    (saved,) = lib.load_regions(run, SLIDE)
    assert saved.name == "region 1" and saved.geometry.bounds == (10, 10, 200, 300)
    before = lib.regions_path(run, SLIDE).read_bytes()
    refusals = [
        ({"nonce": "a1", "shape": "rectangle", "points": points}, "already received"),
        ({"nonce": "a2", "shape": "polygon", "points": [[0, 0], [9e9, 0], [0, 9]]}, "outside"),
        (
            {"nonce": "a3", "shape": "polygon", "points": [[0, 0], [1, float("nan")], [2, 2]]},
            "not finite",
        ),
        ("rubbish", "not a drawing"),
    ]
    for value, problem in refusals:
        state["deepzoom"] = {"region": value}
        regions_ui.on_region(target, "deepzoom")
        kind, line = state[regions_ui.MESSAGE_KEY]
        assert kind == "error" and line.startswith("drawn region: ") and problem in line
    assert lib.regions_path(run, SLIDE).read_bytes() == before
    state[regions_ui.CLASS_KEY] = ""  # the next drawing unclassified
    state["deepzoom"] = {"region": {"nonce": "a4", "shape": "polygon", "points": points}}
    regions_ui.on_region(target, "deepzoom")
    assert [(r.name, r.classification) for r in lib.load_regions(run, SLIDE)] == [
        ("region 1", "ADH"),
        ("region 2", ""),
    ]


def test_without_a_run_nothing_is_drawn_or_saved() -> None:
    assert regions_ui.target_for(None, SLIDE, _result(), BOUNDS, "ADH") is None
    caption = {"slide_id": SLIDE, "label": "", "truth": "", "model": ""}
    view = regions_ui.view_parts(None, [], caption)
    assert view["regions"] == [] and view["draw"]["enabled"] is False
    assert view["caption"] is caption


def _slide_page() -> None:
    import sys

    from viewer.components import shell_ui

    shell_ui.sidebar(shell_ui.settings())
    sys.modules.pop("viewer.views.slide", None)  # the page runs on import
    import viewer.views.slide  # noqa: F401


def test_the_slide_page_draws_saved_regions_and_their_table(app_env: Path) -> None:
    run = app_env / "run"
    first = "synth-0000"
    path = lib.save_regions(run, first, [lib.Region("lesion 1", "ADH", _left())])
    try:
        at = AppTest.from_function(_slide_page, default_timeout=APP_TIMEOUT)
        _run(at)
        assert at.selectbox(key="slide_pick").value == first
        (view,) = at.get("bidi_component")
        data = json.loads(view.proto.json or view.proto.mixed.json)
        (region,) = data["regions"]
        assert region["name"] == "lesion 1" and region["classification"] == "ADH"
        assert region["rings"][0][:4] == [500.0, 0.0, 500.0, 500.0]
        assert data["draw"]["enabled"] is True
        assert data["caption"]["slide_id"] == first
        assert data["caption"]["label"].startswith("fine · ")
        assert data["caption"]["model"].endswith("checkpoint.pt")
        panel = next(e for e in at.expander if e.label.startswith("Regions"))
        assert panel.label == "Regions · 1"
        (table,) = [d.value for d in at.dataframe if "AUROC" in d.value.columns]
        assert set(table["region"]) == {"lesion 1"} and set(table["level"]) == {"fine"}
    finally:
        path.unlink()


def test_an_actions_line_outlives_the_views_rerun_and_leaves_with_its_slide(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state: dict = {}
    monkeypatch.setattr(regions_ui, "session_state", lambda: state)
    regions_ui._say("ok", "saved region 1 (ADH)")
    assert regions_ui.current_message(state, "s-1") == ("ok", "saved region 1 (ADH)")
    assert regions_ui.current_message(state, "s-1") == ("ok", "saved region 1 (ADH)")  # rerun
    assert regions_ui.current_message(state, "s-2") is None  # another slide
    assert regions_ui.current_message(state, "s-1") is None  # gone for good
