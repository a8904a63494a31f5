"""The launch form's fields start from the open run's config (labels, features, splits, epochs,
bags per step), a new run directory is proposed under the first data root, and the monitor
follows the open run."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from viewer_fixtures import APP_TIMEOUT

from viewer.components import shell_ui, train_ui

pytestmark = pytest.mark.usefixtures("app_env")


def _page() -> None:
    from viewer.components import shell_ui, train_ui

    cfg = shell_ui.settings()
    run = shell_ui.sidebar(cfg)
    followed = train_ui.monitor_run_picker(cfg, run)
    if followed is not None:
        train_ui.monitor(followed, cfg.roots)
    train_ui.launch_form(cfg, run)


def test_default_out_is_under_the_first_data_root(viewer_root: Path) -> None:
    out = Path(train_ui.default_out(shell_ui.settings()))
    assert out.parent == viewer_root / "runs" and out.name.startswith("run-")


def test_form_starts_from_the_open_run(viewer_root: Path) -> None:
    at = AppTest.from_function(_page, default_timeout=APP_TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="tr_monitor").value == str(viewer_root / "run")
    assert Path(str(at.text_input(key="tr_labels").value)) == viewer_root / "cohort" / "labels.csv"
    assert Path(str(at.text_input(key="tr_splits").value)) == viewer_root / "splits"
    assert at.number_input(key="tr_epochs").value == 2
    assert at.number_input(key="tr_bps").value == 8
    assert str(at.text_input(key="tr_out").value).startswith(str(viewer_root / "runs" / "run-"))
    assert at.button(key="tr_submit")  # the form's submit button is drawn
