"""Real browser: ``hmil view`` on a free localhost port, every page in headless Chromium, and
the deep-zoom view driven by drag, wheel, a label switch and a patch click.

Needs Debian's ``/usr/bin/chromium`` (``./run.sh test`` installs it) and the ``playwright``
Python package (driven with ``executable_path``, so no browser download); skipped otherwise.
Screenshots go to the test's temporary folder, and also to ``$HMIL_SCREENSHOT_DIR`` when set.

By hand (e.g. for ``docs/screenshots``)::

    python tests/viewer/test_viewer_browser.py hmil-demo/run docs/screenshots [BAG [SLIDE]]
"""

from __future__ import annotations

import io
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from viewer import browser

PAGES = {"slide": "", "cohort": "cohort", "train": "train"}


def _overlay_fraction(png: bytes) -> float:
    """Share of pixels coloured by the jet overlay's green-cyan middle range (green clearly
    above red and blue: no H&E or glass pixel looks like that)."""
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return float(((g > r + 10) & (g > b + 10)).mean())


def _view_state(page: Any) -> dict[str, object]:
    """What the deep-zoom view shows: its size, the layer's colours, scale bar, label."""
    frame = page.locator(".hmil-dz-frame").first
    box = frame.bounding_box()
    return {
        "width": box["width"],
        "overlay": _overlay_fraction(frame.screenshot()),
        "scale": page.locator(".hmil-dz-scale-text").first.inner_text(),
        "chip": page.locator(".hmil-dz-chip.on").first.inner_text(),
    }


def _matching(page: Any) -> int:
    """The number in the cohort page's "Matching slides — N slide(s)" line."""
    text = page.locator("p", has_text="Matching slides").first.inner_text()
    return int(text.split("—")[1].split()[0])


def _click_confusion_cell(page: Any, chart: int, index: int) -> None:
    """Click cell ``index`` (row-major) of confusion chart ``chart`` (0 coarse, 1 fine), the
    way a user does: hover the cell, then press and release."""
    plot = page.locator('[data-testid="stPlotlyChart"]').nth(chart)
    box = plot.locator(".scatterlayer .point").nth(index).bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 3, y)
    page.wait_for_timeout(300)
    page.mouse.move(x, y)
    page.wait_for_timeout(600)
    page.mouse.down()
    page.mouse.up()
    browser.settle(page)


def _drive_view(page: Any, out_dir: Path) -> dict[str, object]:
    """Wheel, drag, a label chip and a patch click on the deep-zoom view."""
    found: dict[str, object] = {}
    box = page.locator(".hmil-dz-frame").first.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    tiles_before = len(browser.events(page, "tile"))
    page.mouse.move(x, y)
    t0 = browser.now(page)
    for _ in range(2):
        page.mouse.wheel(0, -120)
        page.wait_for_timeout(150)
    found["wheel_ms"] = browser.wait_tiles_drawn(page, t0) - t0
    found["new_tiles"] = len(browser.events(page, "tile")) - tiles_before
    scale_before = page.locator(".hmil-dz-scale-text").first.inner_text()
    page.mouse.down()
    page.mouse.move(x - 150, y - 80, steps=6)
    page.mouse.up()
    page.wait_for_timeout(800)
    found["scale_after_zoom"] = scale_before
    page.screenshot(path=str(out_dir / "slide_zoomed.png"))
    chips = page.locator(".hmil-dz-chip")
    target = chips.nth(0).get_attribute("data-label")
    draws = len(browser.events(page, "draw"))
    chips.nth(0).click()
    drawn = [e for e in browser.events(page, "draw")[draws:] if e.get("label") == target]
    found["chip_target"], found["chip_drawn"] = target, bool(drawn)
    browser.settle(page)
    label_box = page.locator('[data-testid="stSelectbox"]', has_text="Label").first
    # Streamlit 1.67's selectbox is a combobox: the chosen option is the input's value
    found["label_box"] = label_box.locator("input").input_value()
    page.mouse.click(x, y)  # a patch under the centre (the demo slides are covered there)
    browser.settle(page)
    found["patch_heading"] = [
        t for t in page.locator("p").all_inner_texts() if t.startswith("Patch ")
    ]
    page.screenshot(path=str(out_dir / "slide_patch.png"), full_page=True)
    return found


