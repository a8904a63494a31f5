"""The tiling QC image: kept patches tinted blue, the tissue contour green, a caption."""

from __future__ import annotations

import numpy as np

from hmil.slides.reader import Region
from hmil.slides.tile_qc import render_qc
from hmil.slides.tiling import PatchPlan, TilingResult


class WhiteSlide:
    """Stands in for an open slide: every region reads as white."""

    def read_rect(self, region: Region, size: tuple[int, int]) -> np.ndarray:
        return np.full((size[1], size[0], 3), 255, dtype=np.uint8)


def _result() -> TilingResult:
    plan = PatchPlan(patch_size=64, patch_level=0, level_downsample=1.0, downsample=1.0,
                     patch_size_level0=64, read_size=64, target_magnification=20.0,
                     level0_magnification=20.0, step_level0=64)  # fmt: skip
    mask = np.zeros((8, 16), dtype=bool)  # 1024 × 512 level-0 pixels, 64 per mask pixel
    mask[2:6, 8:12] = True
    coords = np.array([[512, 128], [576, 128]], dtype=np.int64)  # two cells inside the tissue
    return TilingResult(slide_id="s", coords=coords, fractions=np.ones(2, np.float32), plan=plan,
                        mask=mask, mask_scale=(64.0, 64.0), level0_size=(1024, 512),
                        tissue_threshold=0.5)  # fmt: skip


def test_qc_image_marks_patches_and_the_contour() -> None:
    image = render_qc(WhiteSlide(), _result(), max_size=256)  # type: ignore[arg-type]  # a stub
    assert image.shape == (128, 256, 3) and image.dtype == np.uint8
    # inside a kept cell (level-0 (540, 150) → QC (135, 37)): white tinted 30 % blue
    assert image[37, 135].tolist() == [185, 203, 255]  # 255 · 0.7 + (20, 80, 255) · 0.3
    # the tissue's inner boundary (mask column 8 → QC columns 128..) is green
    assert image[64, 128].tolist() == [0, 170, 0]
    # an untouched corner stays white, the caption's banner is white with dark text
    assert image[120, 250].tolist() == [255, 255, 255]
    assert image[2:12, 3:120].min() < 100
