"""What one request or upload costs the viewer's process, whatever the file claims: crafted
slides and bags are opened through the same paths as the server (upload folder, shared slide
cache, tile routes, bag loader) in a child process whose address space is capped, and its peak
RSS above the state before the case is asserted (outcomes and messages too; no timings).

Measured before these bounds, with the address space capped at 8 GB: a one-level 16384² TIFF
took 3.1 GB for one low-zoom tile, a 13000² PNG of 0.6 MB 3.7 GB on upload, a 30 KB bag
claiming 4·10⁸ coords 6.1 GB before its refusal, and a gzip bag expanding to 1 GB was loaded.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from crafted import MB, forged_tiff, one_level_tiff, png_bomb, run_capped

#: address space the child may add after its imports: far above every bound asserted below, far
#: below what the crafted files claim (a regression fails as a MemoryError, not by swapping)
CHILD_BUDGET = 3 << 30
#: peak RSS a refused file may add (MB): reading headers, building one error line
REFUSAL_MB = 64
#: peak RSS a served slide may add for a whole page view of tiles (MB): the viewer's budget is
#: 1.5 GB for everything; one slide's tiles, its added low-zoom levels and one fallback decode
#: (≤ 2²⁵ px) stay far below it
SERVED_MB = 400

SERVER_IMPORTS = """
from pathlib import Path
from starlette.applications import Starlette
from starlette.testclient import TestClient
from hmil.errors import HMILError
from viewer.components import cached_ui
from viewer.core.uploads import save_upload
from viewer.tiles.geometry import DeepZoomGeometry
from viewer.tiles.registry import SlideRegistry, slide_cache
from viewer.tiles.routes import TileService
"""

#: upload a file, open it as the page does, then request the tiles a first page view loads
#: (every level up to 2048 px) and three full-resolution tiles
SERVE = """
src = Path({path!r})
base = reset()
folder = Path({folder!r})
path = save_upload(src.read_bytes(), src.name, folder, 200)
try:
    size = cached_ui.slide(path).dimensions
    result["page"] = "ok"
except HMILError as exc:
    result["page"] = exc.problem
    size = None
registry = SlideRegistry()
service = TileService(registry)
client = TestClient(Starlette(routes=service.routes()))
statuses, texts = [], set()
size = size or {claimed!r}
key = registry.register_slide(path, [folder], size)
geo = DeepZoomGeometry(*size)
wanted = []
for level, (w, h) in enumerate(geo.level_dimensions):
    if max(w, h) <= 2048:
        cols, rows = geo.level_tiles[level]
        wanted += [(level, c, r) for c in range(cols) for r in range(rows)]
