"""A slide as a Deep Zoom pyramid: ``openslide.deepzoom.DeepZoomGenerator`` for every reader.

OpenSlide files get the generator over ``openslide.OpenSlide`` itself (its own tile cache and
region reads). Files only the project's tifffile/Pillow fallbacks read are wrapped in
:class:`ReaderSlide`, an ``openslide.AbstractSlide`` over :class:`hmil.slides.reader.Slide`,
so the same generator (same DZI geometry, same tile addressing) serves them too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openslide
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

from hmil.slides.reader import Slide, open_slide
from viewer.tiles.geometry import TILE_OVERLAP, TILE_SIZE

TILE_FORMAT = "jpeg"
JPEG_QUALITY = 80


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
        alpha = np.full((*rgb.shape[:2], 1), 255, dtype=np.uint8)
        return Image.fromarray(np.concatenate([rgb, alpha], axis=2), mode="RGBA")


@dataclass
class DeepZoomSource:
    """One open slide and its Deep Zoom generator.

    Attributes:
        path: the resolved slide file.
        generator: the ``DeepZoomGenerator`` (tiles ``TILE_SIZE`` + overlap, JPEG).
        slide: the project's reader handle (dimensions, MPP, backend name).
    """

    path: Path
    generator: DeepZoomGenerator
    slide: Slide

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

    def tile_jpeg(self, level: int, col: int, row: int) -> bytes:
        """The JPEG bytes of one tile (the caller checked :meth:`has_tile`)."""
        import io

        tile = self.generator.get_tile(level, (col, row))
        buf = io.BytesIO()
        tile.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
        return buf.getvalue()

    def close(self) -> None:
        self.slide.close()
        osr = getattr(self.generator, "_osr", None)
        if isinstance(osr, openslide.OpenSlide):
            osr.close()


def open_deepzoom(path: Path) -> DeepZoomSource:
    """Open ``path`` with the project's reader and build its Deep Zoom generator.

    Raises:
        SlideError: the file is not a readable slide.
    """
    slide = open_slide(path)
    if slide.backend == "openslide":
        osr: openslide.AbstractSlide = openslide.OpenSlide(str(path))
    else:
        osr = ReaderSlide(slide)
    generator = DeepZoomGenerator(osr, tile_size=TILE_SIZE, overlap=TILE_OVERLAP)
    return DeepZoomSource(path=path, generator=generator, slide=slide)
