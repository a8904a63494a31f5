"""Import the slide page's heavy modules while ``hmil view`` starts, not on the first visit.

A fresh server's first page run spent most of its time importing (torch alone took 4 s on the
2-core development machine); the page modules import these lazily, which keeps ``hmil view
--help`` and the tests of single components light. :func:`start` runs the imports in a daemon
thread beside the server, so the first visitor finds them in ``sys.modules`` (Python's import
lock makes a page that needs one of them meanwhile wait for it rather than import it twice).
The list is fixed here: nothing a page or a visitor says becomes an import.
"""

from __future__ import annotations

import importlib
import logging
import threading

#: what the slide page imports on its first run (prediction, slide reading, attention layer,
#: lesion outline, the tile routes' overlay blur), in the order the page needs them.
#: ``module:name`` also reads ``name`` from the module: scikit-image loads its submodules lazily
#: on first attribute access, so ``import skimage.measure`` alone left 1.3 s of imports (scipy)
#: to the first visitor's lesion outline (measured)
MODULES = (
    "torch",
    "hmil.predict",
    "hmil.slides.reader",
    "hmil.heatmap",
    "viewer.components.inference",
    "viewer.components.deepzoom_data",
    "viewer.components.deepzoom_ui",
    "viewer.components.slide_pick",
    "viewer.components.topk_ui",
    "skimage.measure:find_contours",
    "skimage.measure:approximate_polygon",
    "skimage.filters:gaussian",
    "streamlit.emojis",  # read once by st.set_page_config to check the emoji favicon (0.1 s)
)

_log = logging.getLogger(__name__)


def warm_imports(modules: tuple[str, ...] = MODULES) -> list[str]:
    """Import ``modules`` (``module:name`` also reads that attribute); returns those that
    failed (logged, never raised: a page that needs one reports the problem itself)."""
    failed = []
    for name in modules:
        module, _, attribute = name.partition(":")
        try:
            loaded = importlib.import_module(module)
            if attribute:
                getattr(loaded, attribute)
        except Exception as exc:  # a warm-up must never take the server down
            _log.warning("warm-up: cannot import %s: %s", name, exc)
            failed.append(name)
    return failed


def start(modules: tuple[str, ...] = MODULES) -> threading.Thread:
    """Run :func:`warm_imports` in a daemon thread and return it."""
    thread = threading.Thread(target=warm_imports, args=(modules,), name="hmil-warmup", daemon=True)
    thread.start()
    return thread
