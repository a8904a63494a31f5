"""Real browser: ``hmil view`` on a free localhost port, every page in headless Chromium.

Needs Debian's ``/usr/bin/chromium`` (``./run.sh test`` installs it) and the ``playwright``
Python package (driven with ``executable_path``, so no browser download); skipped otherwise.
Screenshots go to the test's temporary folder, and also to ``$HMIL_SCREENSHOT_DIR`` when set.

By hand (e.g. for ``docs/screenshots``)::

    python tests/viewer/test_viewer_browser.py hmil-demo/run docs/screenshots
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PAGES = {"slide": "", "cohort": "cohort", "train": "train"}
MAIN_VIEW_WIDTH = 768


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(run: Path, data_roots: list[Path], log: Path) -> Iterator[str]:
    """``hmil view RUN`` on a free port; yields the base URL, stops the server after."""
    port = _free_port()
    command = [sys.executable, "-m", "hmil", "view", str(run), "--port", str(port)]
    for root in data_roots:
        command += ["--data-root", str(root)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"viewer did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def _settle(page: object, timeout_s: float = 90.0) -> None:
    """Wait for the first heading, the end of the script run and of lazy-loaded widgets."""
    page.wait_for_selector("h1", timeout=timeout_s * 1000)  # type: ignore[attr-defined]
    page.wait_for_function(  # type: ignore[attr-defined]
        "document.querySelectorAll('[data-testid=stSkeleton]').length === 0",
        timeout=timeout_s * 1000,
    )
    quiet, deadline = 0, time.monotonic() + 30
    while quiet < 3 and time.monotonic() < deadline:
        page.wait_for_timeout(400)  # type: ignore[attr-defined]
        running = page.query_selector('[data-testid="stStatusWidget"]')  # type: ignore[attr-defined]
        quiet = 0 if running else quiet + 1
    page.wait_for_timeout(1000)  # type: ignore[attr-defined]


def _problems(page: object) -> list[str]:
    """Texts of exception and error elements on the page."""
    selector = '[data-testid="stException"], [data-testid="stAlertContentError"]'
    return [e.inner_text() for e in page.query_selector_all(selector)]  # type: ignore[attr-defined]


def _overlay_fraction(png: bytes) -> float:
    """Share of pixels of the main view coloured by the jet overlay's green-cyan middle range
    (green clearly above red and blue: no H&E or glass pixel looks like that)."""
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return float(((g > r + 10) & (g > b + 10)).mean())


def _main_view(page: object) -> dict[str, object]:
    """Natural width and overlay share of the main view image (the first ``st.image``)."""
    main = page.locator('[data-testid="stImage"] img').first  # type: ignore[attr-defined]
    return {
        "main_width": main.evaluate("i => i.naturalWidth"),
        "overlay": _overlay_fraction(main.screenshot()),
    }


def _matching(page: object) -> int:
    """The number in the cohort page's "Matching slides — N slide(s)" line."""
    text = page.locator("p", has_text="Matching slides").first.inner_text()  # type: ignore[attr-defined]
    return int(text.split("—")[1].split()[0])


def _click_confusion_cell(page: object, chart: int, index: int) -> None:
    """Click cell ``index`` (row-major) of confusion chart ``chart`` (0 coarse, 1 fine), the
    way a user does: hover the cell, then press and release."""
    plot = page.locator('[data-testid="stPlotlyChart"]').nth(chart)  # type: ignore[attr-defined]
    box = plot.locator(".scatterlayer .point").nth(index).bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 3, y)  # type: ignore[attr-defined]
    page.wait_for_timeout(300)  # type: ignore[attr-defined]
    page.mouse.move(x, y)  # type: ignore[attr-defined]
    page.wait_for_timeout(600)  # type: ignore[attr-defined]
    page.mouse.down()  # type: ignore[attr-defined]
    page.mouse.up()  # type: ignore[attr-defined]
    _settle(page)


def _upload(page: object, bag: Path, slide: Path | None) -> None:
    """Switch the slide page to upload mode and upload a bag (and a slide)."""
    page.get_by_text("Upload a bag").click()  # type: ignore[attr-defined]
    inputs = page.locator('input[type="file"]')  # type: ignore[attr-defined]
    inputs.first.wait_for(state="attached", timeout=60_000)
    inputs.nth(0).set_input_files(str(bag))
    if slide is not None:
        page.wait_for_timeout(1000)  # type: ignore[attr-defined]
        inputs.nth(1).set_input_files(str(slide))
    page.wait_for_function(  # type: ignore[attr-defined]
        "Array.from(document.querySelectorAll('[data-testid=stFileChip]')).length >= "
        + ("2" if slide is not None else "1"),
        timeout=60_000,
    )
    _settle(page)


