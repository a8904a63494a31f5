"""Concurrent tile clients against a real ``hmil view``: throughput, latency and the server's
memory, on slides with and without a pyramid and on a file that claims a huge image.

``python -m benchmarks.viewer_load [--clients 8] [--seconds 30] [--cap-gb 10] [--quick]``

1. Writes SYNTHETIC slides into a temporary data root: a pyramidal JPEG TIFF (16384² with
   levels 4× apart, as scanners write), the same picture as a one-level TIFF (a slide exported
   without its pyramid), a PNG of 5000² px (read by the Pillow fallback) and a 1 MB tiled TIFF
   whose tile table claims 100000² px.
2. Starts ``hmil view --data-root ROOT`` on a free port with its address space capped
   (``RLIMIT_AS``, as a hardened deployment would) and opens each slide's page once in headless
   Chromium (``?src=file&file=…``), which registers the slides it shows for the tile routes
   (the forged one is refused by the page in one line, so it has no tiles to request).
3. Runs ``--clients`` threads for ``--seconds``, each requesting tiles at random from every
   Deep Zoom level of every registered slide (mostly cold: the levels hold far more tiles than
   the server's tile cache), and samples the server's RSS every 0.2 s.

Reports requests/s, p50/p95 latency, errors (any answer but a 200, or a 4xx refusal for the
forged file should a page have registered it) and the server's RSS when idle, after the page
visits, its peak under load and after it. Writes ``viewer_load.md`` and
``viewer_load.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SLIDES = ("pyramid.tiff", "one-level.tiff", "image.png", "forged.tiff")
FORGED = "forged.tiff"


def _status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def _rss_mb(pid: int) -> float:
    """RSS of the server and its children (``hmil view`` execs into the server itself)."""
    return _status_kb(pid, "VmRSS:") / 1024


def forged_tiff(path: Path, side: int, tile: int = 512) -> None:
    """A tiled TIFF claiming ``side²`` px whose every tile offset points at one stored tile."""
    import tifffile

    pixels = np.full((tile, tile, 3), 200, dtype=np.uint8)
    tifffile.imwrite(path, pixels, tile=(tile, tile), compression="zlib", photometric="rgb")
    n = math.ceil(side / tile) ** 2
    with tifffile.TiffFile(path, mode="r+") as tif:
        page = tif.pages[0]
        assert isinstance(page, tifffile.TiffPage)
        offset, count = page.dataoffsets[0], page.databytecounts[0]
        for tag, value in (("ImageWidth", side), ("ImageLength", side)):
            page.tags[tag].overwrite(value)
        page.tags["TileOffsets"].overwrite([offset] * n)
        page.tags["TileByteCounts"].overwrite([count] * n)


def png_image(path: Path, side: int) -> None:
    """An RGB PNG of ``side²`` px of one colour, written row by row."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    row = b"\x00" + bytes([230, 200, 220]) * side
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    body = chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def write_slides(root: Path, side: int) -> dict[str, Path]:
    """The four slides of the module docstring (``side``: the TIFFs' level-0 side). Level 0 is
    built in place (256-px colour cells plus a fine texture) so that a 16384² slide costs this
    process its 0.8 GB once, not several copies."""
    from hmil.demo.tiff import aperio_description, write_pyramid_tiff

    rng = np.random.default_rng(0)
    cells = rng.integers(120, 230, size=(side // 256, side // 256, 3), dtype=np.uint8)
    level0 = np.repeat(np.repeat(cells, 256, axis=0), 256, axis=1)
    x = np.arange(side)
    for r0 in range(0, side, 1024):
        y = np.arange(r0, min(side, r0 + 1024))[:, None]
        texture = 8 + 4 * np.sin(x[None, :] / 7.0) + 4 * np.cos(y / 5.0)
        level0[r0 : r0 + 1024] += texture.astype(np.uint8)[:, :, None]
    desc = aperio_description(side, side, 256, 80, 0.5, 20.0, "SYNTHETIC load slide")
    levels = [level0]
    while max(levels[-1].shape[:2]) > 1024:
        factor = 4 ** len(levels)
        levels.append(np.ascontiguousarray(level0[::factor, ::factor]))
    paths = {name: root / name for name in SLIDES}
    write_pyramid_tiff(paths["pyramid.tiff"], levels, mpp=0.5, description=desc, tile=256)
    write_pyramid_tiff(paths["one-level.tiff"], [level0], mpp=0.5, description=desc, tile=256)
    del level0, levels
    png_image(paths["image.png"], 5000)
    forged_tiff(paths[FORGED], 100_000)
    return paths


def _cap(gb: float) -> Any:
    def apply() -> None:
        limit = int(gb * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def start_server(root: Path, log: Path, cap_gb: float) -> tuple[subprocess.Popen[bytes], str]:
    from benchmarks.browser import free_port

    port = free_port()
    command = [sys.executable, "-m", "hmil", "view", "--port", str(port), "--data-root", str(root)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_cap(cap_gb)
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"viewer did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)


def register(url: str, slides: dict[str, Path]) -> dict[str, str]:
    """Open each slide's page once in headless Chromium; its DZI key per slide name (slides
    the page refuses have none: their key is found from the first tile request, if any)."""
    from benchmarks.browser import chromium, settle

    keys: dict[str, str] = {}
    with chromium() as browser:
        for name, path in slides.items():
            page = browser.new_page()
            seen: list[str] = []
            page.on("request", lambda r, seen=seen: seen.append(r.url))
            query = urllib.parse.urlencode({"src": "file", "file": str(path)})
            page.goto(f"{url}/?{query}")
            settle(page)
            for requested in seen:
                if "/hmil/dz/" in requested and requested.endswith(".dzi"):
                    keys[name] = requested.rsplit("/", 1)[1][: -len(".dzi")]
            page.close()
    return keys


def tile_urls(url: str, key: str, size: tuple[int, int]) -> list[str]:
    from viewer.tiles.geometry import DeepZoomGeometry

    geo = DeepZoomGeometry(*size)
    out = []
    for level in range(geo.level_count):
        cols, rows = geo.level_tiles[level]
        for col in range(cols):
            for row in range(rows):
                out.append(f"{url}/hmil/dz/{key}_files/{level}/{col}_{row}.jpeg")
    return out


def load(urls: dict[str, list[str]], clients: int, seconds: float, pid: int) -> dict[str, Any]:
    """``clients`` threads requesting random tiles for ``seconds``; latencies, outcomes and the
    server's RSS sampled every 0.2 s."""
    names = sorted(urls)
    stop = time.monotonic() + seconds
    lock = threading.Lock()
    latencies: list[float] = []
    outcomes: dict[str, int] = {}
    rss: list[float] = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop:
            name = rng.choice(names)
            target = rng.choice(urls[name])
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(target, timeout=120) as r:
                    r.read()
                    status = r.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                status = 0
            took = time.perf_counter() - started
            refused = name == FORGED and 400 <= status < 500  # its one-line refusal
            outcome = "ok" if status == 200 else "refused" if refused else f"error {status}"
            with lock:
                latencies.append(took)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1

    def sample() -> None:
        while time.monotonic() < stop + 1:
            rss.append(_rss_mb(pid))
            time.sleep(0.2)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    sampler.join()
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "req_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(ordered) if ordered else math.nan,
        "p95_ms": 1000 * ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        if ordered
        else math.nan,
        "outcomes": outcomes,
        "errors": sum(n for k, n in outcomes.items() if k.startswith("error")),
        "rss_peak_mb": max(rss) if rss else math.nan,
    }


def machine() -> str:
    cpus = os.cpu_count()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.processor() or platform.machine()}, {cpus} CPUs, {mem:.0f} GB RAM"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent tile clients")
    parser.add_argument("--seconds", type=float, default=30.0, help="duration of the load")
    parser.add_argument("--cap-gb", type=float, default=10.0, help="server RLIMIT_AS (GB)")
    parser.add_argument("--side", type=int, default=16384, help="level-0 side of the TIFFs")
    parser.add_argument("--quick", action="store_true", help="4096² slides, 2 clients, 5 s")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.seconds, args.side = 2, 5.0, 4096
    with tempfile.TemporaryDirectory(prefix="hmil-load-") as tmp:
        root = Path(tmp) / "slides"
        root.mkdir()
        slides = write_slides(root, args.side)
        proc, url = start_server(root, Path(tmp) / "server.log", args.cap_gb)
        try:
            time.sleep(2)
            idle = _rss_mb(proc.pid)
            keys = register(url, slides)
            time.sleep(1)
            visited = _rss_mb(proc.pid)
            sizes = {"pyramid.tiff": (args.side,) * 2, "one-level.tiff": (args.side,) * 2,
                     "image.png": (5000, 5000), FORGED: (100_000, 100_000)}  # fmt: skip
            urls = {name: tile_urls(url, keys[name], sizes[name]) for name in keys}
            result = load(urls, args.clients, args.seconds, proc.pid)
            time.sleep(2)
            result.update(
                rss_idle_mb=idle,
                rss_after_visits_mb=visited,
                rss_after_mb=_rss_mb(proc.pid),
                rss_hwm_mb=_status_kb(proc.pid, "VmHWM:") / 1024,
                alive=proc.poll() is None,
                registered=sorted(keys),
            )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    result.update(
        machine=machine(),
        load=f"{args.clients} clients × {args.seconds:g} s, random tiles of every level of "
        f"{', '.join(sorted(urls))} ({args.side}² TIFFs); pages of all four visited first; "
        f"server RLIMIT_AS {args.cap_gb:g} GB",
        date=time.strftime("%Y-%m-%d"),
    )
    write(result, args.out)
    print(json.dumps(result, indent=1))
    return 0 if result["errors"] == 0 and result["alive"] else 1


def write(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "viewer_load.json").write_text(json.dumps(result, indent=1) + "\n")
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(result["outcomes"].items()))
    rows = [
        ("machine", result["machine"]),
        ("load", result["load"]),
        ("requests/s", f"{result['req_per_s']:.1f} ({result['requests']} requests)"),
        ("latency p50 / p95", f"{result['p50_ms']:.0f} / {result['p95_ms']:.0f} ms"),
        ("outcomes", outcomes),
        ("errors", str(result["errors"])),
        ("server RSS idle → after page visits", f"{result['rss_idle_mb']:.0f} → "
         f"{result['rss_after_visits_mb']:.0f} MB"),
        ("server RSS peak under load (sampled / VmHWM)", f"{result['rss_peak_mb']:.0f} / "
         f"{result['rss_hwm_mb']:.0f} MB"),
        ("server RSS after load", f"{result['rss_after_mb']:.0f} MB"),
        ("server alive after load", str(result["alive"])),
    ]  # fmt: skip
    table = "| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
    (out / "viewer_load.md").write_text(f"# Viewer under tile load ({result['date']})\n\n{table}")


if __name__ == "__main__":
    sys.exit(main())
