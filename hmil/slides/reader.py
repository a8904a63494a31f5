"""One reader interface for every slide: OpenSlide first, tifffile and Pillow as fallbacks.

OpenSlide (through the ``openslide-bin`` wheel, no system package) reads the vendor formats
(SVS, NDPI, MRXS, SCN, ...) and tiled pyramidal TIFFs. Files it does not recognise — stripped
TIFFs, PNG/JPEG exports — are opened by tifffile (uncompressed TIFFs are memory-mapped) or
Pillow. Whatever the backend, a :class:`Slide` exposes the same things: level dimensions and
downsamples, microns per pixel and objective power when the file states them, ``read_region``
returning ``(h, w, 3)`` uint8 RGB arrays (areas outside the scan are white), and thumbnails.

Every failure to open or decode raises :class:`hmil.errors.SlideError` naming the file. Opening
decodes a small probe region, so a file whose tiles cannot be decoded is rejected at once rather
than in the middle of a long job.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from hmil.errors import SlideError

#: microns-per-pixel values outside this range are resolution tags of non-microscopy images
#: (e.g. 72 dpi = 352.8 µm/px) and are treated as unknown
PLAUSIBLE_MPP = (0.05, 20.0)
#: largest region one ``read_region`` call may return (pixels): 8192² px, 192 MiB as RGB (and
#: 256 MiB while OpenSlide hands it over as RGBA). Larger areas go through
#: :meth:`Slide.read_rect`, which reads them in bands and resamples as it goes.
MAX_REGION_PIXELS = 1 << 26
#: level pixels decoded at once by :meth:`Slide.read_rect` (bounds memory for big thumbnails:
#: ~0.2 GB per band with OpenSlide's RGBA buffer and its RGB copy)
BAND_PIXELS = 1 << 24
#: pixels the tifffile and Pillow fallbacks may decode per file (all levels together). They
#: cannot decode part of a stripped TIFF or a PNG/JPEG, so a level is decoded whole and held while
#: the slide is open. 2²⁵ px (e.g. 8192 × 4096) holds at most 128 MiB for 8-bit images (4 bytes
#: per pixel with alpha) and needs ~0.25 GB while Pillow decodes it, so one upload stays well
#: inside the viewer's 1.5 GB budget; Pillow's own limit (179 M px) let a 0.5 MB PNG take 3 GB.
#: Larger images need OpenSlide (a tiled pyramidal TIFF), which reads only what is shown.
MAX_DECODED_PIXELS = 1 << 25
#: what caches count for an open OpenSlide handle (its tile tables; OpenSlide's tile cache is
#: shared by all handles): 1.2 MB measured per handle of the test slides, ×3 for large slides
OPENSLIDE_HANDLE_BYTES = 4 << 20
#: pixels composited over white at a time (bounds the float32 temporaries to ~30 MB)
_COMPOSITE_PIXELS = 1 << 20


class SlideBackend(Protocol):
    """What a file-format backend provides; :class:`Slide` adds the common logic on top."""

    name: str
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float | None
    objective_power: float | None
    bounds: Region | None

    def read(
        self,
        location: tuple[int, int],
        level: int,
        size: tuple[int, int],
        composite: bool = True,
    ) -> np.ndarray:
        """``(h, w, 3)`` uint8 RGB of ``size`` level pixels whose top-left is ``location``
        (level-0 pixels). ``composite``: transparent areas and areas outside the image are
        white; else the alpha channel is dropped (they are black, as ``PIL .convert("RGB")``
        of an OpenSlide region gives). Raises SlideError."""
        ...

    def resident_bytes(self) -> int:
        """Memory the open file holds (decoded levels fully, a handle a fixed estimate)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Region:
    """A rectangle in level-0 pixels: top-left ``(x, y)`` and size ``(w, h)``."""

    x: float
    y: float
    w: float
    h: float


