"""Driving the viewer in a real headless Chromium (the browser test and the benchmark).

Uses Debian's ``/usr/bin/chromium`` through Playwright's ``executable_path`` (no browser
download) and starts ``hmil view`` on a free localhost port. Playwright is a dev dependency,
imported only when a browser is launched.

The shipped front end carries no timing code: every page opened by :func:`new_page` gets
:data:`TIMING_SCRIPT` before the page's own scripts, which watches OpenSeadragon from outside
(its viewers' events) and records the marks that :func:`events` and :func:`wait_event` read.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
#: what a pathologist's laptop shows; every screenshot and check of the viewer is taken at this size
VIEWPORT = {"width": 1600, "height": 1000}


#: marks in page time (``performance.now``, ms) in ``window.__hmilTiming.events``:
#: ``tile`` (a tile arrived), ``draw`` (a frame drawn), ``settled`` (a zoom or pan animation
#: ended), ``open``, ``slide-loaded`` (the slide's tiles in view all drawn), ``layer-request`` /
#: ``layer-loaded`` (``url``: the overlay tiles of one label; ``empty``: asked for at opacity 0,
#: where OpenSeadragon loads nothing, so it is marked at once); ``busy()`` counts the tile
#: requests in flight and ``labelPending`` is true until a label chosen on the view (chip, level,
#: key t) has reached the page (the view tells it after 350 ms without another choice)
TIMING_SCRIPT = """
(() => {
  const T = (window.__hmilTiming = { events: [], labelPending: false });
  const mark = (name, extra) => {
    T.events.push({ name, t: performance.now(), ...(extra || {}) });
    if (T.events.length > 4000) T.events.splice(0, 2000);
  };
  let OSD = null;
  const viewers = () => OSD ? Array.from(OSD._viewers.values())
    .filter((v) => !(v instanceof OSD.Navigator)) : [];
  T.busy = () => viewers().reduce((n, v) => n + v.imageLoader.jobsInProgress, 0);
  let chosen = 0;
  const choice = () => {
    chosen = performance.now();
    T.labelPending = true;
    setTimeout(() => { T.labelPending = performance.now() - chosen < 450; }, 460);
  };
  document.addEventListener("click", (e) => {
    if (e.target instanceof Element && e.target.closest(".hmil-dz-chip, .hmil-dz-level"))
      choice();
  }, true);
  document.addEventListener("keydown", (e) => { if (e.key === "t") choice(); }, true);
  const watch = (viewer) => {
    // the overlay's tiled image is asked for in the same task as the viewer is made
    const layers = new Map(); // overlay item -> its tile source URL
    const add = viewer.addTiledImage.bind(viewer);
    viewer.addTiledImage = (options) => {
      const url = options.tileSource;
      mark("layer-request", { url });
      if (options.opacity <= 0) mark("layer-loaded", { url, empty: true });
      const success = options.success;
      const added = (e) => { layers.set(e.item, url); if (success) success(e); };
      return add({ ...options, success: added });
    };
    // after the constructor: its world exists, nothing has been fetched yet
    queueMicrotask(() => handlers(viewer, layers));
  };
  const handlers = (viewer, layers) => {
    viewer.addHandler("tile-loaded", () => mark("tile"));
    viewer.addHandler("update-viewport", () => mark("draw"));
    viewer.addHandler("animation-finish", () => mark("settled"));
    viewer.addHandler("open", () => mark("open"));
    viewer.world.addHandler("add-item", (e) => {
      e.item.addHandler("fully-loaded-change", (f) => {
        if (!f.fullyLoaded) return;
        if (layers.has(e.item)) mark("layer-loaded", { url: layers.get(e.item) });
        else mark("slide-loaded");
      });
    });
  };
  const hook = () => {
    if (OSD || !window.OpenSeadragon) return;
    OSD = window.OpenSeadragon;
    const registry = OSD._viewers;
    const set = registry.set.bind(registry);
    registry.set = (element, viewer) => {
      set(element, viewer);
      if (!(viewer instanceof OSD.Navigator)) watch(viewer);
      return registry;
    };
  };
  // the view loads OpenSeadragon with a script tag: hook it before the view's onload runs
  document.addEventListener("load", hook, true);
})();
"""


def new_page(chrome: Any) -> Any:
    """A page of a fresh browser context (empty cache) at :data:`VIEWPORT`, with
    :data:`TIMING_SCRIPT` installed; closing the page's context is the caller's."""
    context = chrome.new_context(viewport=VIEWPORT)
    context.add_init_script(TIMING_SCRIPT)
    return context.new_page()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(
    run: Path,
    data_roots: list[Path],
    log: Path,
    overlay: str = "canvas",
    timings: dict[str, float] | None = None,
) -> Iterator[str]:
    """``hmil view RUN`` on a free port; yields the base URL, stops the server after.
    ``timings["startup_s"]`` gets the seconds from launch until the server answered its health
    check (it binds the port only after its warm-up, :mod:`viewer.warmup`)."""
    port = free_port()
    command = [sys.executable, "-m", "hmil", "view", str(run), "--port", str(port)]
    command += ["--overlay", overlay]
    for root in data_roots:
        command += ["--data-root", str(root)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        deadline = started + 300
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"viewer did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        if timings is not None:
            timings["startup_s"] = time.monotonic() - started
        yield url
    finally:
        proc.terminate()  # hmil view is the server itself (exec): this stops it
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A Playwright browser on Debian's chromium (a fresh temporary profile)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


def settle(page: Any, timeout_s: float = 300.0) -> None:
    """Wait for the first heading, a label chosen on the view to reach the page, the end of
    the script run and of lazy-loaded widgets."""
    page.wait_for_selector("h1, .hmil-dz, [data-testid=stAlert]", timeout=timeout_s * 1000)
    page.wait_for_function(
        "!(window.__hmilTiming && window.__hmilTiming.labelPending)", timeout=timeout_s * 1000
    )
    page.wait_for_function(
        "document.querySelectorAll('[data-testid=stSkeleton]').length === 0",
        timeout=timeout_s * 1000,
    )
    quiet, deadline = 0, time.monotonic() + timeout_s
    while quiet < 3 and time.monotonic() < deadline:
        page.wait_for_timeout(400)
        running = page.query_selector('[data-testid="stStatusWidget"]')
        quiet = 0 if running else quiet + 1
    page.wait_for_timeout(500)


def events(page: Any, name: str, after: float = 0.0) -> list[dict[str, Any]]:
    """The marks called ``name`` (:data:`TIMING_SCRIPT`) after page time ``after`` (ms)."""
    return page.evaluate(
        "([n, a]) => (window.__hmilTiming || {events: []})"
        ".events.filter(e => e.name === n && e.t > a)",
        [name, after],
    )


def wait_event(page: Any, name: str, after: float = 0.0, timeout_s: float = 60.0) -> float:
    """Page time (ms) of the first mark ``name`` after ``after``."""
    page.wait_for_function(
        "([n, a]) => (window.__hmilTiming || {events: []})"
        ".events.some(e => e.name === n && e.t > a)",
        arg=[name, after],
        timeout=timeout_s * 1000,
    )
    return float(events(page, name, after)[0]["t"])


def wait_tiles_drawn(page: Any, after: float, timeout_s: float = 120.0) -> float:
    """Page time (ms) when the view has settled after an interaction at ``after``: the zoom or
    pan animation finished, no tile request is in flight, and the last tile that arrived has
    been drawn (the first frame drawn after it)."""
    page.wait_for_function(
        """(a) => { const d = window.__hmilTiming; if (!d) return false;
            const ev = d.events.filter(e => e.t > a);
            const settled = ev.some(e => e.name === 'settled');
            const tiles = ev.filter(e => e.name === 'tile');
            const last = tiles.length ? tiles[tiles.length - 1].t : a;
            return settled && d.busy() === 0 && performance.now() - last > 300
                && ev.some(e => e.name === 'draw' && e.t >= last); }""",
        arg=after,
        timeout=timeout_s * 1000,
        polling=50,
    )
    ev = [e for e in page.evaluate("window.__hmilTiming.events") if e["t"] > after]
    tiles = [e["t"] for e in ev if e["name"] == "tile"]
    if not tiles:
        return float(next(e["t"] for e in ev if e["name"] == "settled"))
    return float(next(e["t"] for e in ev if e["name"] == "draw" and e["t"] >= tiles[-1]))


def now(page: Any) -> float:
    return float(page.evaluate("performance.now()"))


def problems(page: Any) -> list[str]:
    """Texts of exception and error elements on the page."""
    selector = '[data-testid="stException"], [data-testid="stAlertContentError"]'
    return [e.inner_text() for e in page.query_selector_all(selector)]


def upload(page: Any, bag: Path, slide: Path | None) -> None:
    """Switch the slide page to upload mode and upload a slide (if given), then its bag — the
    order of the benchmark, where the page runs twice without the overlay controls."""
    page.get_by_text("Upload a bag").click()
    inputs = page.locator('input[type="file"]')
    inputs.first.wait_for(state="attached", timeout=60_000)
    if slide is not None:
        inputs.nth(1).set_input_files(str(slide))
        page.wait_for_function(
            "document.querySelectorAll('[data-testid=stFileChip]').length >= 1", timeout=60_000
        )
        settle(page)
    inputs.nth(0).set_input_files(str(bag))
    page.wait_for_function(
        "Array.from(document.querySelectorAll('[data-testid=stFileChip]')).length >= "
        + ("2" if slide is not None else "1"),
        timeout=60_000,
    )
    settle(page)