def capture(
    run: Path,
    out_dir: Path,
    data_roots: list[Path],
    upload: tuple[Path, Path | None] | None = None,
) -> dict[str, dict[str, object]]:
    """Load every page, screenshot it into ``out_dir``; drive the slide page's view; returns
    per page what was found. With ``upload = (bag, slide or None)`` the slide page is also
    shown in upload mode (``upload.png``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    found: dict[str, dict[str, object]] = {}
    with (
        browser.serve(run, data_roots, out_dir / "viewer.log") as url,
        browser.chromium() as chrome,
    ):
        for name, path in PAGES.items():
            page = chrome.new_page(viewport=browser.VIEWPORT)
            outside: list[str] = []
            page.on(
                "request",
                lambda r, out=outside: (
                    None if r.url.startswith((url, "data:", "blob:")) else out.append(r.url)
                ),
            )
            page.goto(f"{url}/{path}")
            browser.settle(page)
            info: dict[str, object] = {"problems": browser.problems(page)}
            info["title"] = page.inner_text("h1")
            if name == "slide":
                browser.wait_event(page, "slide-loaded", 0, timeout_s=60)
                page.wait_for_timeout(500)
                info.update(_view_state(page))
            page.screenshot(path=str(out_dir / f"{name}.png"))
            info["outside_requests"] = outside  # filled until the page closes
            found[name] = info
            if name == "slide":
                info.update(_drive_view(page, out_dir))
                info["problems_after"] = browser.problems(page)
                page.get_by_text("all fine labels").click()
                browser.settle(page)
                page.wait_for_timeout(1500)
                info["multiples"] = page.locator(".hmil-dz-frame").count()
                page.screenshot(path=str(out_dir / "slide_all_labels.png"))
                page.get_by_text("one label").click()
                browser.settle(page)
            if name == "cohort":
                info["matching_before"] = _matching(page)
                _click_confusion_cell(page, 1, 0)  # fine: true and predicted = first class
                info["matching_after"] = _matching(page)
                info["problems_after_click"] = browser.problems(page)
            if name == "slide" and upload is not None:
                t0 = browser.now(page)
                browser.upload(page, *upload)
                up: dict[str, object] = {"problems": browser.problems(page)}
                if upload[1] is not None:
                    browser.wait_event(page, "slide-loaded", t0, timeout_s=60)
                page.wait_for_timeout(500)
                up.update(_view_state(page))
                # the overlay controls were off the page before the bag came: they must show
                # the page's values again, not their own defaults (opacity 0, first colormap)
                sliders = page.locator('[data-testid="stSlider"]', has_text="Opacity")
                up["opacity"] = sliders.first.inner_text()
                cmap = page.locator('[data-testid="stSelectbox"]', has_text="Colormap").first
                up["cmap"] = cmap.locator("input").input_value()
                up["caption"] = page.locator('[data-testid="stCaptionContainer"]').all_inner_texts()
                page.screenshot(path=str(out_dir / "upload.png"))
                found["upload"] = up
            page.close()
    return found


@pytest.mark.browser
def test_every_page_and_the_deep_zoom_view_in_headless_chromium(
    viewer_root: Path, tmp_path: Path
) -> None:
    if not browser.CHROMIUM.is_file():
        pytest.skip("Debian chromium (/usr/bin/chromium) is not installed")
    pytest.importorskip("playwright.sync_api")
    cohort = viewer_root / "cohort"
    upload = (cohort / "features" / "synth-0002.h5", cohort / "slides" / "synth-0002.tiff")
    found = capture(viewer_root / "run", tmp_path, [viewer_root], upload=upload)
    extra = os.environ.get("HMIL_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        for png in tmp_path.glob("*.png"):
            shutil.copy(png, Path(extra) / png.name)
    assert found["slide"]["title"] == "Slide"
    assert found["cohort"]["title"] == "Cohort"
    assert found["train"]["title"] == "Training"
    for name, info in found.items():
        assert info["problems"] == [], (name, info["problems"])
        # offline: nothing is fetched from anywhere but the viewer's own port (the favicon of
        # a ":material/…:" page icon came from fonts.gstatic.com)
        assert info.get("outside_requests", []) == [], (name, info.get("outside_requests"))
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    slide = found["slide"]
    assert slide["width"] > 600 and slide["overlay"] > 0.005, "no attention layer on the view"
    assert "µm" in str(slide["scale"])  # the fixture slides state 0.5 µm/px
    # wheel zoomed in: new tiles were fetched from the viewer's port and drawn
    assert slide["new_tiles"] > 0 and slide["wheel_ms"] < 30_000
    # a label chip redraws the layer in the browser and the page follows (Label box, gallery)
    assert slide["chip_drawn"] and str(slide["chip_target"]) in str(slide["label_box"])
    assert slide["patch_heading"], "clicking a patch opens its details"
    assert slide["problems_after"] == []
    assert slide["multiples"] == 7  # all fine labels of the BRACS hierarchy, one view each
    # clicking a confusion-matrix cell lists that cell's slides only
    assert found["cohort"]["matching_before"] == 24
    assert found["cohort"]["matching_after"] < 24
    assert found["cohort"]["problems_after_click"] == []
    # upload mode: the uploaded bag is predicted and drawn over the uploaded slide
    assert found["upload"]["problems"] == []
    assert found["upload"]["overlay"] > 0.005
    assert any(c.startswith("synth-0002 · ") for c in found["upload"]["caption"])
    assert "0.40" in str(found["upload"]["opacity"]) and found["upload"]["cmap"] == "jet"


def _click_chip(page: Any, index: int) -> float:
    """Click the view's ``index``-th label chip; the page time just before the click."""
    return float(
        page.evaluate(
            """(k) => { const b = document.querySelectorAll('.hmil-dz-chip')[k];
                const t = performance.now(); b.click(); return t; }""",
            index,
        )
    )


