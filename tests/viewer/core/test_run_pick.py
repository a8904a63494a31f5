"""The run every page shows (viewer/core/run_pick.py): admitted only under the data roots and
only when it is a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from viewer.core import run_pick


def test_open_run_sets_run_and_picker(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("data: {}\n")
    state: dict[str, Any] = {}
    assert run_pick.open_run(state, str(run), [tmp_path]) is None
    assert state == {"run": str(run.resolve()), "run_picker": str(run.resolve())}
    assert run_pick.current_run(state) == run.resolve()
    assert run_pick.label_run(state["run"], [tmp_path.resolve()]) == f"runs/a  ·  {tmp_path.name}/"


def test_open_run_refuses_and_leaves_the_state(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    state: dict[str, Any] = {"run": ""}
    problem = run_pick.open_run(state, str(tmp_path / "plain"), [tmp_path])
    assert problem is not None and problem.endswith("not a run directory (no config.yaml)")
    assert run_pick.open_run(state, "/etc", [tmp_path]) is not None  # outside the roots
    assert state == {"run": ""} and run_pick.current_run(state) is None
    assert run_pick.label_run(run_pick.NO_RUN, [tmp_path]) == "(no run: model only)"