class Slide:
    """An open slide (use as a context manager or call :meth:`close`).

    Attributes:
        path: the file.
        slide_id: file name without its extension (``.ome.tiff`` counts as one extension).
        backend: ``"openslide"``, ``"tifffile"`` or ``"pillow"``.
        level_dimensions: ``(width, height)`` per level, level 0 first.
        level_downsamples: level-0 pixels per level pixel, per level (level 0 is 1.0).
        mpp: microns per level-0 pixel, or None when the file does not state a plausible one.
        objective_power: scanner objective magnification of level 0, or None.
        bounds: the scanned area in level-0 pixels when the file states one (OpenSlide's
            ``openslide.bounds-*``, e.g. MRXS), else None. Level-0 coordinates (what CLAM,
            TRIDENT and hmil store) include its offset; QuPath shows the slide cropped to it, so
            its coordinates are level-0 minus ``(bounds.x, bounds.y)`` (:attr:`offset`).
    """

    def __init__(self, path: Path, backend: SlideBackend) -> None:
        self.path = path
        self.slide_id = slide_id_from_path(path)
        self._backend = backend
        self.backend = backend.name
        self.level_dimensions = backend.level_dimensions
        self.level_downsamples = backend.level_downsamples
        self.mpp = backend.mpp
        self.objective_power = backend.objective_power
        self.bounds = getattr(backend, "bounds", None)

    @property
    def offset(self) -> tuple[int, int]:
        """Level-0 ``(x, y)`` of the scanned area's corner: subtract it for QuPath coordinates."""
        if self.bounds is None:
            return (0, 0)
        return (int(self.bounds.x), int(self.bounds.y))

    @property
    def scanned_region(self) -> Region:
        """The level-0 rectangle worth tiling: the bounds, or the whole level 0."""
        if self.bounds is not None:
            return self.bounds
        w, h = self.dimensions
        return Region(0, 0, w, h)

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(width, height)``."""
        return self.level_dimensions[0]

    @property
    def magnification(self) -> float | None:
        """Level-0 magnification: the objective power, else ``10 / mpp`` (0.25 µm/px ≈ 40×)."""
        if self.objective_power is not None:
            return self.objective_power
        if self.mpp is not None:
            return 10.0 / self.mpp
        return None

    def get_best_level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose downsample is ≤ ``downsample`` (+1 % tolerance)."""
        best = 0
        for level, ds in enumerate(self.level_downsamples):
            if ds <= downsample * 1.01:
                best = level
        return best

    def read_region(
        self,
        location: tuple[int, int],
        level: int,
        size: tuple[int, int],
        *,
        composite: bool = True,
    ) -> np.ndarray:
        """Read ``size = (w, h)`` pixels of ``level`` whose top-left is ``location`` (level 0).

        Args:
            composite: True: outside the slide (and transparent areas) is white, for display.
                False: the alpha channel is dropped, as CLAM/TRIDENT read patches for their
                encoders (``read_region(...).convert("RGB")``; outside the scan is black).

        Returns:
            ``(h, w, 3)`` uint8 RGB.
        """
        if not 0 <= level < self.level_count:
            raise SlideError(self.path, f"level {level} does not exist (0..{self.level_count - 1})")
        w, h = int(size[0]), int(size[1])
        if w <= 0 or h <= 0 or w * h > MAX_REGION_PIXELS:
            raise SlideError(self.path, f"invalid region size {w}x{h}")
        xy = (int(location[0]), int(location[1]))
        if composite:  # the display path calls backends exactly as before
            return self._backend.read(xy, level, (w, h))
        return self._backend.read(xy, level, (w, h), composite=False)

    def resident_bytes(self) -> int:
        """What this open slide holds in memory, for caches bounded in bytes: decoded levels
        of the tifffile/Pillow fallbacks count fully, an OpenSlide handle
        :data:`OPENSLIDE_HANDLE_BYTES`."""
        return int(self._backend.resident_bytes())

    def read_rect(
        self, region: Region, out_size: tuple[int, int], band_pixels: int = BAND_PIXELS
    ) -> np.ndarray:
        """Resample a level-0 rectangle to ``out_size = (W, H)`` pixels.

        Reads from the coarsest level that is still at least as fine as the output and decodes
        it in horizontal bands of at most ``band_pixels`` level pixels (at least one output
        row), so a thumbnail of a 100k-pixel-wide slide never holds a whole level in memory.

        Returns:
            ``(H, W, 3)`` uint8 RGB.
        """
        out_w, out_h = int(out_size[0]), int(out_size[1])
        if out_w <= 0 or out_h <= 0 or region.w <= 0 or region.h <= 0:
            raise SlideError(self.path, f"invalid region {region} or output size {out_size}")
        scale = min(region.w / out_w, region.h / out_h)
        level = self.get_best_level_for_downsample(scale)
        lds = self.level_downsamples[level]
        level_w = region.w / lds
        level_rows_per_out_row = region.h / lds / out_h
        band = max(1, int(band_pixels / max(1.0, (level_w + 2) * level_rows_per_out_row)))
        out = np.empty((out_h, out_w, 3), dtype=np.uint8)
        for r0 in range(0, out_h, band):
            r1 = min(out_h, r0 + band)
            # level-pixel box of output rows [r0, r1), relative to the region's top-left
            fx0, fx1 = region.x / lds, (region.x + region.w) / lds
            fy0 = (region.y + region.h * r0 / out_h) / lds
            fy1 = (region.y + region.h * r1 / out_h) / lds
            ix0, iy0 = math.floor(fx0), math.floor(fy0)
            ix1, iy1 = max(ix0 + 1, math.ceil(fx1)), max(iy0 + 1, math.ceil(fy1))
            pixels = self.read_region(
                (round(ix0 * lds), round(iy0 * lds)), level, (ix1 - ix0, iy1 - iy0)
            )
            img = Image.fromarray(pixels)
            box = (fx0 - ix0, fy0 - iy0, fx1 - ix0, fy1 - iy0)
            resized = img.resize((out_w, r1 - r0), Image.Resampling.BILINEAR, box=box)
            out[r0:r1] = np.asarray(resized)
        return out

    def thumbnail(self, max_size: int) -> np.ndarray:
        """The whole slide with its longer side ``max_size`` px (never upsampled).

        Returns:
            ``(H, W, 3)`` uint8 RGB.
        """
        w, h = self.dimensions
        out = fit_size(w, h, max_size)
        return self.read_rect(Region(0, 0, w, h), out)

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Slide({self.slide_id!r}, backend={self.backend}, dims={self.dimensions}, "
            f"levels={self.level_count}, mpp={self.mpp}, power={self.objective_power})"
        )


