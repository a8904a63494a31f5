"""Pure logic under the slide page: choices, lookups, the component's data, the attention
layer's grid and bytes, the view's callbacks, outlines and crops."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

from hmil.heatmap import HeatmapStyle, colormap_lut
from hmil.overlay import colormap_code_lut, level_codes
from hmil.patch_grid import patch_grid, smooth_on_grid
from viewer.core import rendering, slide_lookup, slide_state
from viewer.core.choices import keep_choice
from viewer.core.inference import SlideResult
from viewer.core.viewport import Canvas, slide_facts
from viewer.tiles import deepzoom_data


def _result(coords: np.ndarray, patch: int = 256, seed: int = 0) -> SlideResult:
    n = coords.shape[0]
    rng = np.random.default_rng(seed)
    att = rng.random((3, n)).astype(np.float32)
    att /= att.sum(axis=1, keepdims=True)
    return SlideResult(
        slide_id="s",
        coarse=("a", "b"),
        fine=("a1", "a2", "b1"),
        parent=(0, 0, 1),
        fine_probs=np.array([0.5, 0.2, 0.3]),
        coarse_probs=np.array([0.7, 0.3]),
        coarse_head_probs=np.array([0.4, 0.6]),
        attention_coarse=att[:2],
        attention_fine=att,
        coords=coords,
        patch_size=patch,
    )


def _bytes(b64: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype=np.uint8)


def test_keep_choice_keeps_valid_values_and_resets_the_rest() -> None:
    state: dict = {"a": "x", "b": "gone"}
    assert keep_choice(state, "a", ["x", "y"]) == "x"
    assert keep_choice(state, "b", ["x", "y"], default="y") == "y" and state["b"] == "y"
    assert keep_choice(state, "c", ["x", "y"], default="nope") == "x"
    assert keep_choice(state, "d", [None, 3], None) is None and "d" in state
    assert keep_choice(state, "e", []) is None and "e" not in state


def test_slide_lookups(viewer_root: Path) -> None:
    folders = [viewer_root / "cohort"]
    found, note = slide_lookup.locate_slide("synth-0000", folders, [viewer_root])
    assert found is not None and found.name == "synth-0000.tiff" and note == ""
    assert slide_lookup.locate_slide("synth-0000", folders, [viewer_root / "run"])[1].endswith(
        "is outside the data roots"
    )
    assert slide_lookup.locate_slide("synth-0003", folders, [viewer_root])[0] is None
    assert slide_lookup.locate_mask("synth-0000", folders, [viewer_root]).name.endswith(
        "_lesion.png"
    )
    assert slide_lookup.locate_mask("synth-0000", folders, [viewer_root / "run"]) is None
    coords = np.array([[0, 0], [900, 100]])
    assert slide_lookup.coords_problem(coords, (1000, 1000)) == ""
    assert "beyond the 800×1000 slide" in slide_lookup.coords_problem(coords, (800, 1000))
    assert slide_lookup.default_fold(2, [0, 1, 2]) == 2 and slide_lookup.default_fold(5, [1]) == 1
    labels = {"s1": "s1 true DCIS", "s2": "s2 true IC"}
    assert slide_lookup.matching_slides(labels, "dc") == ["s1"]
    assert slide_lookup.matching_slides(labels, " IC ") == ["s2"]
    assert slide_lookup.matching_slides(labels, "true") == ["s1", "s2"]
    assert slide_lookup.matching_slides(labels, "zzz") == ["s1", "s2"]
    assert slide_lookup.inspect_options([4, 2], 7, 10) == [None, 4, 2, 7]
    assert slide_lookup.inspect_options([4, 2], 2, 10) == [None, 4, 2]
    assert slide_lookup.inspect_options([4], 99, 10) == [None, 4]
    result = _result(np.array([[0, 0], [256, 0]]))
    assert slide_lookup.default_label(result, "fine") == result.fine_pred
    assert slide_lookup.default_label(result, "coarse") == result.coarse_pred


def test_patch_grid_of_tiled_overlapping_and_irregular_layouts() -> None:
    tiled = patch_grid(np.array([[256, 512], [512, 512], [256, 768]]), 256)
    assert (tiled.origin, tiled.step, tiled.span, tiled.exact) == ((256.0, 512.0), 256.0, 1, True)
    assert (tiled.cols, tiled.rows) == (2, 2)
    assert tiled.cells.tolist() == [[0, 0], [1, 0], [0, 1]]
    overlap = patch_grid(np.array([[0, 0], [128, 0], [256, 128]]), 256)  # 50 % overlap
    assert (overlap.step, overlap.span, overlap.exact) == (128.0, 2, True)
    assert (overlap.cols, overlap.rows) == (4, 3)
    odd = patch_grid(np.array([[0, 0], [7, 0], [263, 3]]), 256)  # no sensible grid: snapped
    assert (odd.step, odd.span, odd.exact) == (256.0, 1, False)


def test_smoothing_on_the_grid_keeps_a_constant_map_and_spreads_a_peak() -> None:
    coords = np.array([[x * 256, y * 256] for y in range(5) for x in range(5)])
    grid = patch_grid(coords, 256)
    flat = np.full(25, 0.4, dtype=np.float32)
    assert np.allclose(smooth_on_grid(flat, grid, 1.0), 0.4, atol=1e-6)
    peak = np.zeros(25, dtype=np.float32)
    peak[12] = 1.0
    out = smooth_on_grid(peak, grid, 1.0)
    assert out[12] < 1.0 and out[11] > 0 and out.argmax() == 12
    assert np.array_equal(smooth_on_grid(peak, grid, 0.0), peak)


def test_layer_bytes_are_the_codes_of_every_label_on_the_shared_scale() -> None:
    coords = np.array([[x * 256, y * 256] for y in range(3) for x in range(4)])
    result = _result(coords)
    style = HeatmapStyle(normalize="percentile")
    layer = deepzoom_data.layer_part(result, style, "ckpt|bag")
    assert layer["names"] == {"coarse": ["a", "b"], "fine": ["a1", "a2", "b1"]}
    assert layer["predicted"] == {"coarse": result.coarse_pred, "fine": result.fine_pred}
    assert layer["n"] == 12
    grid = layer["grid"]
    cells = np.frombuffer(base64.b64decode(grid["cells"]), dtype="<u4").reshape(-1, 2)
    assert grid["n"] == 12 and cells.tolist() == (coords // 256).tolist()
    for level in ("coarse", "fine"):
        # the browser's bytes are exactly the PNG's codes (one engine)
        coded = level_codes(result.attention(level), coords, 256, style)
        info = layer["levels"][level]
        for k, b64 in enumerate(info["codes"]):
            assert _bytes(b64).tolist() == coded.codes[k].tolist()
            scale = info["scales"][info["scale_of"][k]]
            assert scale["texts"] == coded.scales[k].code_texts()
            assert scale["legend"] == coded.scales[k].legend().as_dict()
    relative = deepzoom_data.layer_part(result, HeatmapStyle(), "ckpt|bag")
    assert relative["values_key"] != layer["values_key"]
    fine = relative["levels"]["fine"]
    assert len(fine["scales"]) == 1 and fine["scale_of"] == [0, 0, 0]  # shared by the labels
    codes = _bytes(fine["codes"][0])
    n_a = result.attention("fine")[0] * 12
    assert ((codes == 0) == (n_a < 1)).all()  # under an average patch: not coloured


def test_component_data_contract() -> None:
    result = _result(np.array([[0, 0], [256, 0]]))
    canvas = deepzoom_data.canvas_part(Canvas(0.0, 0.0, 512.0, 256.0))
    style = HeatmapStyle(cmap="magma", alpha=0.3, normalize="percentile")
    show = deepzoom_data.show_part("fine", "a2", "single", style, [[0.0, 0.0, 10.0, 10.0]])
    assert _bytes(show["lut"]).reshape(256, 3).tolist() == colormap_code_lut("magma").tolist()
    layer = deepzoom_data.layer_part(result, style, "x")
    data = deepzoom_data.component_data(
        None, canvas, layer, show, "tiles", (0.0, 0.0, 256.0), view_id="run:s1",
        truth={"fine": "a1", "coarse": "a"}, nav={"has_prev": False, "has_next": True},
        viewport={"x": 1.0, "y": 2.0, "zoom": 0.5, "nonce": 1}, note="",
    )  # fmt: skip
    assert data["osd_url"].endswith("openseadragon.min.js") and data["slide"] is None
    assert data["layer"]["strategy"] == "canvas"  # no slide: no server tiles
    assert data["show"]["alpha"] == 0.3 and data["patch_box"] == [0.0, 0.0, 256.0]
    assert data["view_id"] == "run:s1" and data["truth"]["fine"] == "a1"
    assert data["nav"]["has_next"] and data["viewport"]["zoom"] == 0.5
    assert data["min_height"] >= 400
    with pytest.raises(ValueError, match="unknown overlay strategy"):
        deepzoom_data.component_data(None, canvas, layer, show, "webgl")
    urls = deepzoom_data.tile_layer_urls(result, "k" * 20, style)
    assert urls["fine"][2] == f"/hmil/ov/{'k' * 20}/fine-2-magma-percentile-0.dzi"
    assert len(urls["coarse"]) == 2


def test_view_callbacks_write_the_page_keys() -> None:
    state: dict = {"deepzoom": {"label": {"level": "coarse", "label": "b"}}}
    slide_state.on_label(state, "deepzoom")
    assert (state["ov_level"], state["ov_label"]) == ("coarse", "b")
    state["deepzoom"] = {"label": {"level": "nonsense", "label": "b"}, "alpha": 0.6500001}
    state["ov_level"] = "fine"
    slide_state.on_label(state, "deepzoom")
    assert state["ov_level"] == "fine"  # ignored
    slide_state.on_alpha(state, "deepzoom")
    assert state["ov_alpha"] == 0.65
    state["deepzoom"] = {"alpha": 7, "patch": 12}
    slide_state.on_alpha(state, "deepzoom")
    slide_state.on_patch(state, "deepzoom")
    assert state["ov_alpha"] == 1.0 and state[slide_state.PATCH_REQUEST] == 12
    slide_state.apply_patch_request(state)
    assert state["patch_pick"] == 12 and slide_state.PATCH_REQUEST not in state
    slide_state.go_to_patch(state, 512, 256, 256)
    slide_state.go_to_patch(state, 512, 256, 256)
    assert state[slide_state.GOTO_KEY] == {"x": 512.0, "y": 256.0, "size": 256.0, "nonce": 2}


def test_mask_outline_follows_the_lesion_edge_in_level0_pixels() -> None:
    mask = np.zeros((10, 20), dtype=bool)
    mask[2:5, 4:8] = True  # level-0 x 64..128, y 32..80 at scale 16
    (line,) = rendering.mask_outline(mask, 16.0)
    xy = np.asarray(line).reshape(-1, 2)
    assert xy[0].tolist() == xy[-1].tolist()  # closed
    assert xy[:, 0].min() >= 64 - 8 and xy[:, 0].max() <= 128 and xy[:, 1].max() <= 80
    assert xy[:, 0].max() >= 120 and xy[:, 1].min() <= 40
    assert rendering.mask_outline(np.zeros((4, 4), bool), 16.0) == []


def test_canvas_crop_swatch_and_slide_facts() -> None:
    result = _result(np.array([[0, 0], [256, 0], [0, 256]]))
    assert rendering.canvas_for(None, result) == Canvas(0.0, 0.0, 512.0, 512.0)
    values = np.array([0.0, 1.0, 0.5])
    swatch = rendering.patch_crop(None, result, 1, 8, values, "viridis")
    assert swatch.shape == (8, 8, 3) and tuple(swatch[0, 0]) == tuple(colormap_lut("viridis")[255])
    text = slide_facts((2220, 2967), 1, 0.499, 20.0, "openslide")
    assert text == "2220 × 2967 px · 1 level · 0.499 µm/px · 20× · read by openslide"
    assert "MPP unknown" in slide_facts((10, 10), 2, None, None, "tifffile")


def test_overlay_choice_is_read_from_state_before_the_widgets() -> None:
    from viewer.components.deepzoom_ui import resolve_choice

    result = _result(np.array([[0, 0], [256, 0]]))
    state: dict[str, object] = {}
    choice = resolve_choice(state, result, has_mask=True)
    predicted = result.fine[int(np.argmax(result.fine_probs))]
    assert (choice.level, choice.label, choice.all_labels, choice.gt_outline) == (
        "fine", predicted, False, True
    )  # fmt: skip
    # the honest defaults: perceptually uniform colours, the relative scale shared by labels
    assert (choice.style.cmap, choice.style.alpha, choice.style.normalize) == (
        "viridis", 0.5, "relative"
    )  # fmt: skip
    assert not choice.style.per_label
    assert state["ov_label"] == predicted and state["ov_level"] == "fine"
    # a label of the other level (the level was switched) or an unknown colormap is reset
    state.update(ov_level="coarse", ov_cmap="no-such-map", ov_mode="all", ov_alpha=0.7)
    choice = resolve_choice(state, result, has_mask=False)
    assert choice.level == "coarse" and choice.label in result.coarse
    assert choice.style.cmap == "viridis" and choice.style.alpha == 0.7 and choice.all_labels
    assert not choice.gt_outline  # no lesion mask: no outline, whatever the box says


def test_view_mode_and_nav_callbacks() -> None:
    state: dict = {"deepzoom": {"mode": "all", "nav": 1}}
    slide_state.on_mode(state, "deepzoom")
    slide_state.on_nav(state, "deepzoom")
    assert state["ov_mode"] == "all" and state[slide_state.NAV_REQUEST] == 1
    state["deepzoom"] = {"mode": "sideways", "nav": 5}
    del state[slide_state.NAV_REQUEST]
    slide_state.on_mode(state, "deepzoom")
    slide_state.on_nav(state, "deepzoom")
    assert state["ov_mode"] == "all" and slide_state.NAV_REQUEST not in state  # ignored


def test_browse_lists_and_stepping() -> None:
    import pandas as pd

    table = pd.DataFrame(
        {
            "slide_id": ["s1", "s2", "s3", "s4"],
            "pred_fine": ["N", "IC", None, "ADH"],
            "correct_fine": [True, False, None, False],
            "confidence_fine": [0.9, 0.6, None, 0.95],
            "correct_coarse": [True, True, None, False],
            "confidence_coarse": [0.9, 0.7, None, 0.97],
        }
    )
    assert slide_lookup.browse_ids(table, "all") == ["s1", "s2", "s3", "s4"]
    assert slide_lookup.browse_ids(table, "wrong_fine") == ["s4", "s2"]  # most confident first
    assert slide_lookup.browse_ids(table, "wrong_coarse") == ["s4"]
    assert slide_lookup.browse_ids(table, "cohort", ["s3", "zz", "s1", "s3"]) == ["s3", "s1"]
    ids = ["s4", "s2"]
    assert slide_lookup.neighbour(ids, "s4", 1) == "s2"
    assert (
        slide_lookup.neighbour(ids, "s2", 1) is None
        and slide_lookup.neighbour(ids, "s4", -1) is None
    )
    assert slide_lookup.neighbour(ids, "s1", 1) == "s4"  # not in the list: its first slide
    assert slide_lookup.neighbour([], "s1", 1) is None
