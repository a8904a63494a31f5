"""Cohort page sections on the fixture run: the per-fold metrics table, the filters (level,
classes of that level, folds of the run) and the filter they return."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from viewer_fixtures import APP_TIMEOUT

from viewer.components import cohort_ui

pytestmark = pytest.mark.usefixtures("app_env")


def _page(run: str) -> None:
    from pathlib import Path

    import streamlit as st

    from viewer.components import cohort_ui, shell_ui

    info, predictions = cohort_ui.load(Path(run), shell_ui.settings().roots)
    cohort_ui.metrics_section(Path(run))
    chosen = cohort_ui.filters(info, predictions)
    st.text(f"{chosen.level} {chosen.true_class} {chosen.folds} {len(predictions)}")


def test_metrics_and_filters(viewer_root: Path) -> None:
    at = AppTest.from_function(_page, args=(str(viewer_root / "run"),), default_timeout=APP_TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.subheader[0].value == "Test metrics per fold"
    assert at.caption[0].value.startswith("2 finished fold(s)")
    assert at.radio(key="co_level").value == "fine"
    true = at.selectbox(key="co_true")
    assert true.options[0] == cohort_ui.ANY and len(true.options) == 1 + 7  # BRACS fine classes
    assert at.multiselect(key="co_folds").options == ["0", "1"]
    assert at.text[-1].value == "fine None () 24"
    at.radio(key="co_level").set_value("coarse").run()
    assert len(at.selectbox(key="co_true").options) == 1 + 3
    assert at.text[-1].value.startswith("coarse None ()")


def _progress_row(run: str) -> None:
    import pandas as pd

    from viewer.components import cohort_ui, shell_ui
    from viewer.core.run_pick import RUN_KEY

    shell_ui.session_state()[RUN_KEY] = run
    cohort_ui.review_progress(pd.DataFrame({"slide_id": ["synth-0001"]}), {})


def test_review_report_download_beside_the_counts(viewer_root: Path) -> None:
    import json

    from hmil.reviews import REVIEWS_FILE

    run = viewer_root / "run"
    at = AppTest.from_function(_progress_row, args=(str(run),), default_timeout=APP_TIMEOUT)
    path = run / REVIEWS_FILE
    path.unlink(missing_ok=True)
    try:
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert at.markdown[0].value.startswith("Review: **0 reviewed** / **1 remaining**")
        assert not at.get("download_button")  # nobody reviewed: nothing to report
        record = {"slide_id": "synth-0001", "verdict": "agree", "label": None, "reviewer": "bo",
                  "comment": "", "time": "2026-01-01T00:00:00+00:00", "checkpoint": ""}  # fmt: skip
        path.write_text(json.dumps(record) + "\n")
        at.run()
        assert at.selectbox(key="co_report_of").options == ["bo"]
        (button,) = at.get("download_button")
        assert button.proto.label == "Review report"
    finally:
        path.unlink(missing_ok=True)
