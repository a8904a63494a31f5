"""Which slides (and attention maps) the tile routes may serve, under opaque keys.

A page that shows a slide first admits its file through
:func:`viewer.components.paths.check_under_roots` and then registers it here with the roots it
was admitted under; the browser only ever sees the key. The tile routes resolve a key back to
the file and run the same check again before opening it, so an unknown key, a file that left
the roots or a symlink swapped in later is refused without a read. Keys are a digest of the
resolved path and the file's size and mtime: a rewritten file gets a new key (and fresh tiles),
and nobody can name a file by guessing its path.

One registry lives per process (:func:`shared_registry`): the Streamlit script runs in the same
process as the tile routes under :mod:`viewer.server`, so registering is a dictionary write.
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from viewer.components.paths import check_under_roots

KEY_PATTERN = re.compile(r"^[0-9a-f]{20}$")
#: attention maps kept for overlay tiles (oldest dropped first; a page re-registers on rerun)
MAX_ATTENTION = 32


@dataclass(frozen=True)
class SlideEntry:
    """A registered slide file, the roots it must stay under, and its level-0 size (so that
    tile addresses are checked without opening the file)."""

    path: Path
    roots: tuple[Path, ...]
    size: tuple[int, int]


@dataclass(frozen=True)
class AttentionEntry:
    """Class-wise attention of one prediction, for server-rendered overlay tiles.

    Attributes:
        width, height: level-0 size of the image the overlay covers.
        coords: ``(N, 2)`` level-0 patch corners.
        patch_size: level-0 patch side.
        attention: level name → ``(K_level, N)`` attention.
    """

    width: int
    height: int
    coords: np.ndarray
    patch_size: int
    attention: dict[str, np.ndarray]


def _digest(*parts: object) -> str:
    text = "\x1f".join(str(p) for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class SlideRegistry:
    """Thread-safe key → slide file / attention map tables (see the module docstring)."""

    def __init__(self) -> None:
        self._slides: dict[str, SlideEntry] = {}
        self._attention: OrderedDict[str, AttentionEntry] = OrderedDict()
        self._lock = threading.Lock()

    def register_slide(
        self, path: str | Path, roots: Iterable[str | Path], size: tuple[int, int]
    ) -> str:
        """Admit ``path`` (raises :class:`~viewer.components.paths.PathRefused` outside
        ``roots``), a slide of level-0 ``size = (w, h)``, and return its key."""
        root_list = tuple(Path(r) for r in roots)
        resolved = check_under_roots(path, root_list)
        stat = resolved.stat()
        key = _digest("slide", resolved, stat.st_size, stat.st_mtime_ns)
        with self._lock:
            self._slides[key] = SlideEntry(resolved, root_list, (int(size[0]), int(size[1])))
        return key

    def slide_size(self, key: str) -> tuple[int, int]:
        """Level-0 ``(w, h)`` of a registered key (KeyError for an unknown one)."""
        with self._lock:
            return self._slides[key].size

    def slide_path(self, key: str) -> Path | None:
        """The file of ``key`` after the roots check, or None for an unknown key.

        Raises:
            PathRefused: the file now resolves outside its roots (e.g. a swapped symlink).
        """
        if not KEY_PATTERN.match(key):
            return None
        with self._lock:
            entry = self._slides.get(key)
        if entry is None:
            return None
        return check_under_roots(entry.path, entry.roots)

    def register_attention(self, identity: object, entry: AttentionEntry) -> str:
        """Keep ``entry`` under a key derived from ``identity`` (e.g. checkpoint and bag
        signatures); returns the key."""
        key = _digest("attention", identity)
        with self._lock:
            self._attention[key] = entry
            self._attention.move_to_end(key)
            while len(self._attention) > MAX_ATTENTION:
                self._attention.popitem(last=False)
        return key

    def attention(self, key: str) -> AttentionEntry | None:
        if not KEY_PATTERN.match(key):
            return None
        with self._lock:
            return self._attention.get(key)


@functools.cache
def shared_registry() -> SlideRegistry:
    """The process's registry: the pages write it, :mod:`viewer.tiles.routes` reads it."""
    return SlideRegistry()
