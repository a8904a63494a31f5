"""open_slide on the real test slides, the broken ones, and SYNTHETIC files for each backend."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from slide_helpers import GLASS, TISSUE, disc_image

from hmil.errors import SlideError
from hmil.slides import Region, fit_size, open_slide, slide_id_from_path

#: name → (backend, level-0 size, level count, objective power, mpp)
REAL = {
    "cmu-1-small-region.svs": ("openslide", (2220, 2967), 1, 20.0, 0.499),
    "tcga-cr-7395-01a-01-ts1.svs": ("openslide", (4443, 3567), 2, None, None),
    "kidney-48-5.tif": ("tifffile", (1493, 901), 1, None, None),
    # its resolution tag says 72 dpi (352.8 µm/px): not a microscope resolution → unknown
    "boxes-4-level.tiff": ("openslide", (300, 250), 4, None, None),
}

BAD = {
    "truncated-aperio.svs": "not a readable slide",
    "unreadable-tiles.svs": "cannot decode slide tiles",
    "unsupported-compression.tiff": "Unsupported TIFF compression: 52479",
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_every_real_slide_opens_with_its_metadata(slides_dir: Path, name: str) -> None:
    backend, dims, levels, power, mpp = REAL[name]
    with open_slide(slides_dir / name) as slide:
        assert slide.backend == backend
        assert slide.dimensions == dims
        assert slide.level_count == levels
        assert slide.level_downsamples[0] == 1.0
        assert list(slide.level_downsamples) == sorted(slide.level_downsamples)
        assert slide.objective_power == power
        assert slide.mpp == (pytest.approx(mpp) if mpp else None)
        region = slide.read_region((10, 20), 0, (64, 48))
        assert region.shape == (48, 64, 3) and region.dtype == np.uint8
        thumb = slide.thumbnail(256)
        assert max(thumb.shape[:2]) == min(256, max(dims))
        assert thumb.shape[1] / thumb.shape[0] == pytest.approx(dims[0] / dims[1], rel=0.02)


@pytest.mark.parametrize("name", sorted(BAD))
def test_broken_slides_raise_slide_error_naming_the_file(slides_dir: Path, name: str) -> None:
    path = slides_dir / "bad" / name
    with pytest.raises(SlideError) as info:
        open_slide(path)
    assert info.value.where == str(path)
    assert BAD[name] in info.value.problem
    assert "\n" not in str(info.value)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(SlideError, match="not found"):
        open_slide(tmp_path / "nope.svs")
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    with pytest.raises(SlideError, match="empty file"):
        open_slide(empty)


HEADERS = st.sampled_from([b"", b"II*\x00", b"MM\x00*", b"\x89PNG\r\n\x1a\n"])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(min_size=1, max_size=2048), prefix=HEADERS)
def test_random_bytes_give_slide_error_or_a_slide(
    tmp_path: Path, data: bytes, prefix: bytes
) -> None:
    path = tmp_path / "random.tiff"
    path.write_bytes(prefix + data)
    try:
        slide = open_slide(path)
    except SlideError as exc:
        assert exc.where == str(path)
    else:  # a lucky valid header: it must then behave like any slide
        with slide:
            assert slide.read_region((0, 0), 0, (4, 4)).shape == (4, 4, 3)


def test_openslide_pyramid_metadata_and_magnification(disc_slide: Path) -> None:
    with open_slide(disc_slide) as slide:
        assert slide.backend == "openslide"
        assert slide.level_dimensions == ((1536, 1024), (768, 512), (384, 256))
        assert slide.level_downsamples == (1.0, 2.0, 4.0)
        assert slide.mpp == pytest.approx(0.5)
        assert slide.magnification == pytest.approx(20.0)  # 10 / mpp
        assert slide.get_best_level_for_downsample(1.0) == 0
        assert slide.get_best_level_for_downsample(3.0) == 1
        assert slide.get_best_level_for_downsample(64.0) == 2
        # a read at level 1 is in level-1 pixels but positioned in level-0 coordinates
        centre = slide.read_region((700 - 8, 500 - 8), 1, (8, 8))
        assert (centre == TISSUE).all()


def test_reads_outside_the_slide_are_white(disc_slide: Path) -> None:
    with open_slide(disc_slide) as slide:
        region = slide.read_region((1500, 1000), 0, (100, 100))
        assert (region[:24, :36] == GLASS).all()
        assert (region[30:, :] == 255).all() and (region[:, 40:] == 255).all()


def test_read_rect_resamples_a_level0_rectangle(disc_slide: Path) -> None:
    with open_slide(disc_slide) as slide:
        out = slide.read_rect(Region(700 - 200, 500 - 100, 400, 200), (40, 20))
        assert out.shape == (20, 40, 3)
        assert (out[8:12, 18:22] == TISSUE).all()  # centre of the disc
        whole = slide.read_rect(Region(0, 0, 1536, 1024), (96, 64))
        assert (whole[0, 0] == GLASS).all() and (whole[31, 43] == TISSUE).all()


def test_concurrent_reads_equal_sequential_reads(disc_slide: Path) -> None:
    coords = [(x, y) for x in range(0, 1536, 192) for y in range(0, 1024, 256)]
    with open_slide(disc_slide) as slide:
        sequential = [slide.read_region(c, 0, (128, 128)) for c in coords]
        with ThreadPoolExecutor(4) as pool:
            threaded = list(pool.map(lambda c: slide.read_region(c, 0, (128, 128)), coords))
    assert all((a == b).all() for a, b in zip(sequential, threaded, strict=True))


def test_stripped_tiff_falls_back_to_tifffile_with_its_mpp(tmp_path: Path) -> None:
    path = tmp_path / "stripped.tif"
    image = disc_image(600, 400, radius=100)
    tifffile.imwrite(path, image, photometric="rgb", resolution=(1e4 / 0.25, 1e4 / 0.25),
                     resolutionunit="CENTIMETER")  # fmt: skip
    with open_slide(path) as slide:
        assert slide.backend == "tifffile"
        assert slide.dimensions == (600, 400)
        assert slide.mpp == pytest.approx(0.25) and slide.magnification == pytest.approx(40.0)
        assert (slide.read_region((0, 0), 0, (600, 400)) == image[:400, :600]).all()


def test_grey_tiff_is_read_as_rgb(tmp_path: Path) -> None:
    path = tmp_path / "grey.tif"
    tifffile.imwrite(path, np.arange(64 * 32, dtype=np.uint16).reshape(32, 64) * 32)
    with open_slide(path) as slide:
        region = slide.read_region((0, 0), 0, (64, 32))
        assert region.shape == (32, 64, 3)
        assert (region[..., 0] == region[..., 1]).all()


def test_png_falls_back_to_pillow(tmp_path: Path) -> None:
    path = tmp_path / "export.png"
    image = disc_image(300, 200, radius=60)
    Image.fromarray(image).save(path)
    with open_slide(path) as slide:
        assert slide.backend == "pillow"
        assert slide.slide_id == "export"
        assert slide.mpp is None and slide.magnification is None
        assert (slide.read_region((0, 0), 0, (300, 200)) == image).all()


def test_helpers() -> None:
    assert slide_id_from_path("/a/b/case-1.ome.tiff") == "case-1"
    assert slide_id_from_path("x.y.svs") == "x.y"
    assert fit_size(4000, 1000, 2048) == (2048, 512)
    assert fit_size(100, 50, 2048) == (100, 50)  # never upsampled


def test_invalid_reads_raise(disc_slide: Path) -> None:
    with open_slide(disc_slide) as slide:
        with pytest.raises(SlideError, match="level 5 does not exist"):
            slide.read_region((0, 0), 5, (4, 4))
        with pytest.raises(SlideError, match="invalid region size"):
            slide.read_region((0, 0), 0, (0, 4))