def trident_best_level(slide: Slide, downsample: float, tolerance: float = 0.1) -> int:
    """TRIDENT's ``get_best_level_and_custom_downsample`` level (its patcher's tolerance 0.1):
    the level whose downsample is within ``tolerance`` of ``downsample``, else the coarsest
    level not coarser than it."""
    downsamples = slide.level_downsamples
    for level, ds in enumerate(downsamples):
        if abs(ds - downsample) <= tolerance:
            return level
    best = 0
    for level, ds in enumerate(downsamples):
        if ds <= downsample:
            best = level
    return best


def fit_size(width: float, height: float, max_size: int) -> tuple[int, int]:
    """``(W, H)`` with the aspect of ``width × height`` and longer side ≤ ``max_size`` (≥ 1 px)."""
    scale = min(1.0, max_size / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def slide_id_from_path(path: str | Path) -> str:
    """The slide id of a file: its name without extension (``x.ome.tiff`` → ``x``)."""
    name = Path(path).name
    lower = name.lower()
    for double in (".ome.tiff", ".ome.tif"):
        if lower.endswith(double):
            return name[: -len(double)]
    return Path(name).stem


def open_slide(path: str | Path) -> Slide:
    """Open a slide with the first backend that can read it.

    Order: OpenSlide, then tifffile, then Pillow. A file OpenSlide recognises as a vendor format
    (Aperio, Hamamatsu, ...) but cannot decode is rejected rather than handed to a fallback that
    might decode garbage. Every backend must decode a small probe region before it is accepted.
    An image the fallbacks would have to decode beyond :data:`MAX_DECODED_PIXELS` is refused
    from its header, before anything is decoded.

    Raises:
        SlideError: naming the file, when it is missing, empty, or no backend can read it.
    """
    p = Path(path)
    if not p.exists():
        raise SlideError(p, "slide file not found")
    if p.is_file() and p.stat().st_size == 0:
        raise SlideError(p, "empty file")
    failures: list[str] = []
    for name, opener in _BACKENDS:
        try:
            backend = opener(p)
        except _BackendFailure as exc:
            if exc.final:
                raise SlideError(p, str(exc)) from None
            failures.append(f"{name}: {exc}")
            continue
        except TooLargeError:
            raise
        except SlideError as exc:
            failures.append(f"{name}: {exc.problem}")
            continue
        slide = Slide(p, backend)
        try:
            _probe(slide)
        except SlideError as exc:
            slide.close()
            if isinstance(exc, TooLargeError):
                raise
            if backend.name == "openslide" and _openslide_vendor(p) not in (None, "generic-tiff"):
                raise SlideError(p, f"cannot decode slide tiles ({exc.problem})") from None
            failures.append(f"{name}: {exc.problem}")
            continue
        return slide
    raise SlideError(p, "not a readable slide (" + "; ".join(failures) + ")")


class _BackendFailure(Exception):
    """A backend cannot open the file; ``final`` stops :func:`open_slide` from trying others."""

    def __init__(self, message: str, final: bool = False) -> None:
        super().__init__(message)
        self.final = final


def _probe(slide: Slide) -> None:
    """Decode a small region of the coarsest level so that broken tiles fail at open time."""
    level = slide.level_count - 1
    w, h = slide.level_dimensions[level]
    slide.read_region((0, 0), level, (min(w, 64), min(h, 64)))


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0][:200] if text else type(exc).__name__).rstrip(".")


