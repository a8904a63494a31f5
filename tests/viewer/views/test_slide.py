"""The slide page script on the fixture run: the first slide of the run with its prediction,
the deep-zoom view and the top-k gallery."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest
from viewer_fixtures import APP_TIMEOUT

pytestmark = pytest.mark.usefixtures("app_env")


def _page() -> None:
    import sys

    from viewer.components import shell_ui

    shell_ui.sidebar(shell_ui.settings())
    sys.modules.pop("viewer.views.slide", None)  # the page runs on import
    import viewer.views.slide  # noqa: F401


def test_slide_page_of_a_run() -> None:
    at = AppTest.from_function(_page, default_timeout=APP_TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.sidebar.radio(key="slide_source").value == "run"
    assert at.selectbox(key="slide_pick").value == "synth-0000"
    assert "Prediction:" in " ".join(m.value for m in at.markdown)
    (view,) = at.get("bidi_component")
    assert view.proto.component_name == "hmil_deepzoom"
    assert any(s.value.startswith("Top patches · ") for s in at.subheader)
