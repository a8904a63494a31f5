"""The deep-zoom slide view as a Streamlit components-v2 element (OpenSeadragon in the page).

The JavaScript (``viewer/frontend/deepzoom.js``) and CSS are read once and registered under
:data:`NAME`; OpenSeadragon itself is not inlined: the script loads the vendored build from the
viewer's own port (:data:`viewer.tiles.routes.OSD_URL`), like the tiles. Under
``streamlit.testing`` the element is created with its data (tests read it) but no browser runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

FRONTEND = Path(__file__).resolve().parents[1] / "frontend"
NAME = "hmil_deepzoom"
KEY = "deepzoom"

_mount = st.components.v2.component(
    NAME,
    js=(FRONTEND / "deepzoom.js").read_text(encoding="utf-8"),
    css=(FRONTEND / "deepzoom.css").read_text(encoding="utf-8"),
    isolate_styles=False,  # OpenSeadragon positions its own DOM; classes are prefixed instead
)


def deepzoom_view(
    data: dict[str, Any],
    on_label: Callable[[], None],
    on_alpha: Callable[[], None],
    on_patch: Callable[[], None],
    on_mode: Callable[[], None],
    on_nav: Callable[[], None],
    key: str = KEY,
    on_region: Callable[[], None] | None = None,
) -> Any:
    """Mount the view; the callbacks run (before the next script run) when the browser reports
    a label chosen on the view, the opacity slider released, a patch clicked, "all labels"
    switched, the next / previous slide asked for (button or key), or a region drawn
    (``on_region``: only where regions can be saved)."""
    return _mount(
        key=key,
        data=data,
        on_label_change=on_label,
        on_alpha_change=on_alpha,
        on_patch_change=on_patch,
        on_mode_change=on_mode,
        on_nav_change=on_nav,
        on_region_change=on_region if on_region is not None else _nothing,
        height="content",
    )


def _nothing() -> None:
    """A drawing where regions cannot be saved: the view offers no drawing there."""
