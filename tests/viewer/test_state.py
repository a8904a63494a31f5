"""Data roots (safety), viewer settings and uploads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from viewer import state
from viewer.core.paths import PathRefused, check_under_roots, is_under
from viewer.core.uploads import save_upload, upload_name
from viewer.state import build_settings, settings_env, settings_from_env


def test_paths_inside_roots_are_accepted(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    assert check_under_roots(root / "sub" / "x.h5", [root]) == (root / "sub" / "x.h5").resolve()
    assert check_under_roots(root, [root]) == root.resolve()
    file_root = tmp_path / "labels.csv"
    assert check_under_roots(file_root, [file_root]) == file_root.resolve()


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "{root}/../secret.txt", "{root}/sub/../../secret.txt", "~/.ssh/id_rsa"],
)
def test_paths_outside_roots_are_refused(tmp_path: Path, path: str) -> None:
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    with pytest.raises(PathRefused, match="refused: outside the viewer's data roots"):
        check_under_roots(path.format(root=root), [root])


def test_a_symlink_inside_a_root_cannot_escape(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("x")
    (root / "link").symlink_to(outside)
    assert not is_under(root / "link" / "secret.txt", [root])
    with pytest.raises(PathRefused):
        check_under_roots(root / "link" / "secret.txt", [root])


def test_a_prefix_is_not_a_parent(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data2").mkdir()
    assert not is_under(tmp_path / "data2" / "x", [tmp_path / "data"])


def test_empty_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PathRefused, match="no path given"):
        check_under_roots("  ", [tmp_path])


def test_settings_roots_cover_the_run_and_its_data(viewer_root: Path, tmp_path: Path) -> None:
    run = viewer_root / "run"
    settings = build_settings(run, [tmp_path], cwd=tmp_path)
    assert settings.run == run.resolve()
    assert settings.data_roots == (tmp_path.resolve(),)
    for path in (
        run / "fold_0" / "checkpoint.pt",
        viewer_root / "cohort" / "labels.csv",
        viewer_root / "cohort" / "features" / "synth-0000.h5",
        viewer_root / "cohort" / "slides" / "synth-0000.tiff",
        viewer_root / "cohort" / "masks" / "synth-0000_lesion.png",
        viewer_root / "splits" / "splits_0.csv",
        tmp_path / "anything",
    ):
        assert is_under(path, settings.roots), path
    # the cohort folder itself is not a root: only what the config names
    assert not is_under(viewer_root / "small.yaml", settings.roots)
    assert not is_under("/etc/passwd", settings.roots)


def test_settings_round_trip_through_the_environment(viewer_root: Path, tmp_path: Path) -> None:
    settings = build_settings(viewer_root / "run", [tmp_path], max_upload_mb=7, cwd=tmp_path)
    env = settings_env(settings)
    again = settings_from_env(env, cwd=tmp_path)
    assert again == settings
    assert env["HMIL_VIEW_DATA_ROOTS"].split(os.pathsep) == [str(tmp_path.resolve())]


def test_default_run_is_the_demo_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "REPO_ROOT", tmp_path / "checkout")  # ignore a real demo
    run = tmp_path / "hmil-demo" / "run"
    run.mkdir(parents=True)
    assert build_settings(None, cwd=tmp_path).run is None  # no config.yaml yet
    (run / "config.yaml").write_text("data: {}\n")
    settings = build_settings(None, cwd=tmp_path)
    assert settings.run == run.resolve()
    assert is_under(run, settings.roots)


def test_upload_names_are_safe_and_content_addressed(tmp_path: Path) -> None:
    name = upload_name("../../etc/evil name.ome.tiff", b"abc")
    assert "/" not in name and name.endswith(".ome.tiff") and name.startswith("evil_name-")
    assert upload_name("a.h5", b"1") != upload_name("a.h5", b"2")
    path = save_upload(b"data", "../x.h5", tmp_path, limit_mb=1)
    assert path.parent == tmp_path and path.read_bytes() == b"data"
    assert save_upload(b"data", "../x.h5", tmp_path, limit_mb=1) == path


def test_uploads_over_the_limit_are_refused(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="exceeds the 1 MB limit"):
        save_upload(b"x" * (1024 * 1024 + 1), "big.h5", tmp_path, limit_mb=1)
    with pytest.raises(Exception, match="empty upload"):
        save_upload(b"", "empty.h5", tmp_path, limit_mb=1)
    assert list(tmp_path.iterdir()) == []


def test_stale_upload_folders_are_removed(tmp_path: Path) -> None:
    import os
    import time

    from viewer.core.uploads import UPLOAD_PREFIX, remove_stale_uploads

    old = tmp_path / f"{UPLOAD_PREFIX}old"
    fresh = tmp_path / f"{UPLOAD_PREFIX}fresh"
    other = tmp_path / "someone-elses-dir"
    for folder in (old, fresh, other):
        folder.mkdir()
        (folder / "bag.h5").write_bytes(b"x")
    two_days_ago = time.time() - 2 * 24 * 3600
    for folder in (old, other):
        os.utime(folder, (two_days_ago, two_days_ago))
    assert remove_stale_uploads(tmp_path, 24 * 3600) == [old]
    assert not old.exists() and fresh.exists() and other.exists()
