"""The deep-zoom view's regions, drawing tools and PNG export in headless Chromium.

Two ways in: a minimal page that mounts ``viewer/frontend/deepzoom.js`` with data written
here (the view's side of the protocol alone: what it draws, what it sends, what it downloads),
and the real app (``hmil view`` on a run with one saved region in ``RUN/regions``: drawn on
the view, a rectangle dragged on the view saved next to it, the PNG export).

Needs Debian's ``/usr/bin/chromium`` and the ``playwright`` package; skipped otherwise.
Servers listen on ports 8611-8619 only.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.server
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from review_browser import port_in_range

from benchmarks import browser
from hmil.geojson import colour_for_class
from hmil.hierarchy import Hierarchy

REPO = Path(__file__).resolve().parents[3]
PORTS = range(8611, 8620)
#: the SYNTHETIC canvas of the minimal page: level-0 size (no slide file: a blank image)
CANVAS_W, CANVAS_H = 20000, 15000
#: one saved region: a rectangle with a square hole, level-0 px
OUTER = [2000, 2000, 8000, 2000, 8000, 6000, 2000, 6000, 2000, 2000]
HOLE = [4000, 3000, 5000, 3000, 5000, 4000, 4000, 4000, 4000, 3000]
RED = (200, 30, 30)


ANNOTORIOUS = REPO / "viewer" / "static" / "annotorious"


def test_vendored_annotorious_is_the_pinned_unmodified_build() -> None:
    """The files the view loads for drawing are the npm package's, as the README states."""
    readme = (ANNOTORIOUS / "README.md").read_text(encoding="utf-8")
    assert "@annotorious/openseadragon 3.8.10" in readme
    for name in ("annotorious-openseadragon.js", "annotorious-openseadragon.css"):
        digest = hashlib.sha256((ANNOTORIOUS / name).read_bytes()).hexdigest()
        assert f"| `{name}` | `{digest}` |" in readme, name
    licence = (ANNOTORIOUS / "LICENSE.txt").read_text(encoding="utf-8")
    assert "BSD 3-Clause License" in licence and "Copyright (c) Rainer Simon" in licence
    js = (REPO / "viewer" / "frontend" / "deepzoom.js").read_text(encoding="utf-8")
    assert "../annotorious/annotorious-openseadragon.js" in js  # next to OpenSeadragon


def _needs_chromium() -> None:
    if not browser.CHROMIUM.is_file():
        pytest.skip("Debian chromium (/usr/bin/chromium) is not installed")
    pytest.importorskip("playwright.sync_api")


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()


def _lut() -> np.ndarray:
    """(256, 3) uint8: code c -> a colour from blue (1) to yellow (255)."""
    t = np.linspace(0, 1, 256)
    lut = np.stack([255 * t, 200 * t + 30, 255 * (1 - t)], axis=1)
    return lut.round().astype(np.uint8)


