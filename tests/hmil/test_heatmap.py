"""Heatmap rendering, normalisation, colormaps, GeoJSON and crops (SYNTHETIC attention)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from hmil.crops import save_topk_crops, topk_indices
from hmil.errors import ConfigError, HMILError
from hmil.geojson import PALETTE, colour_for_class, detections_collection, write_detections
from hmil.heatmap import (
    CMAPS,
    HeatmapStyle,
    blend,
    colormap_lut,
    coords_extent,
    export_heatmap,
    heatmap_rgba,
    normalize_scores,
    rasterize,
    render_heatmap,
    render_overlay,
    top_labels,
)
from hmil.hierarchy import Hierarchy
from hmil.overlay import _splat_rgba, colormap_code_lut, score_codes
from hmil.slides import Region, open_slide


def _grid(rows: int, cols: int, step: int = 64, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    ys, xs = np.mgrid[:rows, :cols]
    return np.stack([xs.ravel() * step + origin[0], ys.ravel() * step + origin[1]], 1)


def test_colormaps() -> None:
    for name in CMAPS:
        lut = colormap_lut(name)
        assert lut.shape == (256, 3) and lut.dtype == np.uint8
    viridis = colormap_lut("viridis")
    assert tuple(viridis[0]) == (68, 1, 84) and tuple(viridis[-1]) == (253, 231, 37)
    assert tuple(viridis[128]) == pytest.approx((33, 145, 140), abs=2)
    grey = viridis.astype(float) @ [0.2126, 0.7152, 0.0722]
    assert (np.diff(grey) > -0.5).all()  # perceptual maps never get darker (± rounding)
    with pytest.raises(HMILError, match="unknown colormap 'rainbow'"):
        colormap_lut("rainbow")


def test_normalize_scores() -> None:
    assert normalize_scores(np.array([1.0, 2.0, 2.0, 3.0])).tolist() == [0.0, 0.5, 0.5, 1.0]
    assert normalize_scores(np.array([3.0, 1.0, 2.0]), "raw").tolist() == [1.0, 0.0, 0.5]
    # percentile spreads a heavy-tailed softmax row over the whole range
    skewed = np.array([1e-6, 2e-6, 3e-6, 0.9])
    assert normalize_scores(skewed).tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert normalize_scores(skewed, "raw")[2] < 0.01
    assert normalize_scores(np.full(5, 0.2)).tolist() == [0.5] * 5
    with pytest.raises(HMILError, match="1 non-finite"):
        normalize_scores(np.array([0.1, np.nan]))
    with pytest.raises(ConfigError, match=r"^alpha: must lie in \[0, 1\], got 2$"):
        HeatmapStyle(alpha=2.0)
    # relative: N·s on the fixed ×1–×10 log axis, under ×1 not coloured (NaN)
    assert normalize_scores(np.array([0.97, 0.01, 0.01, 0.01]), "relative") == pytest.approx(
        [np.log10(3.88), np.nan, np.nan, np.nan], nan_ok=True
    )


def test_rasterize_places_patches_exactly() -> None:
    coords = np.array([[0, 0], [100, 0], [100, 0]])
    value, count = rasterize(np.array([0.2, 0.4, 0.8]), coords, 100, Region(0, 0, 300, 100),
                             (30, 10))  # fmt: skip
    assert (value[:, :10] == pytest.approx(0.2)) and (count[:, :10] == 1).all()
    assert np.allclose(value[:, 10:20], 0.6) and (count[:, 10:20] == 2).all()  # overlap: mean
    assert (count[:, 20:] == 0).all() and (value[:, 20:] == 0).all()


def test_grid_path_matches_exact_splatting() -> None:
    coords = _grid(5, 7, 64, origin=(32, 96))
    scores = np.random.default_rng(0).random(len(coords))
    region = coords_extent(coords, 64)
    style = HeatmapStyle(alpha=0.6, normalize="percentile")
    fast = heatmap_rgba(scores, coords, 64, region, (56, 40), style)  # 8 px per patch
    codes, _ = score_codes(scores, coords, 64, style)
    exact = _splat_rgba(codes, coords, 64, region, (56, 40), colormap_code_lut("viridis"))
    assert (fast[..., :3] == exact[..., :3]).all()
    # alpha is the style's where a patch lies, 0 elsewhere
    assert set(np.unique(fast[..., 3]).tolist()) == {round(0.6 * 255)}
    holes = np.delete(coords, [3, 10], axis=0)
    sparse = heatmap_rgba(scores[: len(holes)], holes, 64, region, (56, 40), style)
    assert (sparse[0:8, 24:32, 3] == 0).all() and (sparse[8:16, 24:32, 3] == 0).all()


def test_viewport_is_a_crop_of_the_whole_rendering() -> None:
    coords = _grid(40, 50, 256)
    scores = np.random.default_rng(1).random(len(coords))
    whole = heatmap_rgba(scores, coords, 256, Region(0, 0, 12800, 10240), (400, 320))
    view = heatmap_rgba(scores, coords, 256, Region(3200, 1600, 3200, 2400), (100, 75))
    assert (view == whole[50:125, 100:200]).all()
    # zoomed in (each patch 64 px) and partly outside the grid
    zoom = heatmap_rgba(scores, coords, 256, Region(12544, -128, 512, 512), (128, 128))
    assert (zoom[:32, :, 3] == 0).all() and (zoom[:, 64:, 3] == 0).all()
    assert (zoom[32:96, :64] == zoom[40, 10]).all()  # one patch, one colour


def test_smoothing_is_smooth_and_stays_near_the_patches() -> None:
    coords = _grid(8, 8, 64)
    scores = np.arange(64, dtype=float)  # a ramp along rows
    keep = (coords[:, 0] < 256) | (coords[:, 1] < 128)  # an L-shaped tissue area
    style = HeatmapStyle(smooth=1.0, normalize="raw")
    rgba = heatmap_rgba(scores[keep], coords[keep], 64, Region(0, 0, 512, 512), (256, 256), style)
    blocky = HeatmapStyle(normalize="raw")
    covered = heatmap_rgba(scores[keep], coords[keep], 64, Region(0, 0, 512, 512), (256, 256),
                           blocky)  # fmt: skip
    inside = covered[..., 3] > 0
    # drawn as the browser draws it (bilinear between cell centres): colour fades out within
    # half a patch (16 px here) of the tissue, never further
    from scipy.ndimage import binary_dilation

    near = binary_dilation(inside, iterations=16)
    assert not ((rgba[..., 3] > 0) & ~near).any()
    lut = colormap_lut("viridis").astype(int)
    row = rgba[200, 16:112, :3].astype(int)  # inside the lower-left block, away from its edge
    index = [int(np.argmin(((lut - px) ** 2).sum(1))) for px in row]
    assert np.abs(np.diff(index)).max() <= 3  # smooth: no jumps at patch borders
    constant = heatmap_rgba(np.ones(keep.sum()), coords[keep], 64, Region(0, 0, 512, 512),
                            (256, 256), style)  # fmt: skip
    full = constant[..., 3] == constant[..., 3].max()  # away from the fading rim
    assert len({tuple(p) for p in constant[full][:, :3]}) == 1


def test_blend() -> None:
    base = np.zeros((2, 2, 3), dtype=np.uint8)
    overlay = np.zeros((2, 2, 4), dtype=np.uint8)
    overlay[0, 0] = (255, 255, 255, 128)
    out = blend(base, overlay)
    assert out[0, 0].tolist() == [128, 128, 128] and out[1, 1].tolist() == [0, 0, 0]


def test_blank_canvas_size_is_capped() -> None:
    coords = _grid(100, 200, 512)  # 102400 × 51200 level-0 pixels
    image = render_heatmap(np.random.default_rng(2).random(len(coords)), coords, 512,
                           max_size=1000)  # fmt: skip
    assert image.shape == (500, 1000, 3)
    assert (render_heatmap(np.ones(1), np.array([[0, 0]]), 64).shape) == (64, 64, 3)


def test_100k_patches_render_fast() -> None:
    coords = _grid(316, 317, 256)[:100_000]
    scores = np.random.default_rng(3).random(len(coords))
    render_heatmap(scores, coords, 256, max_size=1024)  # warm-up
    start = time.perf_counter()
    image = render_heatmap(scores, coords, 256, max_size=2048)
    elapsed = time.perf_counter() - start
    assert image.shape[1] == 2048
    assert elapsed < 1.0  # measured ~0.1 s; the bound leaves room for a busy CI machine


def test_general_layouts_use_the_splat_path() -> None:
    coords = _grid(10, 10, 100) + np.random.default_rng(4).integers(0, 3, (100, 2))
    scores = np.random.default_rng(5).random(100)
    style = HeatmapStyle(normalize="percentile")
    rgba = heatmap_rgba(scores, coords, 100, coords_extent(coords, 100), (100, 100), style)
    assert (rgba[..., 3] > 0).mean() > 0.95


def test_geojson_one_detection_per_patch(tmp_path: Path) -> None:
    coords = np.array([[0, 0], [256, 512]])
    data = detections_collection(coords, 256, {"attention_IC": np.array([0.25, 0.75])})
    text = json.dumps(data)
    parsed = json.loads(text)
    assert parsed["type"] == "FeatureCollection" and len(parsed["features"]) == 2
    second = parsed["features"][1]
    ring = second["geometry"]["coordinates"][0]
    assert second["geometry"]["type"] == "Polygon"
    assert ring == [[256, 512], [512, 512], [512, 768], [256, 768], [256, 512]]
    assert second["properties"]["objectType"] == "detection"
    assert second["properties"]["measurements"] == {"attention_IC": 0.75}
    with pytest.raises(HMILError, match="1 values for 2 patches"):
        detections_collection(coords, 256, {"attention_IC": np.array([0.1])})
    # the streamed writer produces the same objects
    many = _grid(30, 40, 256)
    values = {"attention_a": np.random.default_rng(6).random(1200), 'odd "name"': np.ones(1200)}
    written = json.loads(write_detections(tmp_path / "g.geojson", many, 256, values).read_text())
    assert written == detections_collection(many, 256, values)
    with pytest.raises(HMILError, match="non-finite"):
        write_detections(tmp_path / "bad.geojson", coords, 256, {"a": np.array([0.1, np.inf])})
    assert not (tmp_path / "bad.geojson").exists()


def test_topk_indices() -> None:
    assert topk_indices(np.array([0.1, 0.9, 0.5, 0.9]), 3).tolist() == [1, 3, 2]
    assert topk_indices(np.array([0.1]), 5).tolist() == [0]


@pytest.fixture
def small_slide(tmp_path: Path) -> Path:
    """A 512 × 256 SYNTHETIC RGB slide: left half red, right half blue."""
    image = np.zeros((256, 512, 3), dtype=np.uint8)
    image[:, :256] = (200, 0, 0)
    image[:, 256:] = (0, 0, 200)
    path = tmp_path / "halves.tiff"
    tifffile.imwrite(path, image, photometric="rgb", tile=(128, 128), compression="zlib")
    return path


def test_overlay_on_a_slide_and_crops(small_slide: Path, tmp_path: Path) -> None:
    coords = _grid(2, 4, 128)
    scores = np.array([0, 0, 0, 1, 0, 0, 0, 0.5])
    with open_slide(small_slide) as slide:
        with pytest.raises(HMILError, match="8 scores for 4 coords"):
            render_overlay(scores, coords[:4], 128, Region(0, 0, 512, 256), (64, 32))
        image = render_overlay(scores[:4], coords[:4], 128, Region(0, 0, 512, 256), (64, 32),
                               HeatmapStyle(alpha=0.0), slide)  # fmt: skip
        assert image[20, 10].tolist() == [200, 0, 0] and image[20, 50].tolist() == [0, 0, 200]
        paths = save_topk_crops(slide, coords, 128, scores, 2, tmp_path / "crops", "IC/x")
    assert [p.name for p in paths] == ["00_halves_x384_y0_a1.png", "01_halves_x384_y128_a0.5.png"]
    assert paths[0].parent.name == "IC_x"
    with Image.open(paths[0]) as image:
        crop = np.asarray(image)
    assert crop.shape == (128, 128, 3) and (crop == (0, 0, 200)).all()


def test_export_heatmap_files_and_errors(small_slide: Path, tmp_path: Path) -> None:
    coords = _grid(2, 4, 128)
    attention = {"benign": np.linspace(0, 1, 8), "malignant": np.linspace(1, 0, 8)}
    with open_slide(small_slide) as slide:
        out = export_heatmap(
            attention, "malignant", coords, 128, tmp_path / "h.png", slide=slide,
            geojson=tmp_path / "h.geojson", crops_dir=tmp_path / "crops", topk=3,
            bag_attrs={"level0_width": 512, "level0_height": 256},
        )  # fmt: skip
        with Image.open(out.png) as png:
            assert png.size == (512, 256)
        features = json.loads(out.geojson.read_text())["features"]
        assert len(features) == 8
        assert set(features[0]["properties"]["measurements"]) == {
            "attention_benign",
            "attention_malignant",
            "top_label_index",
        }
        assert {k: len(v) for k, v in out.crops.items()} == {"benign": 3, "malignant": 3}
        with pytest.raises(HMILError, match="unknown label 'IC'"):
            export_heatmap(attention, "IC", coords, 128, tmp_path / "x.png")
        with pytest.raises(HMILError, match=r"tiled from a slide \(1024x256 px\), this is"):
            export_heatmap(attention, "benign", coords, 128, tmp_path / "x.png", slide=slide,
                           bag_attrs={"level0_width": 1024, "level0_height": 256})  # fmt: skip
        with pytest.raises(HMILError, match=r"wrong slide\? allow_slide_mismatch draws it anyway"):
            export_heatmap(attention, "benign", coords + 512, 128, tmp_path / "x.png",
                           slide=slide)  # fmt: skip
    with pytest.raises(HMILError, match=r"^topk: needs a slide and a crops folder"):
        export_heatmap(attention, "benign", coords, 128, tmp_path / "x.png", topk=2)
    assert not (tmp_path / "x.png").exists()


def test_geojson_detections_carry_the_requested_label_and_a_fixed_colour(tmp_path: Path) -> None:
    coords = _grid(1, 4, 128)
    attention = {"benign": np.array([0.4, 0.3, 0.2, 0.1]), "IC": np.array([0.1, 0.2, 0.3, 0.4])}
    assert top_labels(attention) == ["benign", "benign", "IC", "IC"]
    bracs = Hierarchy.preset("bracs")
    out = export_heatmap(
        attention, "IC", coords, 128, tmp_path / "h.png", geojson=tmp_path / "h.geojson",
        bag_attrs={"bounds_x": 1000, "bounds_y": 50},  # an MRXS bag: QuPath's frame is shifted
        hierarchy=bracs,
    )  # fmt: skip
    features = json.loads(out.geojson.read_text())["features"]
    ic = {"name": "IC", "color": list(colour_for_class("IC", bracs))}
    # every detection is the label asked for, the arg-max label stays as a measurement
    assert [f["properties"]["classification"] for f in features] == [ic] * 4
    assert [f["properties"]["measurements"]["top_label_index"] for f in features] == [0, 0, 1, 1]
    assert features[1]["geometry"]["coordinates"][0][0] == [128 - 1000, -50]
    # another slide whose patches favour another class first: IC keeps its colour
    other = {"IC": attention["IC"][::-1], "benign": attention["benign"][::-1]}
    again = export_heatmap(other, "IC", coords, 128, tmp_path / "o.png",
                           geojson=tmp_path / "o.geojson", hierarchy=bracs)  # fmt: skip
    first = json.loads(again.geojson.read_text())["features"][0]["properties"]
    assert first["classification"] == ic
    assert first["measurements"]["top_label_index"] == 0  # "IC" is first in this order
    plain = detections_collection(coords, 128, {"a": np.zeros(4)})  # no classification asked
    assert "classification" not in plain["features"][0]["properties"]


def test_class_colours_follow_the_hierarchy_not_the_file() -> None:
    bracs = Hierarchy.preset("bracs")
    names = [*bracs.coarse, *bracs.fine]
    colours = [colour_for_class(name, bracs) for name in names]
    assert colours == list(PALETTE[: len(names)])  # coarse then fine, each its own colour
    assert len(set(colours)) == len(names) == 10
    # a class the hierarchy lacks still gets one fixed colour, whatever the call
    assert colour_for_class("Stroma") == colour_for_class("Stroma", bracs) in PALETTE
