"""Starlette routes of the tile server (mounted beside the Streamlit app by :mod:`viewer.server`).

* ``GET /hmil/dz/{key}.dzi`` and ``/hmil/dz/{key}_files/{level}/{col}_{row}.jpeg``: the slide
  registered under ``key`` as Deep Zoom (:mod:`.sources`).
* ``GET /hmil/ov/{key}/{spec}.dzi`` and ``…/{spec}_files/{level}/{col}_{row}.png``: the
  server-rendered attention overlay (the ``tiles`` strategy of :mod:`.overlay`), ``spec`` =
  ``{level}-{label index}-{cmap}-{normalisation}-{smoothing × 100}``.
* ``/hmil/static/…``: the viewer's static assets (the vendored OpenSeadragon build).

Every slide request resolves its key through :meth:`SlideRegistry.slide_path`, which runs
:func:`viewer.core.paths.check_under_roots` again: an unknown key or a tile outside the
pyramid is 404 and a file that left its roots 403, both before the file is opened. Decoded
tiles and open slides are kept in LRU caches; tiles are immutable per key (the key changes
with the file), so the browser may cache them too.

Every path segment is read here with an ASCII pattern of bounded length (:data:`NUMBER`,
:data:`SPEC`) rather than with Starlette's ``int`` convertor: that one raised on a 5000-digit
level (Python refuses to parse integers of more than 4300 digits) and the request ended as a
500. A malformed address is a 404 with one line of text, never an exception.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from hmil.errors import HMILError
from hmil.heatmap import CMAPS, NORMALIZATIONS, HeatmapStyle
from viewer.core.paths import PathRefused
from viewer.tiles.geometry import TILE_OVERLAP, TILE_SIZE, DeepZoomGeometry
from viewer.tiles.overlay import overlay_tile_png
from viewer.tiles.registry import (
    SOURCE_CACHE_BYTES,
    ResidentCache,
    SlideRegistry,
    cached_slide,
    shared_registry,
)
from viewer.tiles.sources import DeepZoomSource, open_deepzoom

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
PREFIX = "/hmil"
#: decoded JPEG tiles kept in memory (256 px tiles are ~10–30 kB: ≤ ~100 MB)
TILE_CACHE = 4096
OVERLAY_CACHE = 2048
IMMUTABLE = {"Cache-Control": "private, max-age=86400, immutable"}
SPEC = re.compile(r"^(coarse|fine)-([0-9]{1,3})-([a-z]+)-([a-z]+)-([0-9]{1,4})$")
#: a level, column or row: ASCII digits only (``\d`` also takes other scripts' digits), and few
#: enough of them that ``int`` never refuses (a Deep Zoom pyramid has < 64 levels)
NUMBER = re.compile(r"^[0-9]{1,9}$")
TILE_NAME = re.compile(r"^([0-9]{1,9})_([0-9]{1,9})$")


@dataclass(frozen=True)
class OverlaySpec:
    """Which label and style one server overlay layer shows."""

    level: str
    index: int
    style: HeatmapStyle

    @classmethod
    def parse(cls, text: str) -> OverlaySpec | None:
        """The spec of ``text``, or None when it is malformed or names a style
        :class:`HeatmapStyle` refuses (e.g. smoothing beyond its maximum)."""
        m = SPEC.match(text)
        if m is None or m.group(3) not in CMAPS or m.group(4) not in NORMALIZATIONS:
            return None
        # group 4 was checked against NORMALIZATIONS above, which the Literal cannot see
        norm = m.group(4)
        try:
            style = HeatmapStyle(m.group(3), 1.0, norm, int(m.group(5)) / 100)  # type: ignore[arg-type]  # checked
        except HMILError:
            return None
        return cls(m.group(1), int(m.group(2)), style)

    @staticmethod
    def format(level: str, index: int, cmap: str, normalize: str, smooth: float) -> str:
        return f"{level}-{index}-{cmap}-{normalize}-{round(smooth * 100)}"


def tile_address(request: Request) -> tuple[int, int, int] | None:
    """``(level, col, row)`` of a tile request, or None when the path does not spell one."""
    level = NUMBER.match(request.path_params["level"])
    tile = TILE_NAME.match(request.path_params["tile"])
    if level is None or tile is None:
        return None
    return int(level.group()), int(tile.group(1)), int(tile.group(2))


class TileService:
    """Slide and overlay tiles for the keys of one :class:`SlideRegistry`."""

    def __init__(self, registry: SlideRegistry) -> None:
        self.registry = registry
        self._source = ResidentCache(self._open, SOURCE_CACHE_BYTES, DeepZoomSource.resident_bytes)
        self.slide_tile = functools.lru_cache(maxsize=TILE_CACHE)(self._slide_tile)
        self.overlay_tile = functools.lru_cache(maxsize=OVERLAY_CACHE)(self._overlay_tile)

    @staticmethod
    def _open(path: str) -> DeepZoomSource:
        """The Deep Zoom source of ``path`` over the process's shared slide handle."""
        return open_deepzoom(Path(path), slide=cached_slide(path))

    def source(self, key: str) -> DeepZoomSource | None:
        """The open slide of ``key`` (None: unknown); raises PathRefused / SlideError."""
        path = self.registry.slide_path(key)
        return None if path is None else self._source(str(path))

    def _slide_tile(self, key: str, path: str, level: int, col: int, row: int) -> bytes:
        return self._source(path).tile_jpeg(level, col, row)

    def _overlay_tile(self, key: str, spec: str, level: int, col: int, row: int) -> bytes | None:
        entry = self.registry.attention(key)
        parsed = OverlaySpec.parse(spec)
        if entry is None or parsed is None or parsed.level not in entry.attention:
            return None
        matrix = entry.attention[parsed.level]
        if not 0 <= parsed.index < matrix.shape[0]:
            return None
        geometry = DeepZoomGeometry(entry.width, entry.height, TILE_SIZE, TILE_OVERLAP)
        region, size = geometry.tile_region(level, col, row)
        return overlay_tile_png(
            matrix, parsed.index, entry.coords, entry.patch_size, region, size, parsed.style
        )

    # ------------------------------------------------------------------ endpoints

    def dzi(self, request: Request) -> Response:
        key = request.path_params["key"]
        try:
            path = self.registry.slide_path(key)
        except PathRefused:
            return PlainTextResponse("refused: outside the viewer's data roots", 403)
        if path is None:
            return PlainTextResponse("unknown slide", 404)
        width, height = self.registry.slide_size(key)
        xml = DeepZoomGeometry(width, height, TILE_SIZE, TILE_OVERLAP).dzi("jpeg")
        return Response(xml, media_type="application/xml", headers=IMMUTABLE)

    def tile(self, request: Request) -> Response:
        key = request.path_params["key"]
        address = tile_address(request)
        if address is None:
            return PlainTextResponse("no such tile", 404)
        level, col, row = address
        try:
            path = self.registry.slide_path(key)
        except PathRefused:
            return PlainTextResponse("refused: outside the viewer's data roots", 403)
        if path is None:
            return PlainTextResponse("unknown slide", 404)
        width, height = self.registry.slide_size(key)
        if not DeepZoomGeometry(width, height, TILE_SIZE, TILE_OVERLAP).contains(level, col, row):
            return PlainTextResponse("no such tile", 404)
        try:
            data = self.slide_tile(key, str(path), level, col, row)
        except HMILError as exc:
            return PlainTextResponse(f"cannot read the slide: {exc.problem}", 404)
        return Response(data, media_type="image/jpeg", headers=IMMUTABLE)

    def overlay_dzi(self, request: Request) -> Response:
        entry = self.registry.attention(request.path_params["key"])
        if entry is None or OverlaySpec.parse(request.path_params["spec"]) is None:
            return PlainTextResponse("unknown overlay", 404)
        xml = DeepZoomGeometry(entry.width, entry.height, TILE_SIZE, TILE_OVERLAP).dzi("png")
        return Response(xml, media_type="application/xml", headers=IMMUTABLE)

    def overlay(self, request: Request) -> Response:
        key, spec = request.path_params["key"], request.path_params["spec"]
        entry = self.registry.attention(key)
        if entry is None:
            return PlainTextResponse("unknown overlay", 404)
        address = tile_address(request)
        if address is None:
            return PlainTextResponse("no such tile", 404)
        level, col, row = address
        geometry = DeepZoomGeometry(entry.width, entry.height, TILE_SIZE, TILE_OVERLAP)
        if not geometry.contains(level, col, row):
            return PlainTextResponse("no such tile", 404)
        data = self.overlay_tile(key, spec, level, col, row)
        if data is None:
            return PlainTextResponse("unknown overlay", 404)
        return Response(data, media_type="image/png", headers=IMMUTABLE)

    def routes(self) -> list[BaseRoute]:
        tile = "{level}/{tile}"  # read by tile_address, not by Starlette's int convertor
        return [
            Route(f"{PREFIX}/dz/{{key}}.dzi", self.dzi),
            Route(f"{PREFIX}/dz/{{key}}_files/{tile}.jpeg", self.tile),
            Route(f"{PREFIX}/ov/{{key}}/{{spec}}.dzi", self.overlay_dzi),
            Route(f"{PREFIX}/ov/{{key}}/{{spec}}_files/{tile}.png", self.overlay),
            Mount(f"{PREFIX}/static", StaticFiles(directory=STATIC_DIR), name="hmil-static"),
        ]


def tile_routes(registry: SlideRegistry | None = None) -> list[BaseRoute]:
    """The routes over ``registry`` (default: the process's :func:`shared_registry`)."""
    return TileService(registry or shared_registry()).routes()


def slide_dzi_url(key: str) -> str:
    return f"{PREFIX}/dz/{key}.dzi"


def overlay_dzi_url(key: str, spec: str) -> str:
    return f"{PREFIX}/ov/{key}/{spec}.dzi"


OSD_URL = f"{PREFIX}/static/openseadragon/openseadragon.min.js"
