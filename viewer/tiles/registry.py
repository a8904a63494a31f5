"""Which slides (and attention maps) the tile routes may serve, under opaque keys.

A page that shows a slide first admits its file through
:func:`viewer.core.paths.check_under_roots` and then registers it here with the roots it
was admitted under; the browser only ever sees the key. The tile routes resolve a key back to
the file and run the same check again before opening it, so an unknown key, a file that left
the roots or a symlink swapped in later is refused without a read. Keys are a digest of the
resolved path and the file's size and mtime: a rewritten file gets a new key (and fresh tiles),
and nobody can name a file by guessing its path.

One registry lives per process (:func:`shared_registry`): the Streamlit script runs in the same
process as the tile routes under :mod:`viewer.server`, so registering is a dictionary write.

Open slides are kept in caches bounded in bytes, not entries (:class:`ResidentCache`): sixteen
OpenSlide handles cost ~20 MB, sixteen decoded PNGs could cost gigabytes. One cache of slide
handles (:func:`cached_slide`) serves both the pages and the tile routes, so an image the
fallbacks decode is held once.
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from hmil.slides.reader import Slide, open_slide
from viewer.core.paths import check_under_roots

KEY_PATTERN = re.compile(r"^[0-9a-f]{20}$")
#: attention maps kept for overlay tiles (oldest dropped first; a page re-registers on rerun)
MAX_ATTENTION = 32
#: open slide handles kept by the process (pages and tile routes together), by their resident
#: estimate: 64 OpenSlide handles, or two images at the fallbacks' decoding cap
#: (:data:`hmil.slides.reader.MAX_DECODED_PIXELS`, 128 MiB each); with
#: :data:`SOURCE_CACHE_BYTES` at most ~0.5 GB of the viewer's 1.5 GB budget
SLIDE_CACHE_BYTES = 256 << 20
#: Deep Zoom sources kept by the tile routes, by their resident estimate (their slide's, which
#: may also be in the slide cache, plus the added low-zoom levels, ≤ 16 MiB each)
SOURCE_CACHE_BYTES = 256 << 20

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


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
        """Admit ``path`` (raises :class:`~viewer.core.paths.PathRefused` outside
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


class ResidentCache(Generic[K, V]):
    """An LRU of open objects bounded by their estimated resident bytes.

    ``cache(key)`` returns the object of ``key``, opening it with ``open_(key)`` once (other
    threads asking for the same key wait for that open instead of repeating it). Sizes are
    measured again at every access, because an open slide grows after it was stored (a level
    decoded, low-zoom levels added); the least recently used entries are then dropped until the
    total fits, never the entry just used. Dropped entries are not closed: a request may still
    be reading one, and it is freed with its last reference.
    """

    def __init__(
        self, open_: Callable[[K], V], max_bytes: int, size_of: Callable[[V], int]
    ) -> None:
        self._open = open_
        self._size_of = size_of
        self.max_bytes = max_bytes
        self._items: OrderedDict[K, V] = OrderedDict()
        self._opening: dict[K, threading.Lock] = {}
        self._lock = threading.Lock()

    def __call__(self, key: K) -> V:
        with self._lock:
            if key in self._items:
                return self._use(key)
            opening = self._opening.setdefault(key, threading.Lock())
        with opening:
            with self._lock:
                if key in self._items:
                    return self._use(key)
            try:
                value = self._open(key)
            finally:
                with self._lock:
                    self._opening.pop(key, None)
            with self._lock:
                self._items[key] = value
                return self._use(key)

    def _use(self, key: K) -> V:
        """Mark ``key`` most recent and drop the oldest entries past the budget (lock held)."""
        self._items.move_to_end(key)
        sizes = {k: self._size_of(v) for k, v in self._items.items()}
        total = sum(sizes.values())
        for old in list(self._items):
            if total <= self.max_bytes or old == key:
                break
            total -= sizes[old]
            del self._items[old]
        return self._items[key]

    def total_bytes(self) -> int:
        with self._lock:
            return sum(self._size_of(v) for v in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def _open_slide_key(key: tuple[str, int, int]) -> Slide:
    return open_slide(key[0])


@functools.cache
def slide_cache() -> ResidentCache[tuple[str, int, int], Slide]:
    """The process's open slide handles, keyed by ``(resolved path, mtime_ns, size)``."""
    return ResidentCache(_open_slide_key, SLIDE_CACHE_BYTES, Slide.resident_bytes)


def cached_slide(path: str | Path) -> Slide:
    """The open handle of ``path`` shared by the pages and the tile routes (a rewritten file
    gets a new one). Raises SlideError, OSError."""
    resolved = Path(path).resolve()
    try:
        stat = resolved.stat()
    except OSError:
        return open_slide(resolved)  # raises SlideError naming the file
    return slide_cache()((str(resolved), stat.st_mtime_ns, stat.st_size))


@functools.cache
def shared_registry() -> SlideRegistry:
    """The process's registry: the pages write it, :mod:`viewer.tiles.routes` reads it."""
    return SlideRegistry()
