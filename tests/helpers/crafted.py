"""Small files that claim huge images, and a child process whose address space is capped.

Memory is only ever measured in :func:`run_capped`'s child: its ``RLIMIT_AS`` is its own size
after the imports plus a budget, so a regression shows as a MemoryError there instead of taking
the machine's memory, and its peak RSS (``VmHWM``, reset per case) is what the tests assert.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[2]
MB = 1 << 20


def forged_tiff(path: Path, side: int, tile: int = 512) -> Path:
    """A tiled TIFF claiming ``side × side`` px whose every tile offset points at one stored
    tile (OpenSlide opens it; ~8 bytes per claimed tile)."""
    pixels = np.full((tile, tile, 3), 200, dtype=np.uint8)
    tifffile.imwrite(path, pixels, tile=(tile, tile), compression="zlib", photometric="rgb")
    return _repeat_first_block(path, side, math.ceil(side / tile) ** 2, "Tile")


def forged_stripped_tiff(path: Path, side: int, rows: int = 64) -> Path:
    """A stripped TIFF (OpenSlide refuses it: the tifffile fallback reads it) claiming
    ``side × side`` px, every strip offset pointing at one stored strip."""
    pixels = np.full((rows, rows, 3), 200, dtype=np.uint8)
    tifffile.imwrite(path, pixels, rowsperstrip=rows, compression="zlib", photometric="rgb")
    return _repeat_first_block(path, side, math.ceil(side / rows), "Strip")


def _repeat_first_block(path: Path, side: int, n: int, kind: str) -> Path:
    """Make the TIFF at ``path`` claim ``side × side`` px in ``n`` blocks (``kind``: Tile or
    Strip), every one pointing at the one block stored."""
    with tifffile.TiffFile(path, mode="r+") as tif:
        page = tif.pages[0]
        assert isinstance(page, tifffile.TiffPage)
        offset, count = page.dataoffsets[0], page.databytecounts[0]
        tags = page.tags
        tags["ImageWidth"].overwrite(side)
        tags["ImageLength"].overwrite(side)
        tags[f"{kind}Offsets"].overwrite([offset] * n)
        tags[f"{kind}ByteCounts"].overwrite([count] * n)
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")


def png_bomb(path: Path, width: int, height: int) -> Path:
    """An RGB PNG of ``width × height`` px of one colour, written row by row without holding
    the image (13000² px is ~0.5 MB on disk and 0.5–3 GB decoded)."""
    row = b"\x00" + bytes([230, 225, 235]) * width  # filter byte + pixels
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )
    return path


def one_level_tiff(path: Path, side: int) -> Path:
    """An ordinary one-level JPEG TIFF of ``side²`` px (smooth SYNTHETIC colours, 256-px
    tiles), the kind a slide exported without its pyramid is."""
    from PIL import Image

    from hmil.demo.tiff import aperio_description, write_pyramid_tiff

    rng = np.random.default_rng(1)
    small = rng.integers(150, 250, size=(side // 64, side // 64, 3), dtype=np.uint8)
    level0 = np.asarray(Image.fromarray(small).resize((side, side), Image.Resampling.BILINEAR))
    desc = aperio_description(side, side, 256, 80, 0.5, 20.0, "SYNTHETIC one-level slide")
    write_pyramid_tiff(path, [level0], mpp=0.5, description=desc, tile=256)
    return path


_PRELUDE = """
import json, resource, sys
sys.path.insert(0, {repo!r})
{imports}

def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise KeyError(key)

_soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
resource.setrlimit(resource.RLIMIT_AS, (_status("VmSize:") + {budget}, _hard))

def reset():
    '''Start a measurement: the peak RSS becomes the current RSS, which is returned.'''
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status("VmRSS:")

def peak_since(base):
    '''MB of peak RSS above ``base`` since the last reset().'''
    return (_status("VmHWM:") - base) / {mb}

result = {{}}
"""


def run_capped(imports: str, body: str, budget: int, timeout: float = 600) -> dict[str, Any]:
    """Run ``body`` after ``imports`` in a fresh interpreter whose address space is capped at
    its size after the imports plus ``budget`` bytes; ``body`` fills the dict ``result`` (it
    may call ``reset()`` and ``peak_since(base)``). Returns ``result``; a crash fails the
    calling test with the child's stderr."""
    script = _PRELUDE.format(
        repo=str(REPO), imports=textwrap.dedent(imports), budget=int(budget), mb=MB
    )
    script += textwrap.dedent(body) + "\nprint('RESULT ' + json.dumps(result))\n"
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (
        f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    )
    out: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    return out