def capture(
    run: Path,
    out_dir: Path,
    data_roots: list[Path],
    upload: tuple[Path, Path | None] | None = None,
) -> dict[str, dict[str, object]]:
    """Load every page, screenshot it into ``out_dir``; returns per page what was found.

    With ``upload = (bag, slide or None)`` the slide page is also shown in upload mode
    (``upload.png``), predicting the uploaded bag with the default checkpoint.
    """
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    found: dict[str, dict[str, object]] = {}
    profile = out_dir / ".chromium-profile"
    with serve(run, data_roots, out_dir / "viewer.log") as url, sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(profile),  # Playwright's form of --user-data-dir
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1500, "height": 2000},
        )
        try:
            for name, path in PAGES.items():
                page = browser.new_page()
                page.goto(f"{url}/{path}")
                _settle(page)
                info: dict[str, object] = {"problems": _problems(page)}
                info["title"] = page.inner_text("h1")
                if name == "slide":
                    info.update(_main_view(page))
                    info["overview"] = page.locator("iframe").count()
                page.screenshot(path=str(out_dir / f"{name}.png"))
                found[name] = info
                if name == "cohort":
                    info["matching_before"] = _matching(page)
                    _click_confusion_cell(page, 1, 0)  # fine: true and predicted = first class
                    info["matching_after"] = _matching(page)
                    info["problems_after_click"] = _problems(page)
                if name == "slide" and upload is not None:
                    _upload(page, *upload)
                    up: dict[str, object] = {"problems": _problems(page), **_main_view(page)}
                    up["caption"] = page.locator(
                        '[data-testid="stCaptionContainer"]'
                    ).all_inner_texts()
                    page.screenshot(path=str(out_dir / "upload.png"))
                    found["upload"] = up
                page.close()
        finally:
            browser.close()
            shutil.rmtree(profile, ignore_errors=True)
    return found


@pytest.mark.browser
def test_every_page_in_headless_chromium(viewer_root: Path, tmp_path: Path) -> None:
    if not CHROMIUM.is_file():
        pytest.skip("Debian chromium (/usr/bin/chromium) is not installed")
    pytest.importorskip("playwright.sync_api")
    cohort = viewer_root / "cohort"
    upload = (cohort / "features" / "synth-0002.h5", cohort / "slides" / "synth-0002.tiff")
    found = capture(viewer_root / "run", tmp_path, [viewer_root], upload=upload)
    extra = os.environ.get("HMIL_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        for name in [*PAGES, "upload"]:
            shutil.copy(tmp_path / f"{name}.png", Path(extra) / f"{name}.png")
    assert found["slide"]["title"] == "Slide"
    assert found["cohort"]["title"] == "Cohort"
    assert found["train"]["title"] == "Training"
    for name, info in found.items():
        assert info["problems"] == [], (name, info["problems"])
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    assert found["slide"]["main_width"] == MAIN_VIEW_WIDTH
    assert found["slide"]["overlay"] > 0.01, "no attention overlay colours in the main view"
    assert found["slide"]["overview"] >= 1  # the clickable overview component
    # clicking a confusion-matrix cell lists that cell's slides only
    assert found["cohort"]["matching_before"] == 24
    assert found["cohort"]["matching_after"] < 24
    assert found["cohort"]["problems_after_click"] == []
    # upload mode: the uploaded bag is predicted and drawn over the uploaded slide
    assert found["upload"]["problems"] == []
    assert found["upload"]["main_width"] == MAIN_VIEW_WIDTH and found["upload"]["overlay"] > 0.01
    assert any(c.startswith("synth-0002 · ") for c in found["upload"]["caption"])


if __name__ == "__main__":
    # python tests/viewer/test_viewer_browser.py RUN OUT_DIR [BAG [SLIDE]]
    run_dir, target = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
    bag_slide = None
    if len(sys.argv) > 3:
        bag_slide = (Path(sys.argv[3]), Path(sys.argv[4]) if len(sys.argv) > 4 else None)
    for page_name, page_info in capture(run_dir, target, [], upload=bag_slide).items():
        print(page_name, page_info)
