"""Tile and crop reads bounded by what they show: added low-zoom levels for slides without a
pyramid, banded reads and refusals for gaps in a pyramid, slides the viewer refuses outright,
the shared read budget, and the slide caches bounded in bytes. (Memory itself is measured in
``tests/hmil/slides/test_reader_memory.py``.)"""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import openslide
import pytest
import tifffile
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image
from starlette.applications import Starlette
from starlette.testclient import TestClient

from hmil.errors import SlideError
from hmil.slides.reader import Region, open_slide
from viewer.components import cached_ui
from viewer.tiles import sources
from viewer.tiles.geometry import TILE_OVERLAP, TILE_SIZE
from viewer.tiles.registry import ResidentCache, SlideRegistry, cached_slide
from viewer.tiles.routes import TileService
from viewer.tiles.sources import (
    OVERVIEW_PIXELS,
    SINGLE_READ_PIXELS,
    added_levels,
    open_deepzoom,
    read_bounded,
)


def _smooth(width: int, height: int, cell: int = 64) -> np.ndarray:
    """SYNTHETIC smooth colours (tiles compress well, resampling is easy to compare)."""
    shape = (height // cell, width // cell, 3)
    small = np.random.default_rng(3).integers(40, 250, shape, np.uint8)
    resized = Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized)


