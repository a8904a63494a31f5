"""The fallback readers' bounds: what they decode is capped per file and checked from the
header before decoding; a decoded image is held in its own (smallest) form and each read
converts only its region; compositing and resampling work in bands. (Crafted files claiming
huge sizes, and the memory they cost, are in ``tests/hmil/slides/test_reader_memory.py``.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from slide_helpers import disc_image

from hmil.errors import SlideError
from hmil.slides import reader
from hmil.slides.reader import OPENSLIDE_HANDLE_BYTES, Region, TooLargeError, open_slide


def _rgba(h: int, w: int, seed: int = 0) -> np.ndarray:
    rgba = np.random.default_rng(seed).integers(0, 256, size=(h, w, 4), dtype=np.uint8)
    rgba[: h // 2, :, 3] = 255
    return rgba


def _composited(rgba: np.ndarray) -> np.ndarray:
    """The reference: the whole image composited over white at once."""
    a = rgba[..., 3:].astype(np.float32) / 255.0
    out = rgba[..., :3].astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def test_compositing_in_bands_equals_the_whole_image() -> None:
    rgba = _rgba(1100, 1000)  # more than one band of _COMPOSITE_PIXELS
    assert rgba.shape[0] * rgba.shape[1] > reader._COMPOSITE_PIXELS
    assert (reader._rgba_to_rgb(rgba) == _composited(rgba)).all()


def test_fallback_images_are_held_in_their_own_form_and_converted_per_read(
    tmp_path: Path,
) -> None:
    grey = np.random.default_rng(1).integers(0, 256, size=(90, 120), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    rgba = _rgba(90, 120, seed=2)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    deep = (grey.astype(np.uint16) << 8) | 0x7F
    tifffile.imwrite(tmp_path / "deep.tif", deep, compression="zlib")
    planar = disc_image(120, 90, radius=30)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(planar, -1, 0), photometric="rgb",
                     planarconfig="separate", compression="zlib")  # fmt: skip
    tifffile.imwrite(tmp_path / "mapped.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    cases = {
        "grey.png": (np.repeat(grey[..., None], 3, axis=2), 90 * 120),
        "rgba.png": (_composited(rgba), 90 * 120 * 4),
        "deep.tif": (np.repeat(grey[..., None], 3, axis=2), 90 * 120 * 2),  # 16-bit held
        "planar.tif": (planar, 90 * 120 * 3),  # held planar, read as RGB
        "mapped.tif": (_composited(rgba), 0),  # memory-mapped: nothing decoded
    }
    for name, (expected, held) in cases.items():
        with open_slide(tmp_path / name) as slide:
            assert slide.backend in ("pillow", "tifffile"), name
            assert (slide.read_region((0, 0), 0, (120, 90)) == expected).all(), name
            assert (slide.read_region((40, 30), 0, (20, 10)) == expected[30:40, 40:60]).all()
            assert slide.resident_bytes() == held, name


def test_an_image_over_the_decoding_cap_is_refused_from_its_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader, "MAX_DECODED_PIXELS", 64 * 48 - 1)
    Image.fromarray(disc_image(64, 48, radius=10)).save(tmp_path / "big.png")
    tifffile.imwrite(tmp_path / "big.tif", disc_image(64, 48, radius=10), photometric="rgb",
                     compression="zlib")  # fmt: skip
    decoded: list[str] = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append("pillow"))
    for name in ("big.png", "big.tif"):
        with pytest.raises(TooLargeError) as info:
            open_slide(tmp_path / name)
        assert info.value.problem == (
            "level 0 is 64x48 px, more than the 3,071 px read without OpenSlide (convert it to "
            "a tiled pyramidal TIFF)"
        )
    assert not decoded


def test_the_decoding_cap_counts_every_level_of_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stripped two-level pyramid (tifffile fallback): the coarse level fits, both do not."""
    image = disc_image(256, 192, radius=50)
    path = tmp_path / "pyramid.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, photometric="rgb", subifds=1)
        tif.write(image[::4, ::4].copy(), photometric="rgb", subfiletype=1)
    monkeypatch.setattr(reader, "MAX_DECODED_PIXELS", 256 * 192)
    with open_slide(path) as slide:
        assert slide.backend == "tifffile" and slide.level_count == 2
        assert slide.read_region((0, 0), 1, (64, 48)).shape == (48, 64, 3)
        with pytest.raises(SlideError, match="level 0 is 256x192 px, more than the 49,152 px"):
            slide.read_region((0, 0), 0, (8, 8))


def test_read_rect_gives_the_same_picture_whatever_its_band_size(disc_slide: Path) -> None:
    with open_slide(disc_slide) as slide:
        assert slide.resident_bytes() == OPENSLIDE_HANDLE_BYTES
        region = Region(100, 50, 1200, 900)
        whole = slide.read_rect(region, (300, 225)).astype(int)
        banded = slide.read_rect(region, (300, 225), band_pixels=4000).astype(int)
    assert np.abs(whole - banded).mean() < 0.5 and np.abs(whole - banded).max() <= 64
