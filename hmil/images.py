"""PNG files: the one writer of every picture hmil saves (heatmaps, QC thumbnails, crops)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from hmil.io import atomic_path


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Encode an ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` uint8 image as PNG at ``path`` (no
    temporary file: for a caller that already writes into one)."""
    Image.fromarray(np.asarray(image)).save(path, format="PNG")


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write ``image`` (see :func:`write_png`) as PNG atomically: a temporary sibling renamed
    into place, so a reader never sees half a file. Returns the path."""
    out = Path(path)
    with atomic_path(out) as tmp:
        write_png(tmp, image)
    return out
