"""Slide files found under the data roots for "a slide file alone", and the short names the
pickers show (viewer/core/slide_lookup.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from viewer.core import slide_lookup


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_slide_files_a_few_folders_deep_visible_and_sorted(tmp_path: Path) -> None:
    root = tmp_path / "data"
    wanted = [
        _touch(root / "a.svs"),
        _touch(root / "one" / "b.TIF"),
        _touch(root / "one" / "two" / "three" / "c.png"),
    ]
    _touch(root / "one" / "two" / "three" / "four" / "too_deep.svs")
    _touch(root / ".hidden" / "d.svs")
    _touch(root / "notes.txt")
    assert slide_lookup.slide_files([root, tmp_path / "missing"]) == sorted(wanted)


def test_slide_files_stop_at_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(5):
        _touch(tmp_path / f"s{i}.svs")
    monkeypatch.setattr(slide_lookup, "MAX_SLIDE_FILES", 3)
    assert len(slide_lookup.slide_files([tmp_path])) == 3


def test_short_path_names_the_root_it_lies_under(tmp_path: Path) -> None:
    root = tmp_path / "cohort"
    assert slide_lookup.short_path(str(root / "x" / "a.svs"), [root]) == "cohort/x/a.svs"
    assert slide_lookup.short_path(str(tmp_path / "b.svs"), [root]) == "b.svs"
