"""The training page script: its title, the run monitor and the launch form."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest
from viewer_fixtures import APP_TIMEOUT

pytestmark = pytest.mark.usefixtures("app_env")


def _page() -> None:
    import sys

    from viewer.components import shell_ui

    shell_ui.sidebar(shell_ui.settings())
    sys.modules.pop("viewer.views.train", None)  # the page runs on import
    import viewer.views.train  # noqa: F401


def test_training_page_shows_monitor_and_form() -> None:
    at = AppTest.from_function(_page, default_timeout=APP_TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Training"
    assert [s.value for s in at.subheader][:2] == ["Runs", "Launch"]
    assert at.text_input(key="tr_out").value
    assert at.number_input(key="tr_epochs").value == 2  # the open run's
