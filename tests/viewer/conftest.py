"""Viewer fixtures: one SYNTHETIC cohort + trained run per session, and AppTest helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
from viewer_fixtures import build_fixture


@pytest.fixture(scope="session")
def viewer_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``root/{cohort,splits,run,small.yaml}`` (see :func:`viewer_fixtures.build_fixture`)."""
    return build_fixture(tmp_path_factory.mktemp("viewer")).parent


@pytest.fixture(scope="session")
def viewer_run(viewer_root: Path) -> Path:
    return viewer_root / "run"


@pytest.fixture()
def app_env(monkeypatch: pytest.MonkeyPatch, viewer_root: Path) -> Path:
    """Point the viewer at the fixture run, with its folder as the only extra data root."""
    monkeypatch.setenv("HMIL_VIEW_RUN", str(viewer_root / "run"))
    monkeypatch.setenv("HMIL_VIEW_DATA_ROOTS", str(viewer_root))
    monkeypatch.setenv("HMIL_VIEW_CHECKPOINT", "")
    monkeypatch.setenv("HMIL_VIEW_MAX_UPLOAD_MB", "5")
    return viewer_root
