"""A slide as a Deep Zoom pyramid: ``openslide.deepzoom.DeepZoomGenerator`` for every reader.

OpenSlide files get the generator over ``openslide.OpenSlide`` itself (its own tile cache and
region reads). Files only the project's tifffile/Pillow fallbacks read are wrapped in
:class:`ReaderSlide`, an ``openslide.AbstractSlide`` over :class:`hmil.slides.reader.Slide`,
so the same generator (same DZI geometry, same tile addressing) serves them too.

Memory per tile is bounded by what the tile shows, whatever the file claims. The generator
reads each tile from the coarsest slide level at least as fine as the tile, so a slide without
a pyramid (a one-level TIFF, a PNG) would make every low-zoom tile read and resample its whole
level (3 GB and 10 s for one tile of a 16384² TIFF). :class:`BoundedSlide` therefore adds
power-of-two levels below the slide's coarsest one, built once per open slide by reading that
level in bands (:meth:`Slide.read_rect`); tiles between the slide's levels and those are read in
bands too, and a tile that would still resample more than :data:`MAX_TILE_SOURCE_PIXELS`, or a
slide whose coarsest level is too large to resample at all, is refused with one line. All reads
of the process share one budget of pixels in flight (:data:`READ_BUDGET_PIXELS`), so concurrent
requests cannot add up either.
"""

from __future__ import annotations

import contextlib
import io
import math
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openslide
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

from hmil.errors import SlideError
from hmil.slides.reader import OPENSLIDE_HANDLE_BYTES, Region, Slide, open_slide
from viewer.tiles.geometry import TILE_OVERLAP, TILE_SIZE

TILE_FORMAT = "jpeg"
JPEG_QUALITY = 80
#: level pixels one tile may be resampled from: a 512-px tile from a level 16× finer (~0.5 s of
#: decoding on one core). The added levels keep every tile of a slide whose coarsest level is
#: at most :data:`MAX_OVERVIEW_SOURCE_PIXELS` within it (512² × 2³⁰ / 2²² = 2²⁶); past it a
#: tile falls in a gap of the slide's own pyramid and is refused
MAX_TILE_SOURCE_PIXELS = 1 << 26
#: tiles reading at most this many level pixels (2048², a tile from a level 4× finer; ~70 MB
#: while the generator composites and resamples it) are read in one ``read_region`` call; larger
#: ones in bands of this size, resampled as they go
SINGLE_READ_PIXELS = 1 << 22
#: pixels of the finest added level (2048², 12 MiB as RGB; all added levels together 16 MiB)
OVERVIEW_PIXELS = 1 << 22
#: largest coarsest level the added levels are resampled from (32768², read once per open slide
#: in bands, ~10 s); a slide with a larger one cannot be shown at low zoom and is refused
MAX_OVERVIEW_SOURCE_PIXELS = 1 << 30
#: level pixels all tile reads of the process decode at once (~140 MB at the ~17 bytes per pixel
#: a read holds while OpenSlide's RGBA is composited and resampled); a read waits for its share,
#: so 40 concurrent requests cannot hold 40 large reads
READ_BUDGET_PIXELS = 1 << 23


