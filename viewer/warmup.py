"""Prepare a fresh viewer process before it takes visitors: the slide page's heavy imports, then
one run of the default page.

A fresh server's first page run spent most of its time importing (torch alone took 4 s on the
2-core development machine); the page modules import these lazily, which keeps ``hmil view
--help`` and the tests of single components light. :mod:`viewer.server` calls :func:`prepare`
while it is imported, i.e. before uvicorn binds the port, so the first visitor neither waits for
these imports nor shares the CPU with them. (An earlier version ran the imports in a thread
beside the running server: the first visitor's page then started while they were still going.)

Imports alone still left the first visitor of a fresh server about 0.2 s slower than the next
ones (first render 1.90–2.21 s on five fresh servers, 1.67–2.03 s for the visitors after them;
demo slide, headless Chromium): Streamlit's and the page's own first-run costs.
:func:`render_page` therefore runs the page once, in this process, with
Streamlit's test harness (:class:`streamlit.testing.v1.AppTest`), which restores Streamlit's
runtime singleton when it is done; the model, the prediction and the slide handle it loads stay
in the process-wide caches that the real pages use. The module list is fixed here and the page
is the viewer's own script: nothing a visitor says becomes an import or a script.
"""

from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path

#: set (to "1") by ``hmil view``: also run the default page once before serving (a bare
#: ``import viewer.server``, as in the tests, only imports)
ENV_RENDER_PAGE = "HMIL_VIEW_WARM_PAGE"

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
    "viewer.core.inference",
    "viewer.tiles.deepzoom_data",
    "viewer.components.deepzoom_ui",
    "viewer.components.slide_pick_ui",
    "viewer.components.topk_ui",
    "skimage.measure:find_contours",
    "skimage.measure:approximate_polygon",
    "skimage.filters:gaussian",
    "streamlit.emojis",  # read once by st.set_page_config to check the emoji favicon (0.1 s)
    "streamlit.testing.v1:AppTest",  # for render_page
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


def render_page(script: Path, timeout_s: float = 120.0) -> list[str]:
    """Run the page ``script`` once as a first visitor would get it (its default page, the
    settings of the environment); returns the problems seen (an exception shown on the page,
    or one raised by the harness), logged and never raised."""
    try:
        from streamlit.testing.v1 import AppTest

        page = AppTest.from_file(str(script), default_timeout=timeout_s).run()
        problems = [str(e.value) for e in page.exception]
    except Exception as exc:  # a warm-up must never take the server down
        problems = [f"{type(exc).__name__}: {exc}"]
    for problem in problems:
        _log.warning("warm-up: the first page run showed: %s", problem)
    return problems


def prepare(script: Path, render: bool) -> float:
    """:func:`warm_imports`, then (``render``) :func:`render_page`; returns the seconds taken."""
    t0 = time.perf_counter()
    warm_imports()
    if render:
        render_page(script)
    return time.perf_counter() - t0
