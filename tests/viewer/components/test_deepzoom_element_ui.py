"""The deep-zoom element: registered under its name with the viewer's script and styles, and
mounted with the data the browser draws (no browser runs under ``streamlit.testing``)."""

from __future__ import annotations

import json

from streamlit.testing.v1 import AppTest

from viewer.components import deepzoom_element_ui


def _page() -> None:
    from viewer.components.deepzoom_element_ui import deepzoom_view

    def ignore() -> None:
        return None

    data = {"slide": {"mpp": 0.5}, "show": {"label": "DCIS"}}
    deepzoom_view(data, ignore, ignore, ignore, ignore, ignore)


def test_frontend_files_are_shipped() -> None:
    assert deepzoom_element_ui.NAME == "hmil_deepzoom" and deepzoom_element_ui.KEY == "deepzoom"
    assert (deepzoom_element_ui.FRONTEND / "deepzoom.js").read_text(encoding="utf-8").strip()
    assert (deepzoom_element_ui.FRONTEND / "deepzoom.css").is_file()


def test_the_view_is_mounted_with_its_data() -> None:
    at = AppTest.from_function(_page, default_timeout=30)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    (element,) = at.get("bidi_component")
    assert element.proto.component_name == "hmil_deepzoom"
    data = json.loads(element.proto.json or element.proto.mixed.json)
    assert data == {"slide": {"mpp": 0.5}, "show": {"label": "DCIS"}}