def page_data() -> dict[str, Any]:
    """The view's data for a SYNTHETIC 4 x 3 grid of 5000-px patches over the blank canvas:
    two fine labels coloured by patch index, one saved region, drawing enabled."""
    cols, rows, step = 4, 3, 5000
    cells = np.array([(c, r) for r in range(rows) for c in range(cols)], dtype="<u4")  # (N, 2)
    n = len(cells)
    codes = (np.arange(n) * 20 + 10).astype(np.uint8)  # (N,)
    legend = {
        "title": "× an average patch (log)",
        "ticks": [[0.0, "×0.1"], [1.0, "×10"]],
        "uncoloured": "",
    }
    scale = {"legend": legend, "texts": [f"×{c}" for c in range(256)]}
    values = {
        "codes": [_b64(codes), _b64(codes[::-1].copy())],
        "scales": [scale],
        "scale_of": [0, 0],
    }
    layer = {
        "strategy": "canvas",
        "grid": {
            "origin": [0, 0],
            "step": step,
            "cols": cols,
            "rows": rows,
            "span": 1,
            "exact": True,
            "cells": _b64(cells),
            "n": n,
        },
        "names": {"coarse": ["benign"], "fine": ["ADH", "FEA"]},
        "predicted": {"coarse": "benign", "fine": "ADH"},
        "levels": {"coarse": {**values, "codes": [_b64(codes)], "scale_of": [0]}, "fine": values},
        "values_key": "synthetic",
        "patch_size": step,
        "n": n,
    }
    return {
        "osd_url": "/static/openseadragon/openseadragon.min.js",
        "view_id": "synth-demo",
        "slide": None,
        "canvas": {"x0": 0, "y0": 0, "w": CANVAS_W, "h": CANVAS_H},
        "layer": layer,
        "show": {
            "level": "fine",
            "label": "ADH",
            "mode": "single",
            "alpha": 0.5,
            "lut": _b64(_lut()),
            "smooth": 0,
            "outline": [],
        },
        "truth": {"coarse": "benign", "fine": "FEA"},
        "nav": None,
        "note": "",
        "patch_box": None,
        "goto": None,
        "viewport": None,
        "min_height": 420,
        "regions": [
            {
                "name": "lesion 1",
                "classification": "ADH",
                "colour": list(RED),
                "rings": [OUTER, HOLE],
            }
        ],
        "draw": {"enabled": True, "classification": "ADH", "colour": [20, 90, 255]},
        "caption": {
            "slide_id": "synth-demo",
            "label": "fine · ADH",
            "truth": "fine · FEA",
            "model": "fold_0/checkpoint.pt",
        },
    }


PAGE = """<!doctype html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="/frontend/deepzoom.css"></head>
<body style="margin:0;padding:16px"><div id="root"></div>
<script type="module">
import mount from "/frontend/deepzoom.js";
window.__triggers = [];
const root = document.getElementById("root");
window.__mount = (data) => mount({data, parentElement: root,
  setTriggerValue: (name, value) => window.__triggers.push([name, value])});
window.__mount(await (await fetch("/data.json")).json());
</script></body></html>"""


@contextlib.contextmanager
def minimal_page(tmp: Path) -> Iterator[str]:
    """A static server of the view's files (frontend, static) and a page mounting it."""
    (tmp / "index.html").write_text(PAGE, encoding="utf-8")
    (tmp / "data.json").write_text(json.dumps(page_data()), encoding="utf-8")
    for name in ("frontend", "static"):
        (tmp / name).symlink_to(REPO / "viewer" / name, target_is_directory=True)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(tmp))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port_in_range(PORTS)), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _image(png: bytes) -> np.ndarray:
    """(H, W, 3) int RGB of a PNG."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


#: page px of level-0 points of the first view, asked of its OpenSeadragon viewer (its canvas
#: is ``w`` level-0 px wide)
TO_PAGE = """([x, y, w]) => {
  const OSD = window.OpenSeadragon;
  const v = Array.from(OSD._viewers.values()).filter((v) => !(v instanceof OSD.Navigator))[0];
  const p = v.viewport.pixelFromPoint(new OSD.Point(x / w, y / w), true);
  const r = v.element.getBoundingClientRect();
  return [r.left + p.x, r.top + p.y];
}"""


#: page px of level-0 points of the app's first view (the slide is its first image)
SLIDE_TO_PAGE = """([x, y]) => {
  const OSD = window.OpenSeadragon;
  const v = Array.from(OSD._viewers.values()).filter((v) => !(v instanceof OSD.Navigator))[0];
  const p = v.world.getItemAt(0).imageToViewerElementCoordinates(new OSD.Point(x, y));
  const r = v.element.getBoundingClientRect();
  return [r.left + p.x, r.top + p.y];
}"""


class Screen:
    """Level-0 px -> page px of the minimal page's first view, as it is now."""

    def __init__(self, page: Any) -> None:
        self.page = page
        a, b = self.at(0, 0), self.at(CANVAS_W, 0)
        self.s = (b[0] - a[0]) / CANVAS_W  # page px per level-0 px

    def at(self, x: float, y: float) -> tuple[float, float]:
        px, py = self.page.evaluate(TO_PAGE, [x, y, CANVAS_W])
        return float(px), float(py)


