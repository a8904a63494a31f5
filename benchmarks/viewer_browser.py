"""Time the slide page's deep-zoom view in headless Chromium, both attention-layer strategies.

``python -m benchmarks.viewer_browser [RUN] [--out benchmarks/results/viewer_browser]
[--shots DIR]`` starts ``hmil view`` once per overlay strategy (``canvas``: coloured in the
browser from the patch scores; ``tiles``: server-rendered overlay tiles) and measures, on the
demo run's first slide and on real test slides (``--slides``; uploaded with bags made by
``hmil tile`` + ``hmil extract --encoder hed-texture`` and predicted by the run's model):

* first render — page navigation (demo) or upload (real slides) until the first view's
  tiles are all drawn; the demo slide for the first visitor of a fresh server (model,
  prediction, slide caches cold), for further visitors (server warm, browser cache empty) and
  for a returning visitor (browser cache warm);
* wheel — one wheel notch at the view's centre until the new level's tiles are all drawn
  (includes OpenSeadragon's 0.25 s zoom animation), and a 200 px drag likewise;
* tile latency — p50/p95 of tile requests, sequentially over HTTP on loopback, cold (first
  decode) and cached (server LRU hit), and as the browser saw them during the runs above
  (up to 8 in parallel);
* label switch — a label chosen on the view's label strip until the layer is redrawn
  (``canvas``) or its tiles are all drawn (``tiles``);
* next slide — key ``n`` along the demo's misclassified slides until the next slide is drawn.

Everything is timed with the page's own clock (``performance.now``). The model is the run's
(the demo: SYNTHETIC); on the real slides its attention means nothing — only the speed counts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks import browser

SHARED_SLIDES = Path(__file__).resolve().parents[2] / "shared" / "data" / "slides"
REAL_SLIDES = ("cmu-1-small-region.svs", "tcga-cr-7395-01a-01-ts1.svs")
STRATEGIES = ("canvas", "tiles")
REPEAT = 3
#: generous: on a loaded 2-core machine the first page load alone can take minutes
TIMEOUT_S = 600


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _median(values: list[float]) -> float:
    """Median of the finite values (NaN: none finished in time)."""
    done = [v for v in values if v == v]
    return statistics.median(done) if done else float("nan")


def make_bags(slides: list[Path], work: Path) -> dict[str, Path]:
    """Bags of the real slides (``hmil tile`` + ``hmil extract``), made once into ``work``."""
    bags = {s.stem: work / "bags" / f"{s.stem}.h5" for s in slides}
    missing = [s for s in slides if not bags[s.stem].is_file()]
    if missing:
        hmil = [sys.executable, "-m", "hmil"]
        paths = [str(s) for s in missing]
        subprocess.run([*hmil, "tile", *paths, "--out", str(work / "tiles"), "--quiet"], check=True)
        subprocess.run(
            [*hmil, "extract", *paths, "--patches", str(work / "tiles"), "--out",
             str(work / "bags"), "--quiet"],
            check=True,
        )  # fmt: skip
    return bags


def _frame_centre(page: Any) -> tuple[float, float]:
    box = page.locator(".hmil-dz-frame").first.bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def _tile_timings(page: Any, after: float) -> list[float]:
    """Durations (ms) of the slide-tile requests the browser made after page time ``after``."""
    return page.evaluate(
        """(a) => performance.getEntriesByType('resource')
            .filter(e => e.name.includes('/hmil/dz/') && e.name.endsWith('.jpeg'))
            .filter(e => e.startTime > a).map(e => e.responseEnd - e.startTime)""",
        after,
    )


def _settled(page: Any, t0: float) -> float:
    """ms from ``t0`` until the view's tiles are drawn; NaN when that takes over 2 minutes
    (recorded, not fatal: the machine may be swamped by other jobs)."""
    try:
        return browser.wait_tiles_drawn(page, t0) - t0
    except Exception:  # Playwright's TimeoutError
        return float("nan")


def _wheel(page: Any) -> float:
    """One wheel notch in at the centre until the new tiles are drawn (ms)."""
    x, y = _frame_centre(page)
    page.mouse.move(x, y)
    t0 = browser.now(page)
    page.mouse.wheel(0, -120)
    return _settled(page, t0)


def _drag(page: Any, dx: float) -> float:
    x, y = _frame_centre(page)
    page.mouse.move(x, y)
    t0 = browser.now(page)
    page.mouse.down()
    page.mouse.move(x + dx, y + dx / 2, steps=5)
    page.mouse.up()
    return _settled(page, t0)


def _shows(event: dict[str, Any], index: int) -> bool:
    """Whether a "layer-loaded" mark is of the overlay of label ``index`` (of the level shown:
    its tile URL is ``…/<level>-<index>-<cmap>-…``)."""
    return f"-{index}-" in str(event.get("url"))


def _wait_layer(page: Any, index: int, after: float, timeout_s: float = 120) -> float:
    """Page time when the overlay tiles of label ``index`` are all drawn (after ``after``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        hits = [e for e in browser.events(page, "layer-loaded", after) if _shows(e, index)]
        if hits:
            return float(hits[0]["t"])
        page.wait_for_timeout(20)
    raise RuntimeError(f"overlay of label {index} not drawn within {timeout_s:.0f} s")


def _chip_switch(page: Any, name: str, strategy: str, index: int) -> float:
    """Click the label chip ``name`` (the ``index``-th label) on the view until the layer
    shows it (ms)."""
    t0 = page.evaluate(
        """(n) => { const b = Array.from(document.querySelectorAll('.hmil-dz-chip'))
              .find(c => c.dataset.label === n);
            const t = performance.now(); b.click(); return t; }""",
        name,
    )
    if strategy == "tiles":
        return _wait_layer(page, index, t0) - t0
    # the layer is recoloured and drawn in the click handler; count until the next frame
    t1 = page.evaluate("() => new Promise(r => requestAnimationFrame(() => r(performance.now())))")
    on = page.evaluate("() => document.querySelector('.hmil-dz-chip.on')?.dataset.label")
    assert on == name, f"label {name} was not drawn (the view shows {on})"
    return float(t1) - t0


def _next_slide(page: Any, strategy: str) -> float:
    """Key ``n`` (next slide of the browse list) until the next slide's view is drawn: its
    slide tiles loaded (and with ``tiles`` its overlay), ms."""
    page.mouse.move(5, 5)  # off the view: the key goes to the page, the tooltip is away
    t0 = browser.now(page)
    page.keyboard.press("n")
    return _first_drawn(page, strategy, t0) - t0


def _has_next(page: Any) -> bool:
    button = page.locator(".hmil-dz-next")
    return bool(button.count()) and button.is_enabled()


def measure_next(page: Any, url: str, strategy: str) -> list[float]:
    """Key ``n`` until the next slide is drawn, ``REPEAT`` times, each step to a slide not yet
    shown (its prediction not cached): along the demo's misclassified slides (list
    ``wrong_fine``) while there are more, then along all slides from the middle of the run."""
    _say(f"{strategy}: next slide")
    times: list[float] = []
    for address in ("/?list=wrong_fine", "/?list=all&slide=synth-024"):
        page.goto(url + address)
        _first_drawn(page, strategy, 0.0)
        browser.settle(page)
        while len(times) < REPEAT and _has_next(page):
            times.append(_next_slide(page, strategy))
            browser.settle(page)
        assert browser.problems(page) == [], browser.problems(page)
    return times


def _labels(page: Any) -> list[str]:
    return page.evaluate(
        "() => Array.from(document.querySelectorAll('.hmil-dz-chip')).map(c => c.dataset.label)"
    )


def _key(page: Any) -> str:
    """The slide's tile key (from the view's tile requests)."""
    names = page.evaluate(
        "() => performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => n.includes('/hmil/dz/'))"
    )
    match = re.search(r"/hmil/dz/([0-9a-f]{20})", names[-1]) if names else None
    if match is None:
        raise RuntimeError("the view requested no slide tiles")
    return match.group(1)


def _xml_int(xml: str, attribute: str, url: str) -> int:
    match = re.search(rf'{attribute}="(\d+)"', xml)
    if match is None:
        raise RuntimeError(f"{url}: the DZI has no {attribute}")
    return int(match.group(1))


def http_tile_latency(url: str, key: str, levels: int = 3, limit: int = 60) -> dict[str, Any]:
    """Sequential tile requests over loopback of the ``levels`` deepest Deep Zoom levels, cold
    (first request of each tile) then cached (the same tiles again); milliseconds."""
    with urllib.request.urlopen(f"{url}/hmil/dz/{key}.dzi", timeout=30) as r:
        xml = r.read().decode()
    w, h = (_xml_int(xml, name, url) for name in ("Width", "Height"))
    from viewer.tiles.geometry import DeepZoomGeometry

    geo = DeepZoomGeometry(w, h)
    addresses = [
        (level, col, row)
        for level in range(geo.level_count - levels, geo.level_count)
        for col in range(geo.level_tiles[level][0])
        for row in range(geo.level_tiles[level][1])
    ][:limit]
    out: dict[str, list[float]] = {"cold": [], "cached": []}
    for phase in ("cold", "cached"):
        for level, col, row in addresses:
            t0 = time.perf_counter()
            with urllib.request.urlopen(
                f"{url}/hmil/dz/{key}_files/{level}/{col}_{row}.jpeg", timeout=30
            ) as r:
                r.read()
            out[phase].append((time.perf_counter() - t0) * 1000)
    return {"n": len(addresses), **out}


def _first_drawn(page: Any, strategy: str, after: float) -> float:
    """Page time when the first view is drawn: slide tiles (and overlay tiles) all loaded."""
    loaded = browser.wait_event(page, "slide-loaded", after, timeout_s=TIMEOUT_S)
    if strategy == "tiles":
        loaded = max(loaded, browser.wait_event(page, "layer-loaded", after, timeout_s=TIMEOUT_S))
    return loaded


def measure_page(
    page: Any, strategy: str, first_ms: float, shots: Path | None, name: str, since: float
) -> dict[str, Any]:
    """Wheel, drag and label switches on a page whose view is drawn (since page time
    ``since``), once the page's script run has ended."""
    browser.settle(page)
    _say(f"{strategy} {name}: wheel, drag, label switches")
    wheel = [_wheel(page) for _ in range(REPEAT)]
    drag = [_drag(page, -200.0), _drag(page, 150.0)]
    if shots is not None:
        page.screenshot(path=str(shots / f"{name}_{strategy}_zoomed.png"))
    labels = _labels(page)
    picks = [(i + 1) % len(labels) for i in range(REPEAT)]
    chip = [_chip_switch(page, labels[k], strategy, k) for k in picks]
    page.wait_for_timeout(1500)  # the page's rerun after the last chip click
    browser.settle(page)
    return {
        "first_render_ms": first_ms,
        "wheel_ms": wheel,
        "drag_ms": drag,
        "label_switch_view_ms": chip,
        "browser_tile_ms": _tile_timings(page, since),
    }


def _say(text: str) -> None:
    """One progress line on stderr (a run takes minutes)."""
    print(f"[benchmarks.viewer_browser] {text}", file=sys.stderr, flush=True)


def _first_visit(chrome: Any, url: str, strategy: str) -> tuple[Any, Any, float]:
    """A new visitor (fresh browser context: empty cache) opens the page: (context, page, page
    time when the first view is drawn); the page must show no error."""
    _say(f"{strategy}: a new visitor")
    page = browser.new_page(chrome)
    context = page.context
    context.set_default_timeout(TIMEOUT_S * 1000)
    page.goto(url + "/")
    loaded = _first_drawn(page, strategy, 0.0)
    assert browser.problems(page) == [], browser.problems(page)
    return context, page, loaded


def fresh_first_render(run: Path, strategy: str, work: Path, name: str) -> tuple[float, float]:
    """One more freshly started server and freshly launched browser: (first render, server
    start-up), both ms — the first visitor's wait varies from start to start."""
    timings: dict[str, float] = {}
    log = work / f"viewer-{strategy}-{name}.log"
    with (
        browser.serve(run, [work], log, overlay=strategy, timings=timings) as url,
        browser.chromium() as chrome,
    ):
        context, _, loaded = _first_visit(chrome, url, strategy)
        context.close()
    return loaded, timings["startup_s"] * 1000


def run_strategy(
    run: Path,
    strategy: str,
    work: Path,
    real: list[str],
    bags: dict[str, Path],
    shots: Path | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    timings: dict[str, float] = {}
    with (
        browser.serve(
            run, [work], work / f"viewer-{strategy}.log", overlay=strategy, timings=timings
        ) as url,
        browser.chromium() as chrome,
    ):
        # first visitor of the fresh server; then REPEAT visitors with an empty browser cache;
        # then one visitor coming back REPEAT times (browser cache warm: Streamlit's and
        # OpenSeadragon's scripts are served "immutable", the tiles are not cached)
        warm_empty, returning = [], []
        for visit in range(1 + REPEAT):
            context, page, loaded = _first_visit(chrome, url, strategy)
            if visit == 0:
                if shots is not None:
                    page.wait_for_timeout(800)
                    page.screenshot(path=str(shots / f"demo_{strategy}.png"))
                out["demo"] = measure_page(page, strategy, loaded, shots, "demo", 0.0)
                out["demo"]["http_tiles_ms"] = http_tile_latency(url, _key(page))
                out["demo"]["next_slide_ms"] = measure_next(page, url, strategy)
            else:
                warm_empty.append(loaded)
            if visit == REPEAT:
                for _ in range(REPEAT):
                    page.goto(url + "/")
                    returning.append(_first_drawn(page, strategy, 0.0))
            context.close()
        fresh = [(out["demo"]["first_render_ms"], timings["startup_s"] * 1000)]
        out["demo"]["first_render_warm_runs_ms"] = warm_empty
        out["demo"]["first_render_warm_ms"] = _median(warm_empty)
        out["demo"]["first_render_returning_runs_ms"] = returning
        out["demo"]["first_render_returning_ms"] = _median(returning)
        for slide_name in real:
            slide = SHARED_SLIDES / slide_name
            stem = slide.stem
            page = browser.new_page(chrome)
            context = page.context
            context.set_default_timeout(TIMEOUT_S * 1000)
            page.goto(url + "/")
            browser.wait_event(page, "slide-loaded", 0, timeout_s=TIMEOUT_S)
            browser.settle(page)
            page.get_by_text("Upload a bag").click()
            inputs = page.locator('input[type="file"]')
            inputs.first.wait_for(state="attached", timeout=60_000)
            inputs.nth(1).set_input_files(str(slide))
            page.wait_for_function(
                "document.querySelectorAll('[data-testid=stFileChip]').length >= 1"
            )
            t0 = browser.now(page)
            inputs.nth(0).set_input_files(str(bags[stem]))
            loaded = _first_drawn(page, strategy, t0) - t0
            browser.settle(page)
            assert browser.problems(page) == [], browser.problems(page)
            if shots is not None:
                page.screenshot(path=str(shots / f"{stem}_{strategy}.png"))
            out[stem] = measure_page(page, strategy, loaded, shots, stem, t0)
            out[stem]["http_tiles_ms"] = http_tile_latency(url, _key(page))
            context.close()
    fresh += [fresh_first_render(run, strategy, work, f"fresh{i}") for i in range(1, REPEAT)]
    out["demo"]["first_render_fresh_runs_ms"] = [f for f, _ in fresh]
    out["demo"]["startup_runs_ms"] = [s for _, s in fresh]
    out["demo"]["first_render_ms"] = _median([f for f, _ in fresh])
    return out


def summarise(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (strategy, slide): medians and percentiles in milliseconds."""
    rows = []
    for strategy, slides in raw["strategies"].items():
        for slide, m in slides.items():
            http = m["http_tiles_ms"]
            rows.append(
                {
                    "strategy": strategy,
                    "slide": slide,
                    "first_render": m["first_render_ms"],
                    "first_render_max": max(m.get("first_render_fresh_runs_ms") or [float("nan")]),
                    "startup": _median(m["startup_runs_ms"]) if "startup_runs_ms" in m else None,
                    "first_render_warm": m.get("first_render_warm_ms"),
                    "first_render_returning": m.get("first_render_returning_ms"),
                    "wheel_median": _median(m["wheel_ms"]),
                    "drag_median": _median(m["drag_ms"]),
                    "tile_cold_p50": _pct(http["cold"], 50),
                    "tile_cold_p95": _pct(http["cold"], 95),
                    "tile_cached_p50": _pct(http["cached"], 50),
                    "tile_cached_p95": _pct(http["cached"], 95),
                    "browser_tile_p50": _pct(m["browser_tile_ms"], 50),
                    "browser_tile_p95": _pct(m["browser_tile_ms"], 95),
                    "label_view_median": _median(m["label_switch_view_ms"]),
                    "label_view_max": max(m["label_switch_view_ms"]),
                    "next_median": _median(m.get("next_slide_ms") or [float("nan")]),
                    "next_max": max(m.get("next_slide_ms") or [float("nan")]),
                }
            )
    return rows


def markdown(raw: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    def f(v: Any) -> str:
        return "–" if v is None or v != v else f"{v:.0f}"

    shared = (
        " (the machine was shared with other jobs)" if raw["load_average_before"][0] > 1 else ""
    )
    lines = [
        "# Viewer in headless Chromium: deep-zoom view timings",
        "",
        f"Measured by `python -m benchmarks.viewer_browser` on {raw['cpus']} CPU cores, Chromium "
        f"{raw['chromium']}, {raw['date']}; load average (1/5/15 min) "
        f"{'/'.join(f'{v:.1f}' for v in raw['load_average_before'])} before and "
        f"{'/'.join(f'{v:.1f}' for v in raw['load_average_after'])} after{shared}. "
        f"Run: `{raw['run']}` (SYNTHETIC demo: its first slide). "
        "Real slides (uploaded, bags by `hmil tile` + `hmil extract "
        "--encoder hed-texture`, predicted by the demo model — the attention means nothing, the "
        "speed does): `cmu-1-small-region.svs` (2220 × 2967, 1 level, OpenSlide) and "
        "`tcga-cr-7395-01a-01-ts1.svs` (4443 × 3567, 2 levels, no MPP). All times in ms.",
        "",
        "| layer | slide | server start-up | first render (max) | first render, server warm | "
        "first render, returning visitor | wheel → new tiles drawn "
        "| drag → tiles drawn | tile cold p50 / p95 | tile cached p50 / p95 | tiles in the "
        "browser p50 / p95 | label switch on the view (median / max) | next slide drawn "
        "(median / max) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        first = f(r["first_render"])
        if r["first_render_max"] == r["first_render_max"]:  # not NaN: several fresh starts
            first += f" ({f(r['first_render_max'])})"
        lines.append(
            f"| {r['strategy']} | {r['slide']} | {f(r['startup'])} | {first} | "
            f"{f(r['first_render_warm'])} | {f(r['first_render_returning'])} | "
            f"{f(r['wheel_median'])} | {f(r['drag_median'])} | "
            f"{f(r['tile_cold_p50'])} / {f(r['tile_cold_p95'])} | "
            f"{f(r['tile_cached_p50'])} / {f(r['tile_cached_p95'])} | "
            f"{f(r['browser_tile_p50'])} / {f(r['browser_tile_p95'])} | "
            f"{f(r['label_view_median'])} / {f(r['label_view_max'])} | "
            f"{f(r['next_median'])} / {f(r['next_max'])} |"
        )
    lines += [
        "",
        "* server start-up: from launching `hmil view` until it answers its health check, "
        "median of 3 starts; it binds the port only after its warm-up (imports, one run of the "
        "default page: `viewer/warmup.py`), so this includes it.",
        "* first render: demo — navigation until the first view's tiles are drawn, for the "
        "first visitor of a freshly started server and a freshly launched browser, median (and "
        "max) of 3 starts (model load, prediction, tile decode); server warm: "
        "the median of 3 further visitors, each with an empty browser cache; returning visitor: "
        "the median of 3 reloads by one visitor whose browser has cached the page's scripts "
        "(served as immutable) — the tiles and the script run are not cached by the browser; "
        "real slides — from choosing the bag (slide already uploaded) until drawn, i.e. upload "
        "+ prediction + first tiles.",
        "* wheel: one notch at the centre until the new level's tiles are all drawn, including "
        "OpenSeadragon's 0.25 s zoom animation; median of 3 successive notches.",
        "* tile cold / cached: sequential HTTP requests on loopback over the three deepest Deep "
        "Zoom levels (≤ 60 tiles), first decode vs. server LRU hit. Tiles in the browser: the "
        "resource timings of every tile the page loaded (up to 8 in parallel, cold).",
        "* label switch on the view: click on a label chip until the layer is redrawn (canvas: "
        "to the next animation frame) or its overlay tiles are all drawn (tiles).",
        "* next slide: on the demo, key `n` until the next slide's tiles (and layer) are "
        "drawn, each step to a slide not shown before (its prediction made on the way: one "
        "script run with the model loaded, and a new OpenSeadragon view): along the "
        "misclassified slides (`?list=wrong_fine`, 2 on the demo, so 1 step) and then along "
        "all slides from `synth-024`; median / max of 3 steps.",
    ]
    return "\n".join(lines) + "\n"


def chromium_version() -> str:
    try:
        out = subprocess.run(
            [str(browser.CHROMIUM), "--version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    found = re.search(r"\d+(\.\d+)+", out.stdout)  # "Chromium 156.0.8078.114 built on …"
    return found.group(0) if found else "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", default="hmil-demo/run", help="run directory")
    parser.add_argument(
        "--out", default="benchmarks/results/viewer_browser", help="results path without suffix"
    )
    parser.add_argument("--shots", help="save screenshots here")
    parser.add_argument("--work", help="folder for the real slides' bags (default: a temp dir)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument(
        "--slides", default=",".join(REAL_SLIDES), help="real test slides, by file name"
    )
    args = parser.parse_args(argv)
    run = Path(args.run).resolve()
    if not (run / "config.yaml").is_file():
        print(f"error: {run}: not a run directory", file=sys.stderr)
        return 2
    if not browser.CHROMIUM.is_file():
        print(f"error: {browser.CHROMIUM}: chromium is not installed", file=sys.stderr)
        return 2
    work = Path(args.work or tempfile.mkdtemp(prefix="hmil-viewer-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    shots = Path(args.shots).resolve() if args.shots else None
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
    real = [s for s in args.slides.split(",") if s]
    bags = make_bags([SHARED_SLIDES / s for s in real], work)
    raw: dict[str, Any] = {
        "run": str(run),
        "cpus": os.cpu_count(),
        "chromium": chromium_version(),
        "date": time.strftime("%Y-%m-%d"),
        "strategies": {},
    }
    raw["load_average_before"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for strategy in args.strategies.split(","):
        raw["strategies"][strategy] = run_strategy(run, strategy, work, real, bags, shots)
        raw["load_average_after"] = os.getloadavg()
        rows = summarise(raw)
        raw["summary"] = rows
        out.with_suffix(".json").write_text(json.dumps(raw, indent=2))  # kept per strategy
        text = markdown(raw, rows)
        out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
