"""The viewer as one ASGI app: the Streamlit pages plus the tile routes, on one port.

``hmil view`` runs ``python -m streamlit run viewer/server.py``: Streamlit 1.67 finds the
``st.App`` below and serves it under uvicorn, so the Deep Zoom tiles and the vendored
OpenSeadragon come from the same host and port as the pages (no second server, no CORS, one
process to stop). ``uvicorn viewer.server:app`` works as well. The pages register the slides
they show in :func:`viewer.tiles.registry.shared_registry`, which these routes read. Importing
this module runs :mod:`viewer.warmup` before the port is bound: the slide page's heavy imports,
and with ``hmil view`` one run of the default page, so the first visitor finds a warm process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # `streamlit run viewer/server.py` puts only viewer/ first
    sys.path.insert(0, str(HERE.parent))

import streamlit as st  # noqa: E402

from viewer import warmup  # noqa: E402
from viewer.tiles.routes import tile_routes  # noqa: E402

APP_SCRIPT = HERE / "app.py"

warmup.prepare(APP_SCRIPT, render=os.environ.get(warmup.ENV_RENDER_PAGE) == "1")

app = st.App(str(APP_SCRIPT), routes=tile_routes())
