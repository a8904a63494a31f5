"""Deep Zoom pyramid geometry from the level-0 size alone (pure, no file access).

The same pyramid ``openslide.deepzoom.DeepZoomGenerator`` builds without ``limit_bounds``: level
``L-1`` is level 0 of the slide, each level above halves it (rounding up) down to 1 × 1 px.
The tile routes use it to refuse an out-of-range level or tile before anything is opened, and
to place server-rendered overlay tiles exactly over the slide's tiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from hmil.slides.reader import Region

#: tile side without overlap: 510 + 2 × 1 overlap = 512 px tiles. 256-px tiles made the demo
#: slide's first view 39 requests (0.4–0.5 s of a 2.2 s first render on 2 cores); 512-px ones
#: make it 14 (0.1–0.2 s), and real slides stay within the cold-tile goal (viewer benchmark)
TILE_SIZE = 510
TILE_OVERLAP = 1


@dataclass(frozen=True)
class DeepZoomGeometry:
    """Levels and tiles of the Deep Zoom pyramid of a ``width × height`` level-0 image."""

    width: int
    height: int
    tile_size: int = TILE_SIZE
    overlap: int = TILE_OVERLAP

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError(f"empty image {self.width}x{self.height}")
        if self.tile_size < 1 or self.overlap < 0:
            raise ValueError(f"bad tiling {self.tile_size}+{self.overlap}")

    @cached_property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """``(w, h)`` per Deep Zoom level, 1 × 1 first, level 0 of the slide last."""
        size = (self.width, self.height)
        dims = [size]
        while size[0] > 1 or size[1] > 1:
            size = (max(1, math.ceil(size[0] / 2)), max(1, math.ceil(size[1] / 2)))
            dims.append(size)
        return tuple(reversed(dims))

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @cached_property
    def level_tiles(self) -> tuple[tuple[int, int], ...]:
        """``(cols, rows)`` per level."""
        t = self.tile_size
        return tuple((math.ceil(w / t), math.ceil(h / t)) for w, h in self.level_dimensions)

    def contains(self, level: int, col: int, row: int) -> bool:
        if not 0 <= level < self.level_count:
            return False
        cols, rows = self.level_tiles[level]
        return 0 <= col < cols and 0 <= row < rows

    def downsample(self, level: int) -> float:
        """Level-0 pixels per pixel of Deep Zoom ``level``."""
        return float(2 ** (self.level_count - 1 - level))

    def tile_region(self, level: int, col: int, row: int) -> tuple[Region, tuple[int, int]]:
        """The level-0 rectangle tile ``(col, row)`` of ``level`` shows (overlap included) and
        the tile's pixel size ``(w, h)``."""
        if not self.contains(level, col, row):
            raise ValueError(f"no tile {level}/{col}_{row}")
        w, h = self.level_dimensions[level]
        t, o = self.tile_size, self.overlap
        x0, y0 = col * t - (o if col else 0), row * t - (o if row else 0)
        x1, y1 = min(w, (col + 1) * t + o), min(h, (row + 1) * t + o)
        ds = self.downsample(level)
        region = Region(x0 * ds, y0 * ds, (x1 - x0) * ds, (y1 - y0) * ds)
        return region, (x1 - x0, y1 - y0)

    def dzi(self, fmt: str) -> str:
        """The ``.dzi`` XML descriptor with tiles in ``fmt`` (``jpeg`` or ``png``)."""
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="{fmt}" '
            f'Overlap="{self.overlap}" TileSize="{self.tile_size}">'
            f'<Size Height="{self.height}" Width="{self.width}"/></Image>'
        )
