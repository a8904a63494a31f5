"""Attention scales, legends and the one overlay engine (SYNTHETIC attention)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from hmil.attention_scale import (
    RELATIVE_TOP,
    code_lut,
    code_positions,
    distinct,
    fit_scales,
    position_codes,
)
from hmil.errors import HMILError
from hmil.overlay import (
    HeatmapStyle,
    colormap_code_lut,
    colormap_lut,
    draw_legend,
    level_codes,
    render_codes,
)
from hmil.patch_grid import patch_grid


def _grid(rows: int, cols: int, step: int = 256) -> np.ndarray:
    ys, xs = np.mgrid[:rows, :cols]
    return np.stack([xs.ravel() * step, ys.ravel() * step], 1)


def _four_hot(n: int = 56) -> np.ndarray:
    """The demo slide synth-000's true-class attention: four patches hold 99.6 %."""
    a = np.full(n, 0.0008)
    a[:4] = [0.414, 0.255, 0.163, 0.163]
    return a / a.sum()


def test_relative_scale_colours_only_the_attended_patches() -> None:
    a = _four_hot()
    scale = fit_scales(a[None], "relative")[0]
    codes = scale.codes(a)
    assert (codes > 0).sum() == 4  # not half the slide: four patches
    x = a[:4] * a.size  # multiples of an average patch: ×23, ×14, ×9, ×9
    expected = np.minimum(np.log10(x), 1.0)  # ×10 and above: the top colour
    assert code_positions(codes[:4]) == pytest.approx(expected, abs=1 / 254)
    assert scale.code_texts()[0] == "<×1"
    assert scale.code_texts()[int(codes[3])] == f"×{x[3]:.2g}"
    legend = scale.legend()
    assert [t for _, t in legend.ticks] == ["×1", "×2", "×5", "≥×10"]
    assert legend.ticks[2][0] == pytest.approx(np.log10(5))
    assert "under ×1" in legend.uncoloured


def test_shared_scale_is_one_for_every_label_and_per_label_is_not() -> None:
    rows = np.stack([_four_hot(), np.full(56, 1 / 56), np.roll(_four_hot(), 9)])
    shared = fit_scales(rows, "relative")
    assert shared[0] is shared[1] is shared[2] and shared[0].hi == RELATIVE_TOP
    per_label = fit_scales(rows, "relative", per_label=True)
    assert per_label[0].hi == 30  # the label's own top (×23) rounded up to 1-2-3-5
    assert per_label[1].hi == 2  # a flat row (×1 everywhere) still gets a range
    unique, index = distinct(shared)
    assert len(unique) == 1 and index == [0, 0, 0]
    raw = fit_scales(rows, "raw")
    assert raw[0].lo == pytest.approx(rows.min()) and raw[0].hi == pytest.approx(rows.max())
    own = fit_scales(rows, "raw", per_label=True)
    assert own[1].lo == own[1].hi  # a constant label: the middle colour
    assert own[1].codes(rows[1]).tolist() == [128] * 56


def test_percentile_keeps_its_meaning_and_says_so() -> None:
    a = _four_hot()
    scale = fit_scales(a[None], "percentile")[0]
    assert (scale.codes(a) > 0).all()  # every patch coloured: the rank says nothing absolute
    assert "percentile" in scale.legend().title and "per label" in scale.legend().title


def test_codes_round_trip_and_refusals() -> None:
    positions = np.array([0.0, 0.5, 1.0, np.nan])
    codes = position_codes(positions)
    assert codes.tolist() == [1, 128, 255, 0]
    assert code_positions(codes) == pytest.approx(positions, nan_ok=True)
    lut = code_lut(colormap_lut("viridis"))
    assert (
        lut.shape == (256, 3)
        and tuple(lut[1]) == (68, 1, 84)
        and tuple(lut[255])
        == (
            253,
            231,
            37,
        )
    )
    with pytest.raises(HMILError, match="unknown scale 'log'"):
        fit_scales(np.ones((1, 3)), "log")
    with pytest.raises(HMILError, match="1 non-finite"):
        fit_scales(np.array([[0.5, math.inf]]), "relative")


def test_png_pixels_are_the_codes_colours() -> None:
    """The PNG colours each patch with code_lut[code], the table the browser gets."""
    coords = _grid(7, 8)
    rows = np.stack([_four_hot(), np.roll(_four_hot(), 20)])
    style = HeatmapStyle(alpha=1.0)
    coded = level_codes(rows, coords, 256, style)
    image = render_codes(coded.codes[0], coords, 256, style, None, max_size=800)  # 100 px/patch
    lut = colormap_code_lut("viridis")
    for i in range(8):
        x, y = coords[i] // 256 * 100 + 50
        expected = lut[coded.codes[0][i]] if coded.codes[0][i] else (255, 255, 255)
        assert tuple(image[y, x]) == tuple(expected), i


def test_overlapping_grid_paints_later_patches_on_top() -> None:
    coords = np.array([[0, 0], [128, 0]])  # 50 % overlap: step 128, span 2
    grid = patch_grid(coords, 256)
    assert (grid.step, grid.span, grid.cols) == (128, 2, 3)
    painted = grid.paint(np.array([1, 2], dtype=np.uint8))
    assert painted.tolist() == [[1, 2, 2], [1, 2, 2]]


def test_legend_in_the_png(tmp_path: object) -> None:
    coords = _grid(7, 8)
    style = HeatmapStyle()
    coded = level_codes(_four_hot()[None], coords, 256, style)
    plain = render_codes(coded.codes[0], coords, 256, style, None, max_size=800)
    with_legend = draw_legend(plain, coded.legend(0), "viridis", "atypia-large")
    changed = np.any(with_legend != plain, axis=2)
    ys, xs = np.nonzero(changed)
    assert ys.min() > 700 * 0.6 and xs.max() < 800 * 0.65  # a box in the lower-left corner
    # the colour bar runs from the first code's colour to the last
    lut = colormap_code_lut("viridis")
    colours = {tuple(p) for p in with_legend[changed]}
    assert tuple(lut[1]) in colours and tuple(lut[255]) in colours
    tiny = np.zeros((100, 150, 3), dtype=np.uint8)
    assert draw_legend(tiny, coded.legend(0), "viridis") is tiny  # too small: unchanged
    Image.fromarray(with_legend)  # a valid picture
