"""The viewer as one ASGI app: the Streamlit pages plus the tile routes, on one port.

``hmil view`` runs ``python -m streamlit run viewer/server.py``: Streamlit 1.67 finds the
``st.App`` below and serves it under uvicorn, so the Deep Zoom tiles and the vendored
OpenSeadragon come from the same host and port as the pages (no second server, no CORS, one
process to stop). ``uvicorn viewer.server:app`` works as well. The pages register the slides
they show in :func:`viewer.tiles.registry.shared_registry`, which these routes read. Importing
this module runs :mod:`viewer.warmup` before the port is bound: the slide page's heavy imports,
and with ``hmil view`` one run of the default page, so the first visitor finds a warm process.

Every request, pages, websocket and tiles alike, first passes :class:`viewer.access.AccessGuard`
with the policy of the ``HMIL_VIEW_*`` settings: the server answers only to its own address
(and the names given with ``--allow-host``), and to holders of the access token when one is set.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # `streamlit run viewer/server.py` puts only viewer/ first
    sys.path.insert(0, str(HERE.parent))

import streamlit as st  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from viewer import warmup  # noqa: E402
from viewer.access import AccessGuard, AccessPolicy  # noqa: E402
from viewer.state import ViewerSettings, settings_from_env  # noqa: E402
from viewer.tiles.routes import tile_routes  # noqa: E402

APP_SCRIPT = HERE / "app.py"

warmup.prepare(APP_SCRIPT, render=os.environ.get(warmup.ENV_RENDER_PAGE) == "1")


def access_policy(settings: ViewerSettings) -> AccessPolicy:
    """Who may talk to a server started with ``settings`` (viewer/access.py)."""
    return AccessPolicy.for_bind(settings.host, settings.allow_hosts, settings.token)


app = st.App(
    str(APP_SCRIPT),
    routes=tile_routes(),
    middleware=[Middleware(AccessGuard, policy=access_policy(settings_from_env()))],
)