def _plausible_mpp(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    lo, hi = PLAUSIBLE_MPP
    return float(value) if lo <= value <= hi else None


def _float_or_none(value: object) -> float | None:
    try:
        out = float(value)  # type: ignore[arg-type]  # anything: float() refusing is handled
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) and out > 0 else None


# --------------------------------------------------------------------------- OpenSlide


def _openslide_vendor(path: Path) -> str | None:
    import openslide

    try:
        return openslide.OpenSlide.detect_format(str(path))
    except Exception:  # detect_format raises on unreadable files in some versions
        return None


class _OpenSlideBackend:
    name = "openslide"

    def __init__(self, path: Path) -> None:
        import openslide

        self._path = path
        self._error = openslide.OpenSlideError
        vendor = _openslide_vendor(path)
        if vendor is None:
            raise _BackendFailure("unsupported or missing image file")
        try:
            self._osr = openslide.OpenSlide(str(path))
        except openslide.OpenSlideError as exc:
            raise _BackendFailure(
                f"{vendor} file cannot be opened: {_short(exc)}", final=vendor != "generic-tiff"
            ) from None
        props = self._osr.properties
        self.level_dimensions = tuple((int(w), int(h)) for w, h in self._osr.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in self._osr.level_downsamples)
        mpp_x = _float_or_none(props.get("openslide.mpp-x"))
        mpp_y = _float_or_none(props.get("openslide.mpp-y"))
        mpp = (mpp_x + mpp_y) / 2 if mpp_x and mpp_y else mpp_x or mpp_y
        self.mpp = _plausible_mpp(mpp)
        self.objective_power = _float_or_none(props.get("openslide.objective-power"))
        self.bounds = bounds_from_properties(props, self.level_dimensions[0])

    def read(
        self,
        location: tuple[int, int],
        level: int,
        size: tuple[int, int],
        composite: bool = True,
    ) -> np.ndarray:
        try:
            img = self._osr.read_region(location, level, size)
        except self._error as exc:
            raise SlideError(
                self._path,
                f"cannot decode region {size[0]}x{size[1]} at {location} level {level}: "
                f"{_short(exc)}",
            ) from None
        rgba = np.asarray(img)
        return _rgba_to_rgb(rgba) if composite else np.ascontiguousarray(rgba[..., :3])

    def resident_bytes(self) -> int:
        return OPENSLIDE_HANDLE_BYTES

    def close(self) -> None:
        self._osr.close()


