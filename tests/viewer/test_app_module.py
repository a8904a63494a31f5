"""``viewer.app``, the entry script ``hmil view`` serves, imported as a module inside a
Streamlit run: it sets up the pages, the sidebar and the SYNTHETIC banner, and opens the slide
page of the fixture run."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from viewer_fixtures import APP, APP_TIMEOUT

pytestmark = pytest.mark.usefixtures("app_env")


def _entry() -> None:
    """The main script: imports the app (it runs on import, once per page run)."""
    import sys

    sys.modules.pop("viewer.app", None)
    import viewer.app  # noqa: F401


def test_importing_the_app_opens_the_slide_page(tmp_path: Path) -> None:
    # st.Page resolves the page files beside the main script, as they lie beside viewer/app.py
    (tmp_path / "views").symlink_to(APP.parent / "views")
    source = inspect.getsource(_entry) + "\n\n_entry()\n"
    (tmp_path / "entry.py").write_text(source, encoding="utf-8")
    at = AppTest.from_file(str(tmp_path / "entry.py"), default_timeout=APP_TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("SYNTHETIC data" in w.value for w in at.warning)
    assert str(at.sidebar.selectbox(key="run_picker").value).endswith("/run")
    assert at.sidebar.radio(key="slide_source").value == "run"
    assert at.selectbox(key="slide_pick").value == "synth-0000"
    (view,) = at.get("bidi_component")
    assert view.proto.component_name == "hmil_deepzoom"
    at.switch_page("views/cohort.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Cohort"
