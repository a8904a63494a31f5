"""A minimal writer of pyramidal, tiled, JPEG-compressed TIFFs that OpenSlide opens.

Why not tifffile: its JPEG encoder needs the optional ``imagecodecs`` package (tens of MB), and
it refuses pre-encoded JPEG tiles without it. Pillow (already a dependency) encodes each tile as
a complete baseline JPEG stream (YCbCr, 4:2:0), which libtiff and OpenSlide read as TIFF
compression 7 with ``PhotometricInterpretation = YCbCr``; writing the TIFF structure around
those tiles is a few dozen lines.

Layout: classic little-endian TIFF, one IFD per pyramid level in order (level 0 first, then
each reduced level with ``NewSubfileType = 1``), image data before each IFD. An Aperio-style
``ImageDescription`` (``Aperio ...|AppMag = 20|MPP = 0.5``) on level 0 makes OpenSlide report
``openslide.mpp-x`` and ``openslide.objective-power``; resolution tags carry the same MPP for
readers that use them.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np
from PIL import Image

from hmil.io import atomic_path

# TIFF field types
_ASCII, _SHORT, _LONG, _RATIONAL = 2, 3, 4, 5
_FORMAT = {_SHORT: "H", _LONG: "I"}

# tag codes
_NEW_SUBFILE_TYPE = 254
_IMAGE_WIDTH = 256
_IMAGE_LENGTH = 257
_BITS_PER_SAMPLE = 258
_COMPRESSION = 259
_PHOTOMETRIC = 262
_IMAGE_DESCRIPTION = 270
_SAMPLES_PER_PIXEL = 277
_X_RESOLUTION = 282
_Y_RESOLUTION = 283
_PLANAR_CONFIGURATION = 284
_RESOLUTION_UNIT = 296
_SOFTWARE = 305
_TILE_WIDTH = 322
_TILE_LENGTH = 323
_TILE_OFFSETS = 324
_TILE_BYTE_COUNTS = 325
_YCBCR_SUBSAMPLING = 530

_COMPRESSION_JPEG = 7
_PHOTOMETRIC_YCBCR = 6
_RESUNIT_CENTIMETER = 3

Tag = tuple[int, int, "Sequence[int] | Sequence[tuple[int, int]] | str"]


def aperio_description(
    width: int, height: int, tile: int, quality: int, mpp: float, magnification: float, note: str
) -> str:
    """An Aperio-style ``ImageDescription``; OpenSlide parses the ``key = value`` fields.

    ``note`` goes into the free-text first line and into a ``Synthetic`` field so every reader
    (OpenSlide shows ``aperio.Synthetic``) sees that the slide is not a real scan.
    """
    return (
        f"Aperio Image Library (not an Aperio scan) {note}\r\n"
        f"{width}x{height} [0,0 {width}x{height}] ({tile}x{tile}) JPEG/RGB Q={quality}"
        f"|AppMag = {magnification:g}|MPP = {mpp:g}|Synthetic = {note}"
    )


def write_pyramid_tiff(
    path: str | Path,
    levels: Sequence[np.ndarray],
    *,
    mpp: float,
    description: str,
    tile: int = 256,
    quality: int = 80,
    software: str = "hmil demo",
) -> None:
    """Write RGB pyramid ``levels`` (level 0 first) as one tiled JPEG TIFF, atomically.

    Args:
        path: output file (``.tiff``).
        levels: ``(H_l, W_l, 3)`` uint8 arrays, each a downsample of level 0 (any factor).
        mpp: microns per pixel of level 0 (each level's resolution tag is scaled by its size).
        description: ``ImageDescription`` of level 0 (see :func:`aperio_description`).
        tile: tile edge in pixels, a multiple of 16 (JPEG MCU with 4:2:0 subsampling).
        quality: JPEG quality of every tile.
    """
    if not levels:
        raise ValueError("levels must hold at least level 0")
    if tile % 16:
        raise ValueError(f"tile must be a multiple of 16, got {tile}")
    width0 = levels[0].shape[1]
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(b"II*\x00" + struct.pack("<I", 0))
        next_ifd_pointer = 4
        for index, image in enumerate(levels):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"level {index} must be (H, W, 3) uint8, got {image.shape}")
            offsets, counts = _write_tiles(handle, image, tile, quality)
            height, width = image.shape[:2]
            pixels_per_cm = 1e4 / mpp * width / width0
            resolution = [(round(pixels_per_cm * 1000), 1000)]
            tags: list[Tag] = [
                (_NEW_SUBFILE_TYPE, _LONG, [0 if index == 0 else 1]),
                (_IMAGE_WIDTH, _LONG, [width]),
                (_IMAGE_LENGTH, _LONG, [height]),
                (_BITS_PER_SAMPLE, _SHORT, [8, 8, 8]),
                (_COMPRESSION, _SHORT, [_COMPRESSION_JPEG]),
                (_PHOTOMETRIC, _SHORT, [_PHOTOMETRIC_YCBCR]),
                (_IMAGE_DESCRIPTION, _ASCII, description),
                (_SAMPLES_PER_PIXEL, _SHORT, [3]),
                (_X_RESOLUTION, _RATIONAL, resolution),
                (_Y_RESOLUTION, _RATIONAL, resolution),
                (_PLANAR_CONFIGURATION, _SHORT, [1]),
                (_RESOLUTION_UNIT, _SHORT, [_RESUNIT_CENTIMETER]),
                (_SOFTWARE, _ASCII, software),
                (_TILE_WIDTH, _LONG, [tile]),
                (_TILE_LENGTH, _LONG, [tile]),
                (_TILE_OFFSETS, _LONG, offsets),
                (_TILE_BYTE_COUNTS, _LONG, counts),
                (_YCBCR_SUBSAMPLING, _SHORT, [2, 2]),
            ]
            ifd_offset, pointer = _write_ifd(handle, tags)
            handle.seek(next_ifd_pointer)
            handle.write(struct.pack("<I", ifd_offset))
            handle.seek(0, io.SEEK_END)
            next_ifd_pointer = pointer
        if handle.tell() >= 2**32:
            raise ValueError("slide too large for a classic TIFF (4 GiB)")


def _write_tiles(
    handle: BinaryIO, image: np.ndarray, tile: int, quality: int
) -> tuple[list[int], list[int]]:
    """Encode ``image`` row-major in ``tile``² JPEG tiles (edge tiles padded white)."""
    height, width = image.shape[:2]
    offsets: list[int] = []
    counts: list[int] = []
    buffer = io.BytesIO()
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            block = image[y : y + tile, x : x + tile]
            if block.shape[:2] != (tile, tile):
                padded = np.full((tile, tile, 3), 255, dtype=np.uint8)
                padded[: block.shape[0], : block.shape[1]] = block
                block = padded
            buffer.seek(0)
            buffer.truncate()
            Image.fromarray(np.ascontiguousarray(block)).save(
                buffer, format="JPEG", quality=quality, subsampling=2
            )
            offsets.append(handle.tell())
            counts.append(handle.write(buffer.getvalue()))
    return offsets, counts


def _pack(field_type: int, values: Sequence[int] | Sequence[tuple[int, int]] | str) -> bytes:
    if field_type == _ASCII:
        assert isinstance(values, str)
        return values.encode("ascii", errors="replace") + b"\x00"
    if field_type == _RATIONAL:
        pairs = cast(Sequence[tuple[int, int]], values)  # RATIONAL values are (num, den) pairs
        return b"".join(struct.pack("<II", num, den) for num, den in pairs)
    return struct.pack(f"<{len(values)}{_FORMAT[field_type]}", *values)


def _write_ifd(handle: BinaryIO, tags: list[Tag]) -> tuple[int, int]:
    """Write out-of-line values, then the IFD; return (IFD offset, offset of its next pointer)."""
    entries: list[bytes] = []
    for code, field_type, values in sorted(tags, key=lambda t: t[0]):
        data = _pack(field_type, values)
        count = len(data) if field_type == _ASCII else len(values)
        if len(data) <= 4:
            value_field = data.ljust(4, b"\x00")
        else:
            if handle.tell() % 2:
                handle.write(b"\x00")
            value_field = struct.pack("<I", handle.tell())
            handle.write(data)
        entries.append(struct.pack("<HHI", code, field_type, count) + value_field)
    if handle.tell() % 2:
        handle.write(b"\x00")
    ifd_offset = handle.tell()
    handle.write(struct.pack("<H", len(entries)))
    handle.write(b"".join(entries))
    pointer = handle.tell()
    handle.write(struct.pack("<I", 0))
    return ifd_offset, pointer
