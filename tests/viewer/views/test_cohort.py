"""The cohort page script on the fixture run: its title, the filters, metrics and the slide
tables; without a run it says how to open one."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest
from viewer_fixtures import APP_TIMEOUT

pytestmark = pytest.mark.usefixtures("app_env")


def _page(with_run: bool) -> None:
    import sys

    from viewer.components import shell_ui

    if with_run:
        shell_ui.sidebar(shell_ui.settings())
    sys.modules.pop("viewer.views.cohort", None)  # the page runs on import
    import viewer.views.cohort  # noqa: F401


def test_cohort_page_of_a_run() -> None:
    at = AppTest.from_function(_page, args=(True,), default_timeout=APP_TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Cohort"
    assert at.radio(key="co_level").value == "fine"
    assert at.selectbox(key="co_true").value == "(any)"
    subheaders = [s.value for s in at.subheader]
    assert "Slides" in subheaders
    assert any(s.startswith("Misclassified at the ") for s in subheaders)
    assert at.dataframe, "the slide tables"
    assert "Calibration: reliability diagrams" in subheaders
    assert not at.checkbox(key="co_withheld").disabled  # the fixture run has calls
    listing = at.dataframe(key="co_listing").value
    forms = ("no call", "fine: ", " — subtype uncertain")
    assert all(w == forms[0] or w.startswith(forms[1]) or w.endswith(forms[2])
               for w in listing["call"])  # fmt: skip
    at.checkbox(key="co_withheld").check().run()
    assert not at.exception, [e.value for e in at.exception]
    withheld = at.dataframe(key="co_listing").value
    assert not withheld["call"].str.startswith("fine: ").any()


def test_cohort_page_without_a_run() -> None:
    at = AppTest.from_function(_page, args=(False,), default_timeout=APP_TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Cohort"
    assert "No run is open" in at.info[0].value