@pytest.fixture(scope="module")
def one_level(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3072 × 2048 one-level tiled TIFF (6.3 M px: more than one read may take)."""
    path = tmp_path_factory.mktemp("one-level") / "one.tiff"
    tifffile.imwrite(path, _smooth(3072, 2048, cell=512), tile=(256, 256), photometric="rgb",
                     compression="zlib")  # fmt: skip
    return path


def _jpeg(tile: Image.Image) -> bytes:
    buf = io.BytesIO()
    tile.save(buf, format="JPEG", quality=sources.JPEG_QUALITY)
    return buf.getvalue()


def _pixels(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).astype(int)


def test_a_slide_without_a_pyramid_gets_power_of_two_levels_below_it(one_level: Path) -> None:
    with open_slide(one_level) as slide:
        levels = added_levels(slide)
    downsamples = [d for d, _ in levels]
    assert downsamples == [2.0**k for k in range(1, len(levels) + 1)]
    w, h = levels[0][1]
    assert w * h <= OVERVIEW_PIXELS and (w, h) == (1536, 1024)
    assert max(levels[-1][1]) <= 512 < max(levels[-2][1])


def test_a_pyramid_small_at_its_coarsest_level_gets_none(disc_slide_small: Path) -> None:
    with open_slide(disc_slide_small) as slide:
        assert added_levels(slide) == []


@pytest.fixture(scope="module")
def disc_slide_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pyramid") / "pyramid.tiff"
    image = _smooth(1536, 1024)
    with tifffile.TiffWriter(path) as tif:
        for ds in (1, 4):
            tif.write(np.ascontiguousarray(image[::ds, ::ds]), tile=(128, 128), photometric="rgb",
                      compression="zlib", subfiletype=1 if ds > 1 else 0)  # fmt: skip
    return path


def test_every_tile_of_a_one_level_slide_is_read_within_a_single_read(
    one_level: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Low-zoom tiles come from the added levels: no read of the slide itself ever exceeds
    SINGLE_READ_PIXELS, and the tiles show what OpenSlide's generator shows reading the whole
    level each time."""
    source = open_deepzoom(one_level)
    reference = DeepZoomGenerator(openslide.OpenSlide(str(one_level)), TILE_SIZE, TILE_OVERLAP)
    reads: list[int] = []
    base_read = source.base.read_region

    def recording(location: tuple[int, int], level: int, size: tuple[int, int]) -> Image.Image:
        reads.append(size[0] * size[1])
        return base_read(location, level, size)

    monkeypatch.setattr(source.base, "read_region", recording)
    assert source.generator.level_tiles == reference.level_tiles
    for level in range(reference.level_count):
        cols, rows = reference.level_tiles[level]
        for col, row in {(0, 0), (cols - 1, rows - 1)}:
            tile = _pixels(source.tile_jpeg(level, col, row))
            expected = _pixels(_jpeg(reference.get_tile(level, (col, row))))
            assert tile.shape == expected.shape
            if min(tile.shape[:2]) >= 8:  # a 1-px average weighs the cells differently
                assert np.abs(tile - expected).mean() < 3, (level, col, row)
    assert reads and max(reads) <= SINGLE_READ_PIXELS
    assert source.bounded.level_count > source.bounded.own_levels
    assert 0 < source.bounded.added_bytes() <= OVERVIEW_PIXELS * 3 * 4 // 3 + 1
    source.close()


def test_tiles_in_a_gap_of_the_pyramid_are_read_in_bands_or_refused(
    disc_slide_small: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the bounds shrunk: a full-resolution tile (512² px) is read in bands, a tile two
    Deep Zoom level down (1022² px of level 0) is refused with one line."""
    monkeypatch.setattr(sources, "SINGLE_READ_PIXELS", 100_000)
    monkeypatch.setattr(sources, "MAX_TILE_SOURCE_PIXELS", 600_000)
    source = open_deepzoom(disc_slide_small)
    top = source.generator.level_count - 1
    direct = source.generator.get_tile(top, (0, 0))
    banded = _pixels(source.tile_jpeg(top, 0, 0))
    assert np.abs(banded - np.asarray(direct).astype(int)).mean() < 3
    with pytest.raises(SlideError) as info:
        source.tile_jpeg(top - 1, 0, 0)
    assert info.value.problem == (
        f"tile {top - 1}/0_0 would resample 1,044,484 px of level 0 (at most 600,000): the "
        "slide has no level near this zoom"
    )
    source.close()


def test_a_slide_too_large_to_resample_is_refused_by_page_and_tiles(
    tmp_path: Path, one_level: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "MAX_OVERVIEW_SOURCE_PIXELS", 1_000_000)
    root = tmp_path / "root"
    root.mkdir()
    path = root / "one.tiff"
    path.write_bytes(one_level.read_bytes())
    problem = (
        "its coarsest level is 3072x2048 px, more than the 1,000,000 px the viewer resamples "
        "for low zoom (convert it to a tiled pyramidal TIFF)"
    )
    with pytest.raises(SlideError) as info:
        cached_ui.slide(path)
    assert info.value.problem == problem
    registry = SlideRegistry()
    key = registry.register_slide(path, [root], (3072, 2048))
    client = TestClient(Starlette(routes=TileService(registry).routes()))
    response = client.get(f"/hmil/dz/{key}_files/0/0_0.jpeg")
    assert 400 <= response.status_code < 500 and problem in response.text


def test_pages_and_tiles_share_one_slide_handle(tmp_path: Path, one_level: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    path = root / "one.tiff"
    path.write_bytes(one_level.read_bytes())
    registry = SlideRegistry()
    service = TileService(registry)
    key = registry.register_slide(path, [root], (3072, 2048))
    source = service.source(key)
    assert source is not None and source.slide is cached_ui.slide(path) is cached_slide(path)
    assert not source.owns_slide


def test_crops_are_bounded_and_fall_back_to_the_swatch(
    one_level: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_slide(one_level) as slide:
        region = Region(100, 200, 512, 512)
        assert (
            read_bounded(slide, region, (128, 128)) == slide.read_rect(region, (128, 128))
        ).all()
        monkeypatch.setattr(sources, "MAX_TILE_SOURCE_PIXELS", 1_000_000)
        with pytest.raises(SlideError, match=r"a 128x128 px picture of 2048x2048 level-0 px"):
            read_bounded(slide, Region(0, 0, 2048, 2048), (128, 128))
    result = SimpleNamespace(coords=np.array([[0, 0]]), patch_size=2048)
    crop = cached_ui.patch_crop(cached_ui.slide(one_level), result, 0, 64)  # type: ignore[arg-type]
    assert crop.shape == (64, 64, 3) and (crop == crop[0, 0]).all()  # the score's swatch


def test_the_read_budget_bounds_pixels_in_flight() -> None:
    budget = sources._PixelBudget(100)
    in_flight, peak, lock = [0], [0], threading.Lock()

    def read(pixels: int) -> None:
        with budget.hold(pixels):
            with lock:
                in_flight[0] += min(pixels, 100)
                peak[0] = max(peak[0], in_flight[0])
            time.sleep(0.01)
            with lock:
                in_flight[0] -= min(pixels, 100)

    threads = [threading.Thread(target=read, args=(p,)) for p in [40] * 12 + [500, 30, 30]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] <= 100 and in_flight[0] == 0


class _Sized:
    def __init__(self, size: int) -> None:
        self.size = size


def test_the_resident_cache_is_bounded_in_bytes() -> None:
    opened: list[str] = []

    def open_(key: str) -> _Sized:
        opened.append(key)
        return _Sized(int(key.split(":")[1]))

    cache = ResidentCache(open_, 100, lambda v: v.size)
    a, b = cache("a:40"), cache("b:40")
    assert cache("a:40") is a and opened == ["a:40", "b:40"]
    cache("c:40")  # 120 > 100: the least recently used (b) goes
    assert "b:40" not in cache and "a:40" in cache and cache.total_bytes() == 80
    a.size = 90  # grew after it was stored: measured again at the next access
    cache("a:40")
    assert "c:40" not in cache and len(cache) == 1
    huge = cache("d:500")  # over the budget alone: kept while it is the one in use
    assert "d:500" in cache and len(cache) == 1 and huge.size == 500
    assert b.size == 40  # dropped entries are not closed or changed


def test_the_resident_cache_opens_a_key_once_and_does_not_keep_failures() -> None:
    calls: list[str] = []

    def slow_open(key: str) -> _Sized:
        calls.append(key)
        time.sleep(0.05)
        if key == "bad":
            raise SlideError(key, "unreadable")
        return _Sized(1)

    cache = ResidentCache(slow_open, 100, lambda v: v.size)
    threads = [threading.Thread(target=cache, args=("k",)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["k"]
    for _ in range(2):
        with pytest.raises(SlideError):
            cache("bad")
    assert calls == ["k", "bad", "bad"] and "bad" not in cache