def _open(page: Any, url: str) -> Screen:
    page.goto(url + "/index.html")
    page.wait_for_selector(".hmil-dz-frame")
    browser.wait_event(page, "open", 0, timeout_s=30)
    page.wait_for_timeout(600)  # the home animation
    return Screen(page)


def _drag(page: Any, a: tuple[float, float], b: tuple[float, float]) -> None:
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move((a[0] + b[0]) / 2, (a[1] + b[1]) / 2, steps=4)
    page.mouse.move(*b, steps=4)
    page.mouse.up()


def _triggers(page: Any, name: str) -> list[Any]:
    return [v for n, v in page.evaluate("window.__triggers") if n == name]


@pytest.mark.browser
def test_regions_drawing_and_png_export_on_a_minimal_page(tmp_path: Path) -> None:
    _needs_chromium()
    with minimal_page(tmp_path) as url, browser.chromium() as chrome:
        page = browser.new_page(chrome)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        screen = _open(page, url)
        frame = page.locator(".hmil-dz-frame").first
        shot = _image(frame.screenshot())
        fb = frame.bounding_box()

        def px(x: float, y: float) -> np.ndarray:
            sx, sy = screen.at(x, y)
            return shot[int(sy - fb["y"]), int(sx - fb["x"])]

        # the region: red outline, a light red fill over the attention layer, the hole unfilled
        # (the hole shows the layer as it is outside the region)
        edge = px(5000, 2000)
        assert edge[0] > 150 and edge[1] < 90 and edge[2] < 90, edge
        # patch (0, 0) (level-0 0..5000) lies under both points: only the filled one is tinted
        inside, hole = px(3000, 4500), px(4500, 3500)
        assert inside[0] - hole[0] >= 10 and hole[2] - inside[2] >= 10, (inside, hole)
        assert page.locator(".hmil-dz-tool").count() == 2
        assert page.locator(".hmil-dz-png").is_visible()

        # a rectangle drawn by a drag reaches the page as level-0 points
        page.get_by_role("button", name="▭ Rectangle").click()
        page.wait_for_function("!!window.AnnotoriousOSD", timeout=30_000)
        page.wait_for_timeout(300)
        _drag(page, screen.at(10000, 8000), screen.at(16000, 12000))
        page.wait_for_function("window.__triggers.some(t => t[0] === 'region')", timeout=10_000)
        (rect,) = _triggers(page, "region")
        assert rect["shape"] == "rectangle" and len(rect["points"]) == 4 and rect["nonce"]
        xs = [p[0] for p in rect["points"]]
        ys = [p[1] for p in rect["points"]]
        tol = 3 / screen.s  # 3 screen px in level-0 px
        assert min(xs) == pytest.approx(10000, abs=tol) and max(xs) == pytest.approx(16000, abs=tol)
        assert min(ys) == pytest.approx(8000, abs=tol) and max(ys) == pytest.approx(12000, abs=tol)
        # the tool is off again; the shape stays drawn (dashed) while the page saves it
        assert page.locator(".hmil-dz-tool.on").count() == 0
        page.wait_for_timeout(300)
        shot = _image(frame.screenshot())
        top = [px(x, 8000) for x in range(10500, 15500, 50)]
        blue = [p for p in top if p[2] > 150 and p[0] < 120]  # the drawing colour (20, 90, 255)
        assert len(blue) > 0.3 * len(top), top  # a dashed line

        # a polygon: a click on each corner, a double-click on the last closes it
        page.get_by_role("button", name="⬠ Polygon").click()
        page.wait_for_timeout(300)
        corners = [(11000, 1500), (17000, 2500), (15000, 6000), (12000, 5000)]
        for x, y in corners[:-1]:
            page.mouse.click(*screen.at(x, y))
            page.wait_for_timeout(350)  # not a double-click
        page.mouse.dblclick(*screen.at(*corners[-1]))
        page.wait_for_function(
            "window.__triggers.filter(t => t[0] === 'region').length === 2", timeout=10_000
        )
        poly = _triggers(page, "region")[1]
        assert poly["shape"] == "polygon" and len(poly["points"]) == 4, poly
        for (x, y), p in zip(corners, poly["points"], strict=True):
            assert p[0] == pytest.approx(x, abs=tol) and p[1] == pytest.approx(y, abs=tol)
        assert poly["nonce"] != rect["nonce"]
        assert _triggers(page, "patch") == []  # the drawing clicks selected no patch

        # Esc cancels a tool: a drag then pans, nothing is sent
        page.get_by_role("button", name="▭ Rectangle").click()
        page.wait_for_timeout(200)
        page.keyboard.press("Escape")
        assert page.locator(".hmil-dz-tool.on").count() == 0
        _drag(page, screen.at(3000, 9000), screen.at(6000, 12000))
        page.wait_for_timeout(800)
        assert len(_triggers(page, "region")) == 2
        # with the tools off a click selects a patch again
        page.mouse.click(*Screen(page).at(17500, 12500))
        page.wait_for_function("window.__triggers.some(t => t[0] === 'patch')", timeout=5_000)
        assert _triggers(page, "patch") == [11]  # the last cell of the 4 x 3 grid

        # the page sends the saved region back: drawn solid, the draft gone
        data = page_data()
        ring = [c for p in rect["points"] + rect["points"][:1] for c in p]
        data["regions"].append(
            {"name": "region 2", "classification": "ADH", "colour": [20, 90, 255], "rings": [ring]}
        )
        page.evaluate("(d) => window.__mount(d)", data)
        page.locator(".hmil-dz-png").wait_for()
        page.wait_for_timeout(300)

        # PNG: the view at its size, the caption on top, the legend's colours, the regions
        with page.expect_download() as info:
            page.locator(".hmil-dz-png").click()
        download = info.value
        assert download.suggested_filename == "synth-demo_fine-ADH.png"
        png = Path(download.path()).read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        image = _image(png)
        fb = frame.bounding_box()
        assert image.shape[:2] == (round(fb["height"]), round(fb["width"]))
        band = image[:22]
        assert (band.max(axis=2) < 110).sum() > 200  # caption text on its light band
        legend = page.locator(".hmil-dz-frame .hmil-dz-legend").bounding_box()
        ly, lx = int(legend["y"] - fb["y"]), int(legend["x"] - fb["x"])
        part = image[ly : ly + int(legend["height"]), lx : lx + int(legend["width"])]
        lut = _lut()
        for code in (20, 128, 240):  # colours of the legend's bar
            d = np.abs(part - lut[code].astype(int)).max(axis=2)
            assert (d <= 12).sum() > 5, code
        # what is on screen is what is in the file (tiles, layer, regions, legend)
        screen_now = _image(frame.screenshot())
        same = np.abs(screen_now[30:] - image[30:]).max(axis=2) <= 24
        assert same.mean() > 0.97, same.mean()
        edge = image[
            int(screen.at(5000, 2000)[1] - fb["y"]), int(screen.at(5000, 2000)[0] - fb["x"])
        ]
        assert edge[0] > 150 and edge[1] < 90, edge
        (tmp_path / "export.png").write_bytes(png)

        # every small-multiple view draws the regions; the export holds them all
        page.locator(".hmil-dz-mode").click()
        page.wait_for_function("document.querySelectorAll('.hmil-dz-frame').length === 2")
        page.wait_for_timeout(1200)
        for k in range(2):
            view = _image(page.locator(".hmil-dz-frame").nth(k).screenshot())
            red = np.abs(view - np.array(RED)).max(axis=2) <= 12
            assert red.sum() > 100, (k, red.sum())
        with page.expect_download() as info:
            page.locator(".hmil-dz-png").click()
        assert info.value.suggested_filename == "synth-demo_fine-all.png"
        both = _image(Path(info.value.path()).read_bytes())
        grid = page.locator(".hmil-dz-grid").bounding_box()
        assert both.shape[:2] == (round(grid["height"]), round(grid["width"]))
        assert (np.abs(both - np.array(RED)).max(axis=2) <= 12).sum() > 200

        # where regions cannot be saved the tools are hidden; the export still works
        bare = {**page_data(), "regions": [], "view_id": "a b/../c"}
        bare["draw"] = {"enabled": False, "classification": "", "colour": [127, 127, 127]}
        del bare["caption"]
        page.evaluate("(d) => window.__mount(d)", bare)
        page.wait_for_timeout(1200)
        assert not page.locator(".hmil-dz-draw").is_visible()
        with page.expect_download() as info:
            page.locator(".hmil-dz-png").click()
        # safe characters only; still all labels (the page never echoed the switch here)
        assert info.value.suggested_filename == "a_b_.._c_fine-all.png"
        assert errors == []


