"""HMIL Studio viewer — the page script that ``viewer/server.py`` serves (``hmil view [RUN]``).

``streamlit run viewer/app.py`` also works, but without the tile routes of
:mod:`viewer.server`: the slide page's deep-zoom view then says it needs ``hmil view``.

Builds the navigation (slide, cohort, training pages; training only where
:attr:`viewer.state.ViewerSettings.training_enabled`), the shared sidebar run picker and the
SYNTHETIC banner, then runs the selected page. The page scripts live in ``viewer/views/``, not
``viewer/pages/``: Streamlit treats a ``pages/`` folder beside the entry script as a legacy
multipage app and would run ``/cohort`` without this script (no sidebar, no settings).
Settings come from ``HMIL_VIEW_*`` environment variables set by ``hmil view``
(see :mod:`viewer.state`).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # `streamlit run viewer/app.py` puts only viewer/ on the path
    sys.path.insert(0, str(HERE.parent))

import streamlit as st  # noqa: E402

from viewer.components import shell_ui  # noqa: E402

st.set_page_config(page_title="HMIL Studio", page_icon="🔬", layout="wide")

cfg = shell_ui.settings()
pages = [
    st.Page(
        "views/slide.py", title="Slide", icon=":material/biotech:", url_path="slide", default=True
    ),
    st.Page("views/cohort.py", title="Cohort", icon=":material/analytics:", url_path="cohort"),
]
if cfg.training_enabled:  # a page left out of the navigation is never run, whatever is asked
    pages.append(
        st.Page(
            "views/train.py", title="Training", icon=":material/model_training:", url_path="train"
        )
    )
page = st.navigation(pages)
shell_ui.compact_layout()
if page.url_path in ("", "slide"):
    shell_ui.apply_address()
run = shell_ui.sidebar(cfg)
if run is not None:
    shell_ui.synthetic_banner(run)
elif cfg.checkpoint is not None and "demo" in cfg.checkpoint.parts:
    st.warning(
        "**SYNTHETIC demo model** — no run is open; the demo checkpoint was trained on generated "
        "data (no patient data).",
        icon=":material/science:",
    )
page.run()