class _PixelBudget:
    """At most ``limit`` level pixels in flight across threads (a larger read runs alone)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        share = max(1, min(int(pixels), self._limit))
        with self._cond:
            while self._used and self._used + share > self._limit:
                self._cond.wait()
            self._used += share
        try:
            yield
        finally:
            with self._cond:
                self._used -= share
                self._cond.notify_all()


_READS = _PixelBudget(READ_BUDGET_PIXELS)


class ReaderSlide(openslide.AbstractSlide):
    """``openslide.AbstractSlide`` over a :class:`Slide` opened by the tifffile/Pillow fallback."""

    def __init__(self, slide: Slide) -> None:
        super().__init__()
        self._slide = slide

    @classmethod
    def detect_format(cls, filename: object) -> str | None:
        return None

    def close(self) -> None:
        self._slide.close()

    @property
    def level_count(self) -> int:
        return self._slide.level_count

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple(self._slide.level_dimensions)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return tuple(self._slide.level_downsamples)

    @property
    def properties(self) -> Mapping[str, str]:
        return {}

    @property
    def associated_images(self) -> Mapping[str, Image.Image]:
        return {}

    def get_best_level_for_downsample(self, downsample: float) -> int:
        return self._slide.get_best_level_for_downsample(downsample)

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> Image.Image:
        """RGBA like OpenSlide (opaque: the fallbacks already composite over white)."""
        rgb = self._slide.read_region(location, level, size)
        return _opaque_rgba(rgb)


def _opaque_rgba(rgb: np.ndarray) -> Image.Image:
    alpha = np.full((*rgb.shape[:2], 1), 255, dtype=np.uint8)
    return Image.fromarray(np.concatenate([rgb, alpha], axis=2), mode="RGBA")


def added_levels(slide: Slide) -> list[tuple[float, tuple[int, int]]]:
    """``(downsample, (w, h))`` of the levels :class:`BoundedSlide` adds below the slide's own,
    coarsest last; none when its coarsest level is small enough to read whole for one tile.

    The finest is the finest power of two coarser than the slide's coarsest level that holds at
    most :data:`OVERVIEW_PIXELS`; each next one halves it, down to one tile. Powers of two are
    the Deep Zoom levels' own downsamples, so each such level is read 1:1.
    """
    wc, hc = slide.level_dimensions[-1]
    if wc * hc <= SINGLE_READ_PIXELS:
        return []
    w0, h0 = slide.dimensions
    coarsest = slide.level_downsamples[-1]
    d = 2.0 ** max(1, math.floor(math.log2(coarsest * 1.01)) + 1)
    while math.ceil(w0 / d) * math.ceil(h0 / d) > OVERVIEW_PIXELS:
        d *= 2
    levels = [(d, (math.ceil(w0 / d), math.ceil(h0 / d)))]
    while max(levels[-1][1]) > TILE_SIZE + 2 * TILE_OVERLAP:
        d *= 2
        levels.append((d, (math.ceil(w0 / d), math.ceil(h0 / d))))
    return levels


def check_viewable(slide: Slide) -> None:
    """Refuse (SlideError) a slide whose low zoom cannot be read within the bounds: its
    coarsest level has more than :data:`MAX_OVERVIEW_SOURCE_PIXELS` (a one-level image of
    100000² px, say, or a file that only claims that size)."""
    wc, hc = slide.level_dimensions[-1]
    if wc * hc > MAX_OVERVIEW_SOURCE_PIXELS:
        raise SlideError(
            slide.path,
            f"its coarsest level is {wc}x{hc} px, more than the {MAX_OVERVIEW_SOURCE_PIXELS:,} "
            "px the viewer resamples for low zoom (convert it to a tiled pyramidal TIFF)",
        )


def read_bounded(slide: Slide, region: Region, out_size: tuple[int, int]) -> np.ndarray:
    """:meth:`Slide.read_rect` within a tile's bounds, for the pictures the pages draw (patch
    crops): at most :data:`MAX_TILE_SOURCE_PIXELS` level pixels, read in bands of
    :data:`SINGLE_READ_PIXELS` within the shared read budget.

    Raises:
        SlideError: the picture would resample more (a patch far larger than the picture on a
            slide without a level near its scale).
    """
    out_w, out_h = int(out_size[0]), int(out_size[1])
    if out_w <= 0 or out_h <= 0 or region.w <= 0 or region.h <= 0:
        raise SlideError(slide.path, f"invalid region {region} or output size {out_size}")
    level = slide.get_best_level_for_downsample(min(region.w / out_w, region.h / out_h))
    ds = slide.level_downsamples[level]
    lw, lh = slide.level_dimensions[level]
    inside_w = min(region.x + region.w, lw * ds) - max(region.x, 0.0)
    inside_h = min(region.y + region.h, lh * ds) - max(region.y, 0.0)
    pixels = max(0, math.ceil(inside_w / ds)) * max(0, math.ceil(inside_h / ds))
    if pixels > MAX_TILE_SOURCE_PIXELS:
        raise SlideError(
            slide.path,
            f"a {out_w}x{out_h} px picture of {region.w:.0f}x{region.h:.0f} level-0 px would "
            f"resample {pixels:,} px of level {level} (at most {MAX_TILE_SOURCE_PIXELS:,})",
        )
    with _READS.hold(min(pixels, SINGLE_READ_PIXELS)):
        return slide.read_rect(region, (out_w, out_h), band_pixels=SINGLE_READ_PIXELS)


class BoundedSlide(openslide.AbstractSlide):
    """A slide's own levels plus the added ones of :func:`added_levels`, for the generator.

    The added levels are resampled from the slide's coarsest level once, on the first tile that
    needs them (under a lock, within the shared read budget), and then read from memory.
    """

    def __init__(self, base: openslide.AbstractSlide, slide: Slide) -> None:
        super().__init__()
        self._base = base
        self._slide = slide
        self._added = added_levels(slide)
        self._arrays: list[np.ndarray] = []
        self._lock = threading.Lock()

    @classmethod
    def detect_format(cls, filename: object) -> str | None:
        return None

    def close(self) -> None:
        """Drops the added levels; the base slide is closed by its owner."""
        self._arrays = []

    @property
    def own_levels(self) -> int:
        return int(self._base.level_count)

    @property
    def level_count(self) -> int:
        return self.own_levels + len(self._added)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple(self._base.level_dimensions) + tuple(size for _, size in self._added)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return tuple(self._base.level_downsamples) + tuple(d for d, _ in self._added)

    @property
    def properties(self) -> Mapping[str, str]:
        return self._base.properties

    @property
    def associated_images(self) -> Mapping[str, Image.Image]:
        return {}

    def get_best_level_for_downsample(self, downsample: float) -> int:
        best = int(self._base.get_best_level_for_downsample(downsample))
        for i, (d, _) in enumerate(self._added):
            if d <= downsample:
                best = self.own_levels + i
        return best

    def added_bytes(self) -> int:
        return sum(a.nbytes for a in self._arrays)

    def ensure_added(self) -> None:
        """Resample the added levels if not done yet (the finest from the slide, in bands of
        :data:`SINGLE_READ_PIXELS`; each next one halves the previous)."""
        if not self._added or self._arrays:
            return
        with self._lock:
            if self._arrays:
                return
            d, (w, h) = self._added[0]
            with _READS.hold(SINGLE_READ_PIXELS):
                finest = self._slide.read_rect(
                    Region(0, 0, w * d, h * d), (w, h), band_pixels=SINGLE_READ_PIXELS
                )
            arrays = [finest]
            for _, size in self._added[1:]:
                arrays.append(
                    np.asarray(Image.fromarray(arrays[-1]).reduce(2))[: size[1], : size[0]]
                )
            self._arrays = arrays

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> Image.Image:
        if level < self.own_levels:
            return self._base.read_region(location, level, size)
        self.ensure_added()
        index = level - self.own_levels
        arr = self._arrays[index]
        d = self._added[index][0]
        x0, y0 = round(location[0] / d), round(location[1] / d)
        w, h = size
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        H, W = arr.shape[:2]
        sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(W, x0 + w), min(H, y0 + h)
        if sx1 > sx0 and sy1 > sy0:
            out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = arr[sy0:sy1, sx0:sx1]
        return _opaque_rgba(out)


@dataclass
class DeepZoomSource:
    """One open slide and its Deep Zoom generator.

    Attributes:
        path: the resolved slide file.
        generator: the ``DeepZoomGenerator`` (tiles ``TILE_SIZE`` + overlap, JPEG) over
            :attr:`bounded`.
        slide: the project's reader handle (dimensions, MPP, backend name).
        bounded: the slide's levels plus the added low-zoom ones.
        owns_slide: :meth:`close` closes :attr:`slide` (False when it came from a cache).
    """

    path: Path
    generator: DeepZoomGenerator
    slide: Slide
    bounded: BoundedSlide
    base: openslide.AbstractSlide
    owns_slide: bool = True

    @property
    def dzi(self) -> str:
        return self.generator.get_dzi(TILE_FORMAT)

    def has_tile(self, level: int, col: int, row: int) -> bool:
        """True when ``(level, col, row)`` addresses a tile of the pyramid (checked before any
        read)."""
        if not 0 <= level < self.generator.level_count:
            return False
        cols, rows = self.generator.level_tiles[level]
        return 0 <= col < cols and 0 <= row < rows

    def resident_bytes(self) -> int:
        """What this source holds: the slide's own estimate, the added levels, and the second
        OpenSlide handle of the generator."""
        handle = OPENSLIDE_HANDLE_BYTES if isinstance(self.base, openslide.OpenSlide) else 0
        return self.slide.resident_bytes() + self.bounded.added_bytes() + handle

    def tile_jpeg(self, level: int, col: int, row: int) -> bytes:
        """The JPEG bytes of one tile (the caller checked :meth:`has_tile`).

        Raises:
            SlideError: the tile would resample more than :data:`MAX_TILE_SOURCE_PIXELS`, or
                the slide cannot be decoded there.
        """
        try:
            tile = self._tile(level, col, row)
        except openslide.OpenSlideError as exc:
            raise SlideError(self.path, f"cannot decode tile {level}/{col}_{row}: {exc}") from None
        except MemoryError:
            raise SlideError(self.path, f"not enough memory for tile {level}/{col}_{row}") from None
        buf = io.BytesIO()
        tile.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
        return buf.getvalue()

    def _tile(self, level: int, col: int, row: int) -> Image.Image:
        location, slide_level, size = self.generator.get_tile_coordinates(level, (col, row))
        pixels = int(size[0]) * int(size[1])
        if slide_level >= self.bounded.own_levels:
            self.bounded.ensure_added()
        elif pixels > MAX_TILE_SOURCE_PIXELS:
            raise SlideError(
                self.path,
                f"tile {level}/{col}_{row} would resample {pixels:,} px of level {slide_level} "
                f"(at most {MAX_TILE_SOURCE_PIXELS:,}): the slide has no level near this zoom",
            )
        if pixels <= SINGLE_READ_PIXELS or slide_level >= self.bounded.own_levels:
            with _READS.hold(pixels):
                return self.generator.get_tile(level, (col, row))
        ds = self.bounded.level_downsamples[slide_level]
        region = Region(location[0], location[1], size[0] * ds, size[1] * ds)
        out = self.generator.get_tile_dimensions(level, (col, row))
        with _READS.hold(SINGLE_READ_PIXELS):
            rgb = self.slide.read_rect(region, out, band_pixels=SINGLE_READ_PIXELS)
        return Image.fromarray(rgb)

    def close(self) -> None:
        self.bounded.close()
        if isinstance(self.base, openslide.OpenSlide):
            self.base.close()
        if self.owns_slide:
            self.slide.close()


def open_deepzoom(path: Path, slide: Slide | None = None) -> DeepZoomSource:
    """Open ``path`` with the project's reader (or use the open ``slide`` of it, which the
    source then does not close) and build its Deep Zoom generator.

    Raises:
        SlideError: the file is not a readable slide, or its low zoom cannot be bounded
            (:func:`check_viewable`).
    """
    owns = slide is None
    handle = open_slide(path) if slide is None else slide
    try:
        check_viewable(handle)
        base: openslide.AbstractSlide
        if handle.backend == "openslide":
            try:
                base = openslide.OpenSlide(str(path))
            except openslide.OpenSlideError as exc:
                raise SlideError(path, f"cannot open the slide: {exc}") from None
        else:
            base = ReaderSlide(handle)
    except SlideError:
        if owns:
            handle.close()
        raise
    bounded = BoundedSlide(base, handle)
    generator = DeepZoomGenerator(bounded, tile_size=TILE_SIZE, overlap=TILE_OVERLAP)
    return DeepZoomSource(path, generator, handle, bounded, base, owns)