def _write_region(run: Path, slide_id: str) -> Path:
    """RUN/regions/<slide>.geojson: one QuPath annotation (a classified rectangle)."""
    feature = {
        "type": "Feature",
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[600, 600], [1400, 600], [1400, 1200], [600, 1200], [600, 600]]],
        },
        "properties": {
            "objectType": "annotation",
            "name": "lesion 1",
            "classification": {"name": "ADH", "color": [200, 30, 30]},
        },
    }
    path = run / "regions" / f"{slide_id}.geojson"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return path


@pytest.mark.browser
def test_saved_region_drawn_and_a_drawn_rectangle_saved_in_the_app(
    viewer_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _needs_chromium()
    monkeypatch.setattr(browser, "free_port", lambda: port_in_range(PORTS))
    run = viewer_root / "run"
    saved = _write_region(run, "synth-0000")
    try:
        with (
            browser.serve(run, [viewer_root], tmp_path / "viewer.log") as url,
            browser.chromium() as chrome,
        ):
            page = browser.new_page(chrome)
            page.goto(url + "/?slide=synth-0000")
            browser.wait_event(page, "slide-loaded", 0, timeout_s=120)
            browser.settle(page)
            assert browser.problems(page) == []
            frame = page.locator(".hmil-dz-frame").first
            # the saved region is drawn in its class's colour along its edge (the slide's image
            # pixels are level-0 px)
            shot = _image(frame.screenshot())
            fb = frame.bounding_box()
            colour = np.array(colour_for_class("ADH", Hierarchy.resolve("bracs")))  # the run's
            hits = []
            for x in range(650, 1400, 25):
                sx, sy = page.evaluate(SLIDE_TO_PAGE, [x, 600])
                col = shot[int(sy - fb["y"]) - 3 : int(sy - fb["y"]) + 4, int(sx - fb["x"])]
                hits.append(bool((np.abs(col - colour).max(axis=1) <= 30).any()))
            assert np.mean(hits) > 0.6, hits
            page.get_by_role("button", name="▭ Rectangle").click()
            page.wait_for_function("!!window.AnnotoriousOSD", timeout=30_000)
            page.wait_for_timeout(300)
            box = page.locator(".hmil-dz-osd").first.bounding_box()
            cx, cy = box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5
            _drag(page, (cx, cy), (cx + 120, cy + 90))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                features = json.loads(saved.read_text())["features"]
                if len(features) == 2:
                    break
                page.wait_for_timeout(300)
            assert len(features) == 2
            # saved where it was drawn: the dragged corners in level-0 px (within 3 screen px)
            a, b = page.evaluate(SLIDE_TO_PAGE, [0, 0]), page.evaluate(SLIDE_TO_PAGE, [1000, 0])
            per_px = 1000 / (b[0] - a[0])  # level-0 px per page px
            x0, y0 = (cx - a[0]) * per_px, (cy - a[1]) * per_px
            ring = np.array(features[1]["geometry"]["coordinates"][0])  # (5, 2) closed
            assert ring.min(axis=0) == pytest.approx([x0, y0], abs=3 * per_px)
            assert ring.max(axis=0) == pytest.approx(
                [x0 + 120 * per_px, y0 + 90 * per_px], abs=3 * per_px
            )
            browser.settle(page)
            assert browser.problems(page) == []
            with page.expect_download() as info:
                page.locator(".hmil-dz-png").click()
            image = _image(Path(info.value.path()).read_bytes())
            fb = frame.bounding_box()
            assert image.shape[:2] == (round(fb["height"]), round(fb["width"]))
            assert info.value.suggested_filename.startswith("synth-0000_")
    finally:
        saved.unlink(missing_ok=True)
