"""Real browser: ``hmil view`` on a free localhost port, every page in headless Chromium, and
the deep-zoom view driven by drag, wheel, a label switch and a patch click.

Needs Debian's ``/usr/bin/chromium`` (``./run.sh test`` installs it) and the ``playwright``
Python package (driven with ``executable_path``, so no browser download); skipped otherwise.
Screenshots go to the test's temporary folder, and also to ``$HMIL_SCREENSHOT_DIR`` when set.

By hand (e.g. for ``docs/screenshots``)::

    python tests/viewer/test_app_browser.py hmil-demo/run docs/screenshots [BAG [SLIDE]]
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

from benchmarks import browser

PAGES = {"slide": "", "cohort": "cohort", "train": "train"}


def _overlay_fraction(page: Any) -> float:
    """Share of the first view's pixels the attention layer colours: the view with the layer,
    then without it (the strip's "attention" switch), pixels that differ (the legend, shown
    only with the layer, left out)."""
    from PIL import Image

    frame = page.locator(".hmil-dz-frame").first
    switch = page.locator(".hmil-dz-visible input")
    on = np.asarray(Image.open(io.BytesIO(frame.screenshot())).convert("RGB")).astype(int)
    switch.uncheck()
    page.wait_for_timeout(200)
    off = np.asarray(Image.open(io.BytesIO(frame.screenshot())).convert("RGB")).astype(int)
    switch.check()
    page.wait_for_timeout(200)
    changed = np.abs(on - off).max(axis=2) > 12
    box = frame.bounding_box()
    legend = page.locator(".hmil-dz-frame .hmil-dz-legend").first.bounding_box()
    if legend:
        x0, y0 = int(legend["x"] - box["x"]), int(legend["y"] - box["y"])
        changed[max(0, y0) : y0 + int(legend["height"]) + 1,
                max(0, x0) : x0 + int(legend["width"]) + 1] = False  # fmt: skip
    return float(changed.mean())


def _view_state(page: Any) -> dict[str, object]:
    """What the deep-zoom view shows: its size, the layer's share, scale bar, label."""
    frame = page.locator(".hmil-dz-frame").first
    box = frame.bounding_box()
    return {
        "width": box["width"],
        "overlay": _overlay_fraction(page),
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


def _label_param(page: Any) -> str | None:
    from urllib.parse import parse_qs, urlparse

    return parse_qs(urlparse(page.url).query).get("label", [None])[0]


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
    chips.nth(0).click()
    # the view switches at once, before the page is told: the chip is on, the legend names it
    drawn = page.locator(".hmil-dz-chip.on").first.get_attribute("data-label") == target
    found["chip_target"], found["chip_drawn"] = target, drawn
    browser.settle(page)
    # the page followed (the gallery's heading) and the address names the label
    found["gallery"] = [t for t in page.locator("h3").all_inner_texts() if "Top patches" in t]
    found["label_param"] = _label_param(page)
    found["legend"] = page.locator(".hmil-dz-frame .hmil-dz-legend").first.inner_text()
    page.mouse.click(x, y)  # a patch under the centre (the demo slides are covered there)
    browser.settle(page)
    found["patch_heading"] = [
        t for t in page.locator("p").all_inner_texts() if t.startswith("Patch ")
    ]
    page.screenshot(path=str(out_dir / "slide_hover.png"))
    # the page scrolls inside Streamlit's main block: bring the patch panel into the window
    heading = page.locator("p", has_text="Patch ").first
    if heading.count():
        heading.scroll_into_view_if_needed()
        page.wait_for_timeout(400)
    page.screenshot(path=str(out_dir / "slide_patch.png"))
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
            page = browser.new_page(chrome)
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
            if name == "slide":
                browser.wait_event(page, "slide-loaded", 0, timeout_s=60)
                page.wait_for_timeout(500)
                info.update(_view_state(page))
                info["frame_box"] = page.locator(".hmil-dz-frame").first.bounding_box()
            else:
                info["title"] = page.inner_text("h1")
            page.screenshot(path=str(out_dir / f"{name}.png"))
            info["outside_requests"] = outside  # filled until the page closes
            found[name] = info
            if name == "slide":
                info.update(_drive_view(page, out_dir))
                info["problems_after"] = browser.problems(page)
                page.locator(".hmil-dz-mode").click()
                browser.settle(page)
                page.wait_for_timeout(1500)
                info["multiples"] = page.locator(".hmil-dz-frame").count()
                info["multiples_box"] = page.locator(".hmil-dz-frame").last.bounding_box()
                info["shared_legend"] = page.locator(".hmil-dz-legend-shared").inner_text()
                page.screenshot(path=str(out_dir / "slide_all_labels.png"))
                page.locator(".hmil-dz-mode").click()
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
                up["opacity"] = page.locator(".hmil-dz-opacity input").input_value()
                uploaders = page.locator('[data-testid="stFileUploader"]')
                up["uploader_text"] = uploaders.all_inner_texts()
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
    assert found["cohort"]["title"] == "Cohort"
    assert found["train"]["title"] == "Training"
    for name, info in found.items():
        assert info["problems"] == [], (name, info["problems"])
        # offline: nothing is fetched from anywhere but the viewer's own port (the favicon of
        # a ":material/…:" page icon came from fonts.gstatic.com)
        assert info.get("outside_requests", []) == [], (name, info.get("outside_requests"))
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    slide = found["slide"]
    # the view first: on screen without scrolling at 1600×1000, most of the window
    frame = slide["frame_box"]
    assert frame["y"] < 320 and frame["y"] + frame["height"] <= 1000, frame
    assert frame["height"] >= 560 and frame["width"] >= 900, frame
    assert slide["overlay"] > 0.002, "no attention layer on the view"
    assert "µm" in str(slide["scale"])  # the fixture slides state 0.5 µm/px
    # wheel zoomed in: new tiles were fetched from the viewer's port and drawn
    assert slide["new_tiles"] > 0 and slide["wheel_ms"] < 30_000
    # a label chip redraws the layer in the browser and the page follows (gallery, address)
    target = str(slide["chip_target"])
    assert slide["chip_drawn"] and any(target in g for g in slide["gallery"])
    assert slide["label_param"] == target
    assert "×1" in str(slide["legend"]) and "average patch" in str(slide["legend"])
    assert slide["patch_heading"], "clicking a patch opens its details"
    assert slide["problems_after"] == []
    assert slide["multiples"] == 7  # all fine labels of the BRACS hierarchy, one view each
    # small multiples fill the width and fit the window, under one shared legend
    assert slide["multiples_box"]["y"] + slide["multiples_box"]["height"] <= 1000
    assert "every label" in str(slide["shared_legend"])
    # clicking a confusion-matrix cell lists that cell's slides only
    assert found["cohort"]["matching_before"] == 24
    assert found["cohort"]["matching_after"] < 24
    assert found["cohort"]["problems_after_click"] == []
    # upload mode: the uploaded bag is predicted and drawn over the uploaded slide
    assert found["upload"]["problems"] == []
    assert found["upload"]["overlay"] > 0.002 and found["upload"]["opacity"] == "0.5"
    # the uploaders state the viewer's limit, not Streamlit's rounding of it ("1GB per file")
    texts = " ".join(found["upload"]["uploader_text"])
    assert "1GB" not in texts and "MB" in texts


def _patch_headings(page: Any) -> list[str]:
    return [t for t in page.locator("p").all_inner_texts() if t.startswith("Patch ")]


def _params(page: Any) -> dict[str, str]:
    from urllib.parse import parse_qs, urlparse

    return {k: v[-1] for k, v in parse_qs(urlparse(page.url).query).items()}


def _tip_visible(page: Any) -> bool:
    return bool(
        page.evaluate(
            "() => getComputedStyle(document.querySelector('.hmil-dz-tip')).display !== 'none'"
        )
    )


@pytest.mark.browser
def test_slide_page_links_steps_and_gestures_in_headless_chromium(
    viewer_root: Path, tmp_path: Path
) -> None:
    """Every view is a link (reload and back), next slide forgets the previous one, and the
    view's gestures: a double-click zooms without selecting a patch, a keyboard zoom under a
    still pointer moves the tooltip with it, "all labels" stays on across a level switch."""
    if not browser.CHROMIUM.is_file():
        pytest.skip("Debian chromium (/usr/bin/chromium) is not installed")
    pytest.importorskip("playwright.sync_api")
    with (
        browser.serve(viewer_root / "run", [viewer_root], tmp_path / "viewer.log") as url,
        browser.chromium() as chrome,
    ):
        page = browser.new_page(chrome)
        page.goto(url + "/")
        browser.wait_event(page, "slide-loaded", 0, timeout_s=120)
        browser.settle(page)
        first = _params(page)
        assert first["slide"] == "synth-0000" and first["level"] == "fine" and "zoom" in first
        box = page.locator(".hmil-dz-frame").first.bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        # double-click: zoom in, no patch selected
        zoom_before = float(_params(page)["zoom"])
        page.mouse.dblclick(x, y)
        page.wait_for_timeout(1200)
        browser.settle(page)
        assert _patch_headings(page) == []
        assert float(_params(page)["zoom"]) > zoom_before * 1.5
        # a keyboard zoom under a still pointer (off the centre, which a zoom keeps in place):
        # the tooltip follows what is under it
        page.mouse.move(x + box["width"] * 0.15, y + box["height"] * 0.12)
        page.wait_for_timeout(300)
        assert _tip_visible(page)
        tip_before = page.locator(".hmil-dz-tip").inner_text()
        page.evaluate("() => document.querySelector('.hmil-dz-osd .openseadragon-canvas').focus()")
        for _ in range(5):  # the point under the pointer moves 5 zoom steps away from it
            page.keyboard.press("-")
            page.wait_for_timeout(300)
        page.wait_for_timeout(600)
        tip_after = page.locator(".hmil-dz-tip").inner_text() if _tip_visible(page) else ""
        assert tip_after != tip_before  # another patch (or none) is under the pointer now
        # choose a label on the view, reload: the same picture
        chip = page.locator(".hmil-dz-chip").nth(2)
        label = chip.get_attribute("data-label")
        chip.click()
        browser.settle(page)
        page.wait_for_timeout(600)
        before = _params(page)
        assert before["label"] == label
        page.reload()
        browser.wait_event(page, "slide-loaded", 0, timeout_s=120)
        browser.settle(page)
        page.wait_for_timeout(800)
        after = _params(page)
        assert page.locator(".hmil-dz-chip.on").inner_text() == label
        assert after["slide"] == before["slide"] and after["label"] == label
        assert float(after["zoom"]) == pytest.approx(float(before["zoom"]), rel=0.05)
        assert abs(float(after["x"]) - float(before["x"])) <= 0.02 * float(before["x"]) + 64
        # next slide (key n): its own predicted label, no tooltip, nothing selected
        page.mouse.click(x, y)  # select a patch on this slide first
        browser.settle(page)
        assert _patch_headings(page)
        page.mouse.move(5, 5)
        t0 = browser.now(page)
        page.keyboard.press("n")
        browser.wait_event(page, "slide-loaded", t0, timeout_s=120)
        browser.settle(page)
        moved = _params(page)
        assert moved["slide"] != before["slide"]
        assert _patch_headings(page) == [] and not _tip_visible(page)
        on = page.locator(".hmil-dz-chip.on")
        assert "pred" in (on.get_attribute("class") or "")  # opens on its predicted label
        # back: the previous slide, with its label
        page.go_back()
        browser.wait_event(page, "slide-loaded", t0 + 1, timeout_s=120)
        browser.settle(page)
        assert _params(page)["slide"] == before["slide"]
        # all labels, then the other level: still all labels, now the coarse ones
        page.locator(".hmil-dz-mode").click()
        browser.settle(page)
        assert page.locator(".hmil-dz-frame").count() == 7
        page.locator(".hmil-dz-level", has_text="coarse").click()
        page.wait_for_timeout(800)
        browser.settle(page)
        assert page.locator(".hmil-dz-frame").count() == 3
        assert "on" in (page.locator(".hmil-dz-mode").get_attribute("class") or "")
        assert browser.problems(page) == []


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
    """``tiles`` strategy: every label switch loads that label's overlay tiles and the view
    draws them; at opacity 0 the view still asks for the label's overlay (invisible, so
    OpenSeadragon loads nothing and the timing script marks it at once)."""
    if not browser.CHROMIUM.is_file():
        pytest.skip("Debian chromium (/usr/bin/chromium) is not installed")
    pytest.importorskip("playwright.sync_api")
    with (
        browser.serve(viewer_root / "run", [viewer_root], tmp_path / "viewer.log", "tiles") as url,
        browser.chromium() as chrome,
    ):
        page = browser.new_page(chrome)
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
    # python tests/viewer/test_app_browser.py RUN OUT_DIR [BAG [SLIDE]]
    run_dir, target = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
    bag_slide = None
    if len(sys.argv) > 3:
        bag_slide = (Path(sys.argv[3]), Path(sys.argv[4]) if len(sys.argv) > 4 else None)
    for page_name, page_info in capture(run_dir, target, [], upload=bag_slide).items():
        print(page_name, page_info)