top = geo.level_count - 1
cols, rows = geo.level_tiles[top]
wanted += [(top, 0, 0), (top, cols // 2, rows // 2), (top, cols - 1, rows - 1)]
for level, col, row in wanted:
    response = client.get(f"/hmil/dz/{{key}}_files/{{level}}/{{col}}_{{row}}.jpeg")
    statuses.append(response.status_code)
    if response.status_code != 200:
        texts.add(response.text)
result["statuses"] = sorted(set(statuses))
result["texts"] = sorted(texts)
result["tiles"] = len(statuses)
result["cached_mb"] = slide_cache().total_bytes() / (1 << 20)
result["peak_mb"] = peak_since(base)
"""


def serve(path: Path, folder: Path, claimed: tuple[int, int] | None = None) -> dict:
    """Upload, open and page-view ``path`` in a capped child (``claimed``: the size to
    register when the page refuses the file, so that its tile routes are exercised too)."""
    body = SERVE.format(path=str(path), folder=str(folder), claimed=claimed)
    return run_capped(SERVER_IMPORTS, body, CHILD_BUDGET)


def test_a_tiff_claiming_100000_px_is_refused_before_any_read(tmp_path: Path) -> None:
    slide = forged_tiff(tmp_path / "forged.tif", 100_000)
    assert slide.stat().st_size < 1 * MB
    out = serve(slide, tmp_path / "up", (100_000, 100_000))
    problem = "its coarsest level is 100000x100000 px, more than the 1,073,741,824 px"
    assert out["page"].startswith(problem)
    assert all(400 <= s < 500 for s in out["statuses"]), out
    assert all(problem in text and "\n" not in text for text in out["texts"])
    assert out["peak_mb"] < REFUSAL_MB, out


def test_a_one_level_slide_is_served_from_added_levels_within_memory(tmp_path: Path) -> None:
    """A 6144² one-level TIFF: every tile of a page view is served; the low-zoom ones come
    from levels resampled once (before: each read the whole level, ~0.5 GB per tile)."""
    slide = one_level_tiff(tmp_path / "one-level.tiff", 6144)
    out = serve(slide, tmp_path / "up")
    assert out["page"] == "ok" and out["statuses"] == [200], out
    assert out["tiles"] > 10
    assert out["peak_mb"] < SERVED_MB, out


def test_a_png_bomb_under_pillows_limit_is_refused_before_decoding(tmp_path: Path) -> None:
    """13000² px passes Pillow's own limit (179 M px) and would decode to 0.5–3 GB."""
    bomb = png_bomb(tmp_path / "bomb.png", 13000, 13000)
    assert bomb.stat().st_size < 1 * MB
    out = serve(bomb, tmp_path / "up", (13000, 13000))
    problem = "level 0 is 13000x13000 px, more than the 33,554,432 px read without OpenSlide"
    assert out["page"].startswith(problem)
    assert all(400 <= s < 500 for s in out["statuses"]) and out["cached_mb"] < 1, out
    assert all(problem in text for text in out["texts"])
    assert out["peak_mb"] < REFUSAL_MB, out


def test_an_image_under_the_cap_is_decoded_once_for_page_and_tiles(tmp_path: Path) -> None:
    image = png_bomb(tmp_path / "big.png", 5000, 5000)  # 25 M px: under the 2²⁵ px cap
    out = serve(image, tmp_path / "up")
    assert out["page"] == "ok" and out["statuses"] == [200], out
    decoded = 5000 * 5000 * 3 / MB
    assert decoded <= out["cached_mb"] < decoded * 1.1  # one decoded copy, not one per cache
    assert out["peak_mb"] < SERVED_MB, out


BAG_IMPORTS = """
from hmil.data.bags import load_bag
from hmil.errors import BagError
"""

LOAD = """
base = reset()
try:
    load_bag({path!r})
    result["outcome"] = "loaded"
except BagError as exc:
    result["outcome"] = exc.problem
result["peak_mb"] = peak_since(base)
"""


def load_capped(path: Path) -> dict:
    return run_capped(BAG_IMPORTS, LOAD.format(path=str(path)), CHILD_BUDGET)


@pytest.mark.parametrize("claimed", [400_000_000, 4_000_000_000])
def test_a_bag_claiming_huge_coords_is_refused_within_memory(tmp_path: Path, claimed: int) -> None:
    path = tmp_path / "coords.h5"
    with h5py.File(path, "w") as f:
        f["features"] = np.ones((64, 104), np.float32)
        f.create_dataset("coords", shape=(claimed, 2), dtype="i8", chunks=(1 << 16, 2),
                         compression="gzip")  # fmt: skip
    out = load_capped(path)
    assert out["outcome"] == f"{claimed} coords for 64 feature vectors"
    assert out["peak_mb"] < REFUSAL_MB, out


def test_a_gzip_bag_expanding_256x_is_refused_within_memory(tmp_path: Path) -> None:
    path = tmp_path / "gzip.h5"
    rows, dim = 1 << 19, 128  # 256 MiB of constant floats
    with h5py.File(path, "w") as f:
        dset = f.create_dataset("features", shape=(rows, dim), dtype="f4", chunks=(8192, dim),
                                compression="gzip")  # fmt: skip
        block = np.ones((1 << 16, dim), np.float32)
        for start in range(0, rows, len(block)):
            dset[start : start + len(block)] = block
    assert path.stat().st_size * 32 < rows * dim * 4
    out = load_capped(path)
    assert "more than 32× compression or forged" in out["outcome"]
    assert out["peak_mb"] < REFUSAL_MB, out
