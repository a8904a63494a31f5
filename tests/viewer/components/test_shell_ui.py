"""What every page shares: the sidebar run picker (the start run chosen, the data roots listed),
the SYNTHETIC banner of a synthetic run, and a problem shown as one error line."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from viewer_fixtures import APP_TIMEOUT

from viewer.components import shell_ui

pytestmark = pytest.mark.usefixtures("app_env")


def _page() -> None:
    from hmil.errors import ConfigError
    from viewer.components import shell_ui

    cfg = shell_ui.settings()
    run = shell_ui.sidebar(cfg)
    shell_ui.synthetic_banner(run)
    shell_ui.show_problem(ConfigError("train.epochs", "must be ≥ 1, got 0"))


def test_sidebar_banner_and_problem(viewer_root: Path) -> None:
    at = AppTest.from_function(_page, default_timeout=APP_TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    run = str(viewer_root / "run")
    picker = at.sidebar.selectbox(key="run_picker")
    assert picker.value == run and picker.options[-1] == "(no run: model only)"
    assert at.session_state["run"] == run
    assert any("SYNTHETIC data" in w.value for w in at.warning)
    (error,) = at.error
    assert error.value == "train\\.epochs\\: must be ≥ 1, got 0"  # shown as typed
    assert str(viewer_root) in at.sidebar.text[0].value  # the data roots


def test_settings_come_from_the_environment(viewer_root: Path) -> None:
    cfg = shell_ui.settings()
    assert cfg.run == viewer_root / "run" and viewer_root in cfg.roots
    assert shell_ui.known_runs(cfg)[0] == viewer_root / "run"