_BOUNDS_KEYS = ("openslide.bounds-x", "openslide.bounds-y")
_BOUNDS_SIZE_KEYS = ("openslide.bounds-width", "openslide.bounds-height")


def bounds_from_properties(props: Mapping[str, str], level0: tuple[int, int]) -> Region | None:
    """OpenSlide's scanned-area rectangle from its properties, or None without one.

    QuPath applies the bounds when all four properties exist; so does this (a missing size is
    read as "to the edge of level 0"). Values that are not integers or lie outside level 0 are
    ignored.
    """
    if not all(k in props for k in _BOUNDS_KEYS):
        return None
    try:
        x, y = (int(props[k]) for k in _BOUNDS_KEYS)
        w0, h0 = level0
        w = int(props.get(_BOUNDS_SIZE_KEYS[0], w0 - x))
        h = int(props.get(_BOUNDS_SIZE_KEYS[1], h0 - y))
    except ValueError:
        return None
    if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > level0[0] or y + h > level0[1]:
        return None
    if (x, y, w, h) == (0, 0, *level0):
        return None
    return Region(x, y, w, h)


def _rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """Composite an ``(h, w, 4)`` uint8 RGBA array over white → ``(h, w, 3)`` uint8.

    Row bands of :data:`_COMPOSITE_PIXELS` at a time: the float32 arithmetic needs ~30 bytes
    per pixel, which for a whole band of :meth:`Slide.read_rect` would be half a gigabyte.
    """
    rgb = rgba[..., :3]
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    out = np.empty(rgb.shape, dtype=np.uint8)
    rows = max(1, _COMPOSITE_PIXELS // max(1, rgba.shape[1]))
    for r0 in range(0, rgba.shape[0], rows):
        a = alpha[r0 : r0 + rows, :, None].astype(np.float32) / 255.0
        blended = rgb[r0 : r0 + rows].astype(np.float32) * a + 255.0 * (1.0 - a)
        out[r0 : r0 + rows] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    return out


# --------------------------------------------------------------------------- in-memory levels


class TooLargeError(SlideError):
    """A fallback image whose decoded pixels exceed :data:`MAX_DECODED_PIXELS` (final: no other
    backend is tried, the message says what to do)."""


class _DecodeBudget:
    """Counts the pixels one file's fallback backend decodes, refusing past the cap *before*
    decoding (the claim is the level's shape, known from the header)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._pixels = 0
        self._lock = threading.Lock()

    def charge(self, level: int, width: int, height: int) -> None:
        with self._lock:
            total = self._pixels + width * height
            if total > MAX_DECODED_PIXELS:
                raise TooLargeError(self._path, too_large_problem(level, width, height))
            self._pixels = total


def too_large_problem(level: int, width: int, height: int) -> str:
    """One line: why a fallback level is refused and what to do instead."""
    return (
        f"level {level} is {width}x{height} px, more than the {MAX_DECODED_PIXELS:,} px read "
        "without OpenSlide (convert it to a tiled pyramidal TIFF)"
    )


class _ArrayBackend:
    """Levels held as ``YX`` or ``YXS`` arrays in their stored form (decoded lazily, or
    memory-mapped). Each read converts only its own region to RGB uint8, so a grey, 16-bit or
    memory-mapped image is never expanded to a whole-level RGB copy."""

    def __init__(
        self,
        name: str,
        path: Path,
        level_shapes: list[tuple[int, int]],
        loaders: list[Callable[[], tuple[np.ndarray, bool]]],
        mpp: float | None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self._path = path
        self._on_close = on_close
        self._loaders = loaders
        self._cache: dict[int, np.ndarray] = {}
        self._mapped: set[int] = set()
        self._lock = threading.Lock()  # extraction reads from several threads
        self.level_dimensions = tuple((w, h) for h, w in level_shapes)
        w0, h0 = self.level_dimensions[0]
        self.level_downsamples = tuple(((w0 / w) + (h0 / h)) / 2 for w, h in self.level_dimensions)
        self.mpp = mpp
        self.objective_power: float | None = None
        self.bounds: Region | None = None

    def _level(self, level: int) -> np.ndarray:
        with self._lock:
            if level not in self._cache:
                array, mapped = self._loaders[level]()
                self._cache[level] = array
                if mapped:
                    self._mapped.add(level)
            return self._cache[level]

    def resident_bytes(self) -> int:
        """Decoded levels (memory-mapped ones live in the page cache and count nothing).

        Without the lock (copies of the tables are atomic under the GIL): a cache measuring
        sizes must not wait for a level being decoded."""
        levels, mapped = list(self._cache.items()), set(self._mapped)
        return sum(a.nbytes for i, a in levels if i not in mapped)

    def read(
        self,
        location: tuple[int, int],
        level: int,
        size: tuple[int, int],
        composite: bool = True,
    ) -> np.ndarray:
        arr = self._level(level)
        ds = self.level_downsamples[level]
        x0, y0 = round(location[0] / ds), round(location[1] / ds)
        w, h = size
        out = np.full((h, w, 3), 255 if composite else 0, dtype=np.uint8)
        H, W = arr.shape[:2]
        sx0, sy0 = max(0, x0), max(0, y0)
        sx1, sy1 = min(W, x0 + w), min(H, y0 + h)
        if sx1 > sx0 and sy1 > sy0:
            region = _region_to_rgb(np.asarray(arr[sy0:sy1, sx0:sx1]), self._path)
            out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = region
        return out

    def close(self) -> None:
        with self._lock:
            self._cache.clear()
            self._mapped.clear()
        if self._on_close is not None:
            self._on_close()


def _normalise_axes(arr: np.ndarray, axes: str, path: Path) -> np.ndarray:
    """A decoded or mapped image as a ``YX`` or ``YXS`` view (planar ``SYX`` moved, no copy);
    SlideError for other layouts or pixel types."""
    if axes == "SYX" and arr.ndim == 3:
        arr = np.moveaxis(arr, 0, -1)
        axes = "YXS"
    _check_layout(axes, arr.shape[2] if arr.ndim == 3 else 1, arr.dtype, path)
    return arr


def _check_layout(axes: str, channels: int, dtype: np.dtype, path: Path) -> None:
    """Refuse (SlideError) what :func:`_region_to_rgb` cannot convert, before any decoding."""
    if axes not in ("YX", "YXS", "SYX"):
        raise SlideError(path, f"not a 2-D RGB or grey image (axes {axes})")
    if not 1 <= channels <= 4:
        raise SlideError(path, f"unsupported number of channels {channels}")
    if dtype.kind != "u" and dtype != np.bool_:
        raise SlideError(path, f"unsupported pixel type {dtype}")


def _region_to_rgb(arr: np.ndarray, path: Path) -> np.ndarray:
    """A ``YX`` or ``YXS`` region (uint8/uint16/bool, 1–4 channels) as ``(h, w, 3)`` uint8;
    alpha is composited over white."""
    if arr.dtype != np.uint8:
        if arr.dtype == np.bool_:
            arr = arr.astype(np.uint8) * 255
        else:
            arr = (arr >> (8 * (arr.dtype.itemsize - 1))).astype(np.uint8)
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    channels = arr.shape[2]
    if channels == 3:
        return arr
    if channels == 4:
        return _rgba_to_rgb(arr)
    if channels == 1:
        return np.repeat(arr, 3, axis=2)
    if channels == 2:  # grey + alpha
        return _rgba_to_rgb(np.concatenate([np.repeat(arr[..., :1], 3, 2), arr[..., 1:]], 2))
    raise SlideError(path, f"unsupported number of channels {channels}")


def _open_tifffile(path: Path) -> _ArrayBackend:
    import tifffile

    try:
        tif = tifffile.TiffFile(str(path))
    except Exception as exc:  # parsers of untrusted bytes raise anything (struct.error, ...)
        raise _BackendFailure(_short(exc)) from None
    try:
        if not tif.series:
            raise SlideError(path, "TIFF has no image series")
        series = tif.series[0]
        levels = list(series.levels)
        axes = series.axes
        shapes: list[tuple[int, int]] = []
        for lvl in levels:
            ax = lvl.axes
            shp = dict(zip(ax, lvl.shape, strict=True))
            if "Y" not in shp or "X" not in shp:
                raise SlideError(path, f"TIFF series has no Y/X axes (axes {ax})")
            shapes.append((int(shp["Y"]), int(shp["X"])))
            _check_layout(ax, int(shp.get("S", 1)), np.dtype(lvl.dtype), path)
        mpp = _plausible_mpp(_tiff_mpp(series.pages[0]))
    except SlideError:
        tif.close()
        raise
    except Exception as exc:  # tifffile raises many types on malformed tags
        tif.close()
        raise SlideError(path, f"malformed TIFF ({_short(exc)})") from None
    budget = _DecodeBudget(path)

    def loader(index: int) -> Callable[[], tuple[np.ndarray, bool]]:
        def load() -> tuple[np.ndarray, bool]:
            lvl = levels[index]
            mapped = False
            try:
                page = series.pages[0]
                data: np.ndarray
                if index == 0 and len(levels) == 1 and page is not None and page.is_memmappable:
                    data = tifffile.memmap(str(path), series=0, mode="r")
                    mapped = True
                else:
                    budget.charge(index, shapes[index][1], shapes[index][0])
                    data = lvl.asarray(maxworkers=1)
            except SlideError:
                raise
            except Exception as exc:  # unknown compression, truncated strips, ...
                raise SlideError(path, f"cannot decode TIFF level {index}: {_short(exc)}") from None
            return _normalise_axes(data, axes, path), mapped

        return load

    loaders = [loader(i) for i in range(len(levels))]
    return _ArrayBackend("tifffile", path, shapes, loaders, mpp, on_close=tif.close)


def _tiff_mpp(page: object) -> float | None:
    """Microns per pixel from the TIFF resolution tags (None when absent or unitless)."""
    tags = getattr(page, "tags", None)
    if tags is None or "XResolution" not in tags:
        return None
    unit = tags.get("ResolutionUnit")
    unit_value = int(unit.value) if unit is not None else 2
    num, den = tags["XResolution"].value
    if not num or not den:
        return None
    per_unit = num / den
    microns = {2: 25400.0, 3: 10000.0}.get(unit_value)
    return microns / per_unit if microns else None


def _open_pillow(path: Path) -> _ArrayBackend:
    try:
        with warnings.catch_warnings(), Image.open(path) as img:
            # Pillow warns from 89 M px; the tighter MAX_DECODED_PIXELS below refuses instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            w, h = img.size
            dpi = img.info.get("dpi")
    except Image.DecompressionBombError as exc:
        raise _BackendFailure(
            f"too large to decode without OpenSlide ({_short(exc)})", True
        ) from None
    except Exception as exc:  # parsers of untrusted bytes raise anything (struct.error, ...)
        message = _short(exc).replace(f" '{path}'", "").replace(str(path), "the file")
        raise _BackendFailure(message) from None
    if w * h > MAX_DECODED_PIXELS:
        raise TooLargeError(path, too_large_problem(0, w, h))
    mpp = _plausible_mpp(25400.0 / float(dpi[0])) if dpi and float(dpi[0]) > 0 else None

    def load() -> tuple[np.ndarray, bool]:
        """Decode once; opened again so that no Pillow copy of the pixels outlives it."""
        try:
            with Image.open(path) as img:
                if img.size != (w, h):
                    raise SlideError(path, "the image changed while it was open")
                if img.mode in ("RGB", "RGBA", "L"):
                    arr = np.asarray(img)
                else:
                    mode = "RGBA" if "A" in img.getbands() else "RGB"
                    arr = np.asarray(img.convert(mode))
        except SlideError:
            raise
        except Exception as exc:  # truncated or corrupt data: any decoder error
            raise SlideError(path, f"cannot decode image: {_short(exc)}") from None
        return arr, False

    return _ArrayBackend("pillow", path, [(h, w)], [load], mpp)


#: backends tried in order by :func:`open_slide`
_BACKENDS: tuple[tuple[str, Callable[[Path], SlideBackend]], ...] = (
    ("openslide", _OpenSlideBackend),
    ("tifffile", _open_tifffile),
    ("pillow", _open_pillow),
)