@pytest.mark.browser
def test_server_overlay_tiles_signal_drawn_also_when_invisible(
    viewer_root: Path, tmp_path: Path
) -> None:
    """``tiles`` strategy: every label switch ends in a "layer-loaded" mark of that label's
    overlay; at opacity 0 OpenSeadragon loads nothing (so it never reports the item loaded)
    and the view marks it at once."""
    if not browser.CHROMIUM.is_file():
        pytest.skip("Debian chromium (/usr/bin/chromium) is not installed")
    pytest.importorskip("playwright.sync_api")
    with (
        browser.serve(viewer_root / "run", [viewer_root], tmp_path / "viewer.log", "tiles") as url,
        browser.chromium() as chrome,
    ):
        page = chrome.new_page(viewport=browser.VIEWPORT)
        page.goto(url + "/")
        browser.wait_event(page, "layer-loaded", 0, timeout_s=120)
        browser.settle(page)
        t0 = _click_chip(page, 1)
        browser.wait_event(page, "layer-loaded", t0, timeout_s=60)
        shown = browser.events(page, "layer-loaded", t0)[0]
        assert "/hmil/ov/" in shown["url"] and "-1-" in shown["url"]
        assert not shown.get("empty")
        browser.settle(page)
        page.evaluate(
            """() => { const r = document.querySelector('.hmil-dz-opacity input');
                r.value = '0'; r.dispatchEvent(new Event('input')); }"""
        )
        t1 = _click_chip(page, 2)
        browser.wait_event(page, "layer-loaded", t1, timeout_s=10)
        hidden = browser.events(page, "layer-loaded", t1)[0]
        assert hidden.get("empty") is True and "-2-" in hidden["url"]
        assert browser.problems(page) == []


if __name__ == "__main__":
    # python tests/viewer/test_viewer_browser.py RUN OUT_DIR [BAG [SLIDE]]
    run_dir, target = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
    bag_slide = None
    if len(sys.argv) > 3:
        bag_slide = (Path(sys.argv[3]), Path(sys.argv[4]) if len(sys.argv) > 4 else None)
    for page_name, page_info in capture(run_dir, target, [], upload=bag_slide).items():
        print(page_name, page_info)
