"""Helpers for the slide tests: small SYNTHETIC pyramidal TIFFs written with tifffile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

#: colours of the synthetic slides: near-white glass and an H&E-like pink/purple disc
GLASS = (242, 240, 244)
TISSUE = (196, 96, 168)


def write_pyramid_tiff(
    path: Path,
    image: np.ndarray,
    downsamples: tuple[int, ...] = (1, 2, 4),
    mpp: float | None = 0.5,
    tile: int = 128,
) -> Path:
    """Tiled, zlib-compressed pyramidal RGB TIFF that OpenSlide reads as ``generic-tiff``."""
    options: dict[str, object] = {"tile": (tile, tile), "photometric": "rgb", "compression": "zlib"}
    if mpp is not None:
        options.update(resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
    with tifffile.TiffWriter(path) as writer:
        for i, ds in enumerate(downsamples):
            writer.write(
                np.ascontiguousarray(image[::ds, ::ds]), subfiletype=0 if i == 0 else 1, **options
            )
    return path


def disc_image(width: int = 1536, height: int = 1024, radius: int = 350) -> np.ndarray:
    """``(H, W, 3)`` uint8: glass with one tissue disc centred at (700, 500)."""
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = GLASS
    yy, xx = np.mgrid[:height, :width]
    image[(yy - 500) ** 2 + (xx - 700) ** 2 < radius**2] = TISSUE
    return image
