"""Viewport maths and viewport rendering (region-on-demand reads, overlays, masks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hmil.heatmap import HeatmapStyle
from hmil.slides.reader import Region, open_slide
from viewer.components import rendering
from viewer.components import viewport as vpm
from viewer.components.inference import SlideResult
from viewer.components.viewport import Canvas, Viewport

VIEW = (768, 512)
BIG = Canvas(0.0, 0.0, 100_000.0, 80_000.0)


def test_zoom_zero_fits_the_canvas_and_the_deepest_zoom_passes_full_resolution() -> None:
    fit = vpm.fit_downsample(BIG, VIEW)
    assert fit == pytest.approx(max(100_000 / 768, 80_000 / 512))
    r = vpm.region(BIG, vpm.initial(BIG), VIEW)
    assert r.w >= BIG.width - 1e-6 and r.h >= BIG.height - 1e-6
    top = vpm.max_zoom(BIG, VIEW)
    assert vpm.downsample(BIG, VIEW, top) == vpm.MIN_DOWNSAMPLE
    assert vpm.downsample(BIG, VIEW, top - 1) > vpm.MIN_DOWNSAMPLE  # one step earlier: coarser
    assert vpm.downsample(BIG, VIEW, top - 1) <= 1.0  # full resolution before the last step
    deep = vpm.region(BIG, Viewport(50_000, 40_000, top), VIEW)
    assert deep.w == pytest.approx(VIEW[0] * 0.5) and deep.h == pytest.approx(VIEW[1] * 0.5)


def test_zoom_and_pan_are_clamped_to_the_canvas() -> None:
    vp = vpm.initial(BIG)
    assert vpm.zoom_by(BIG, vp, -3, VIEW).zoom == 0
    assert vpm.zoom_by(BIG, vp, 99, VIEW).zoom == vpm.max_zoom(BIG, VIEW)
    zoomed = vpm.zoom_by(BIG, vp, 4, VIEW)
    moved = vpm.pan(BIG, zoomed, 0.5, 0.0, VIEW)
    width = vpm.region(BIG, zoomed, VIEW).w
    assert moved.cx == pytest.approx(zoomed.cx + width / 2) and moved.cy == zoomed.cy
    far = vpm.centre_on(BIG, zoomed, -5e6, 5e6, VIEW)
    assert (far.cx, far.cy) == (0.0, BIG.height)


def test_clicks_map_to_level0() -> None:
    canvas = Canvas(1000.0, 2000.0, 4000.0, 2000.0)
    assert vpm.thumbnail_to_level0(canvas, (150, 25), (300, 150)) == (3000.0, 2333.3333333333335)
    vp = Viewport(3000.0, 3000.0, 0)
    r = vpm.region(canvas, vp, VIEW)
    x, y = vpm.view_to_level0(canvas, vp, (384, 256), (768, 512), VIEW)
    assert (x, y) == pytest.approx((r.x + r.w / 2, r.y + r.h / 2))


def test_zoom_to_patch_centres_it_large() -> None:
    vp = vpm.zoom_to_patch(BIG, 40_000, 30_000, 256, VIEW)
    assert (vp.cx, vp.cy) == (40_128, 30_128)
    patch_px = 256 / vpm.downsample(BIG, VIEW, vp.zoom)
    assert 64 <= patch_px <= 260


def test_magnification_text() -> None:
    assert vpm.magnification_text(2.0, 40.0, 0.25).startswith("20× · 0.5 µm/px")
    assert "level-0 px per screen px" in vpm.magnification_text(2.0, None, None)


def _result(coords: np.ndarray, patch: int = 256) -> SlideResult:
    n = coords.shape[0]
    rng = np.random.default_rng(0)
    att_f = rng.random((3, n)).astype(np.float32)
    att_f /= att_f.sum(axis=1, keepdims=True)
    return SlideResult(
        slide_id="s",
        coarse=("a", "b"),
        fine=("a1", "a2", "b1"),
        parent=(0, 0, 1),
        fine_probs=np.array([0.5, 0.2, 0.3]),
        coarse_probs=np.array([0.7, 0.3]),
        coarse_head_probs=np.array([0.4, 0.6]),
        attention_coarse=att_f[:2],
        attention_fine=att_f,
        coords=coords,
        patch_size=patch,
    )


def test_overlay_on_a_coordinate_canvas_colours_only_patches() -> None:
    coords = np.array([[0, 0], [256, 0], [0, 256]])
    result = _result(coords)
    canvas = rendering.canvas_for(None, result)
    assert canvas == Canvas(0.0, 0.0, 512.0, 512.0)
    region = canvas.region
    base = rendering.base_image(None, region, (64, 64))
    out = rendering.overlay(base, result, "fine", "a2", HeatmapStyle(alpha=1.0), region)
    assert out.shape == (64, 64, 3)
    assert (out[40:, 40:] == 255).all()  # no patch at (256, 256): white canvas
    assert not (out[:30, :30] == 255).all(axis=-1).any()  # patch (0, 0) coloured


def test_viewport_reads_only_the_visible_region_at_a_coarse_level(viewer_root: Path) -> None:
    """Region-on-demand: a fitted view of the slide is read from its coarsest sufficient level
    and a zoomed view from level 0, each read no larger than a few times the view."""
    slide = open_slide(viewer_root / "cohort" / "slides" / "synth-0000.tiff")
    reads: list[tuple[int, tuple[int, int]]] = []
    original = slide._backend.read

    def spy(location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        reads.append((level, size))
        return original(location, level, size)

    slide._backend.read = spy  # type: ignore[method-assign]
    w, h = slide.dimensions
    canvas = Canvas(0.0, 0.0, float(w), float(h))
    small = (96, 64)  # a small view so that fitting needs a downsample of about 20
    fit = vpm.region(canvas, vpm.initial(canvas), small)
    image = rendering.base_image(slide, fit, small)
    assert image.shape == (64, 96, 3)
    assert reads[-1][0] == slide.level_count - 1  # coarsest level
    deep = vpm.region(canvas, Viewport(w / 2, h / 2, vpm.max_zoom(canvas, small)), small)
    reads.clear()
    rendering.base_image(slide, deep, small)
    assert {level for level, _ in reads} == {0}
    assert sum(sw * sh for _, (sw, sh) in reads) <= 4 * small[0] * small[1]
    slide.close()


def test_mask_view_tints_the_lesion_in_the_view() -> None:
    mask = np.zeros((10, 20), dtype=bool)
    mask[2:5, 4:8] = True  # level-0 x 64..128, y 32..80 at scale 16
    region = Region(0.0, 0.0, 320.0, 160.0)
    base = np.full((80, 160, 3), 200, dtype=np.uint8)
    crop = rendering.crop_mask(mask, 16.0, region, (160, 80))
    assert crop.sum() == (80 - 32) // 2 * (128 - 64) // 2
    out = rendering.mask_view(base, mask, 16.0, region)
    assert tuple(out[30, 50]) != (200, 200, 200) and tuple(out[5, 5]) == (200, 200, 200)
    assert out[30, 50, 1] > out[30, 50, 0]  # green


def test_shade_outside_and_draw_box() -> None:
    canvas = Canvas(0.0, 0.0, 100.0, 100.0)
    region = Region(-100.0, 0.0, 300.0, 100.0)
    image = np.full((10, 30, 3), 255, dtype=np.uint8)
    out = rendering.shade_outside(image, canvas, region)
    assert tuple(out[5, 2]) == rendering.OUTSIDE and tuple(out[5, 15]) == (255, 255, 255)
    boxed = rendering.draw_box(
        np.full((100, 100, 3), 255, np.uint8), canvas, Region(10, 10, 20, 20)
    )
    assert tuple(boxed[10, 15]) == rendering.BOX_COLOUR and tuple(boxed[20, 20]) == (255,) * 3


def test_session_viewport_callbacks() -> None:
    """What the buttons, thumbnail clicks and "go to patch" do to the viewport keys."""
    from viewer.components import slide_state

    canvas = Canvas(0.0, 0.0, 4096.0, 3072.0)
    state: dict = {}
    slide_state.ensure(state, ("a",), canvas)
    assert (state["vp_zoom"], state["vp_cx"], state["vp_cy"]) == (0, 2048, 1536)
    slide_state.zoom(state, canvas, VIEW, 2)
    slide_state.pan(state, canvas, VIEW, -0.5, 0.5)
    r = vpm.region(canvas, Viewport(2048, 1536, 2), VIEW)
    assert state["vp_zoom"] == 2
    assert (state["vp_cx"], state["vp_cy"]) == (round(2048 - r.w / 2), round(1536 + r.h / 2))
    state["thumb"] = {"x": 75, "y": 0, "width": 300, "height": 225}
    slide_state.thumbnail_click(state, canvas, VIEW, "thumb")
    assert (state["vp_cx"], state["vp_cy"], state["vp_zoom"]) == (1024, 0, 2)
    slide_state.ensure(state, ("a",), canvas)  # same canvas: kept
    assert state["vp_zoom"] == 2
    slide_state.go_to_patch(state, canvas, VIEW, 512, 256, 256)
    assert (state["vp_cx"], state["vp_cy"]) == (640, 384) and state["vp_zoom"] >= 2
    slide_state.ensure(state, ("b",), canvas)  # another slide: fitted view again
    assert state["vp_zoom"] == 0
