"""The tile server: Deep Zoom geometry and sources, and the routes' data-roots policy
(through Starlette's TestClient)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import openslide
import pytest
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image
from starlette.applications import Starlette
from starlette.testclient import TestClient

from viewer.core.paths import PathRefused
from viewer.tiles import routes as routes_mod
from viewer.tiles.geometry import TILE_OVERLAP, TILE_SIZE, DeepZoomGeometry
from viewer.tiles.registry import AttentionEntry, SlideRegistry
from viewer.tiles.routes import OSD_URL, OverlaySpec, TileService, slide_dzi_url
from viewer.tiles.sources import open_deepzoom

SHARED = Path(__file__).resolve().parents[4] / "shared" / "data" / "slides"
REAL = ["cmu-1-small-region.svs", "tcga-cr-7395-01a-01-ts1.svs", "boxes-4-level.tiff"]
OSD_SHA256 = "14d587cd3ee7c4861f1a41077ce642029364a21029956ba635bd8fb1202cf9ad"


@pytest.fixture()
def fixture_slide(viewer_root: Path) -> Path:
    return viewer_root / "cohort" / "slides" / "synth-0000.tiff"


@pytest.fixture()
def served(tmp_path: Path, fixture_slide: Path) -> tuple[TestClient, TileService, str, Path]:
    """A root holding one slide (copied), registered; the client and the service."""
    root = tmp_path / "root"
    root.mkdir()
    slide = root / "slide.tiff"
    slide.write_bytes(fixture_slide.read_bytes())
    registry = SlideRegistry()
    with openslide.OpenSlide(str(slide)) as osr:
        size = osr.dimensions
    key = registry.register_slide(slide, [root], size)
    service = TileService(registry)
    client = TestClient(Starlette(routes=service.routes()))
    return client, service, key, slide


@pytest.mark.parametrize("name", REAL)
def test_geometry_matches_openslides_generator(name: str) -> None:
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{path} not available")
    with openslide.OpenSlide(str(path)) as osr:
        gen = DeepZoomGenerator(osr, tile_size=TILE_SIZE, overlap=TILE_OVERLAP)
        geo = DeepZoomGeometry(*osr.dimensions)
        assert geo.level_dimensions == gen.level_dimensions
        assert geo.level_tiles == gen.level_tiles
        for level in range(gen.level_count):
            cols, rows = gen.level_tiles[level]
            for col, row in [(0, 0), (cols - 1, rows - 1), (cols // 2, rows // 2)]:
                region, size = geo.tile_region(level, col, row)
                assert size == gen.get_tile_dimensions(level, (col, row))
                (x, y), _, _ = gen.get_tile_coordinates(level, (col, row))
                assert abs(region.x - x) <= 1 and abs(region.y - y) <= 1
        assert not geo.contains(gen.level_count, 0, 0) and not geo.contains(0, 1, 0)


def test_openslide_and_fallback_slides_give_the_same_pyramid(fixture_slide: Path) -> None:
    """A tifffile-read slide goes through the same DeepZoomGenerator (via ReaderSlide)."""
    source = open_deepzoom(fixture_slide)
    assert source.slide.backend == "openslide"
    level = source.generator.level_count - 1
    tile = Image.open(io.BytesIO(source.tile_jpeg(level, 0, 0)))
    side = TILE_SIZE + TILE_OVERLAP  # the top-left tile has overlap on its right and bottom only
    assert tile.format == "JPEG" and tile.size == (side, side)
    kidney = SHARED / "kidney-48-5.tif"
    if kidney.is_file():
        fallback = open_deepzoom(kidney)
        assert fallback.slide.backend in ("tifffile", "pillow")
        geo = DeepZoomGeometry(*fallback.slide.dimensions)
        assert fallback.generator.level_tiles == geo.level_tiles
        top = fallback.generator.level_count - 1
        img = np.asarray(Image.open(io.BytesIO(fallback.tile_jpeg(top, 0, 0))))
        direct = fallback.slide.read_region((0, 0), 0, (side, side))
        assert img.shape == (side, side, 3)
        assert np.abs(img.astype(int) - direct.astype(int)).mean() < 8  # JPEG error only
        fallback.close()
    source.close()


def test_dzi_and_tiles_are_served_and_cached(served: tuple) -> None:
    client, service, key, _ = served
    dzi = client.get(slide_dzi_url(key))
    assert (
        dzi.status_code == 200
        and f'TileSize="{TILE_SIZE}"' in dzi.text
        and 'Overlap="1"' in dzi.text
    )
    geo = DeepZoomGeometry(*service.registry.slide_size(key))
    assert f'Width="{geo.width}"' in dzi.text and f'Height="{geo.height}"' in dzi.text
    top = geo.level_count - 1
    first = client.get(f"/hmil/dz/{key}_files/{top}/0_0.jpeg")
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    assert "immutable" in first.headers["cache-control"]
    side = min(TILE_SIZE + TILE_OVERLAP, geo.width), min(TILE_SIZE + TILE_OVERLAP, geo.height)
    assert Image.open(io.BytesIO(first.content)).size == side
    again = client.get(f"/hmil/dz/{key}_files/{top}/0_0.jpeg")
    assert again.content == first.content
    info = service.slide_tile.cache_info()
    assert (info.hits, info.misses) == (1, 1)


def test_unknown_keys_bad_paths_and_out_of_range_tiles_are_refused_without_a_read(
    served: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, service, key, _ = served
    opened: list[str] = []
    monkeypatch.setattr(routes_mod, "open_deepzoom", lambda p: opened.append(str(p)))
    geo = DeepZoomGeometry(*service.registry.slide_size(key))
    top = geo.level_count - 1
    cols, rows = geo.level_tiles[top]
    bad = [
        f"/hmil/dz/{'0' * 20}.dzi",  # well-formed but unknown
        f"/hmil/dz/{'0' * 20}_files/0/0_0.jpeg",
        "/hmil/dz/not-a-key_files/0/0_0.jpeg",
        f"/hmil/dz/{key}_files/{geo.level_count}/0_0.jpeg",  # level out of range
        f"/hmil/dz/{key}_files/{top}/{cols}_0.jpeg",  # column out of range
        f"/hmil/dz/{key}_files/{top}/0_{rows}.jpeg",  # row out of range
        f"/hmil/dz/{key}_files/-1/0_0.jpeg",
        "/hmil/dz/..%2F..%2Fetc%2Fpasswd.dzi",
        f"/hmil/dz/{key}_files/{top}/../../etc/passwd",
        "/hmil/ov/" + "0" * 20 + "/fine-0-jet-raw-0.dzi",
        "/hmil/static/../tiles/routes.py",
    ]
    for url in bad:
        response = client.get(url)
        assert response.status_code == 404, (url, response.status_code)
    assert opened == []  # nothing was opened for any of them


def test_a_file_that_leaves_its_roots_is_refused(tmp_path: Path, fixture_slide: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.tiff").write_bytes(fixture_slide.read_bytes())
    registry = SlideRegistry()
    escape = root / "escape.tiff"
    escape.symlink_to(outside / "secret.tiff")
    for path in (escape, outside / "secret.tiff", root / ".." / "outside" / "secret.tiff"):
        with pytest.raises(PathRefused):  # refused when registered
            registry.register_slide(path, [root], (100, 100))
    # registered while inside the root, then swapped for a link that escapes: 403, no read
    swap = root / "swap.tiff"
    swap.write_bytes(fixture_slide.read_bytes())
    with openslide.OpenSlide(str(swap)) as osr:
        size = osr.dimensions
    key = registry.register_slide(swap, [root], size)
    client = TestClient(Starlette(routes=TileService(registry).routes()))
    assert client.get(slide_dzi_url(key)).status_code == 200
    swap.unlink()
    swap.symlink_to(outside / "secret.tiff")
    top = DeepZoomGeometry(*size).level_count - 1
    for url in (slide_dzi_url(key), f"/hmil/dz/{key}_files/{top}/0_0.jpeg"):
        response = client.get(url)
        assert response.status_code == 403 and "outside the viewer's data roots" in response.text


def test_server_overlay_tiles(served: tuple) -> None:
    client, service, _, _ = served
    coords = np.array([[0, 0], [128, 0], [0, 128], [128, 128]])
    attention = {"coarse": np.array([[0.1, 0.2, 0.3, 0.4]]), "fine": np.eye(4)[:2] * 0.5 + 0.125}
    entry = AttentionEntry(256, 256, coords, 128, attention)
    okey = service.registry.register_attention(("ckpt", "bag"), entry)
    spec = OverlaySpec.format("coarse", 0, "jet", "raw", 0.0)
    assert spec == "coarse-0-jet-raw-0"
    dzi = client.get(f"/hmil/ov/{okey}/{spec}.dzi")
    assert dzi.status_code == 200 and 'Format="png"' in dzi.text
    top = DeepZoomGeometry(256, 256).level_count - 1
    tile = client.get(f"/hmil/ov/{okey}/{spec}_files/{top}/0_0.png")
    assert tile.status_code == 200 and tile.headers["content-type"] == "image/png"
    rgba = np.asarray(Image.open(io.BytesIO(tile.content)))
    assert rgba.shape == (256, 256, 4) and (rgba[..., 3] == 255).all()  # one tile, all covered
    assert tuple(rgba[10, 10, :3]) != tuple(rgba[200, 200, :3])  # lowest vs highest score
    for url in (
        f"/hmil/ov/{okey}/coarse-5-jet-raw-0_files/{top}/0_0.png",  # no 6th coarse class
        f"/hmil/ov/{okey}/coarse-0-nocmap-raw-0_files/{top}/0_0.png",
        f"/hmil/ov/{okey}/{spec}_files/{top + 1}/0_0.png",
    ):
        assert client.get(url).status_code == 404, url


def test_vendored_openseadragon_is_the_pinned_build() -> None:
    client = TestClient(Starlette(routes=TileService(SlideRegistry()).routes()))
    js = client.get(OSD_URL)
    assert js.status_code == 200 and js.content.startswith(b"//! openseadragon 6.1.1")
    assert hashlib.sha256(js.content).hexdigest() == OSD_SHA256
    licence = routes_mod.STATIC_DIR / "openseadragon" / "LICENSE.txt"
    assert "OpenSeadragon contributors" in licence.read_text()


def test_the_streamlit_app_accepts_the_tile_routes() -> None:
    """``viewer.server.app`` is one ``st.App`` with the tile routes before Streamlit's own."""
    from viewer import server

    paths = [getattr(r, "path", "") for r in server.app._user_routes]
    assert "/hmil/dz/{key}.dzi" in paths and "/hmil/static" in paths
