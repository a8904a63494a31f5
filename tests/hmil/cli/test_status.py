"""``hmil status RUN``: one line per fold as a table, or one JSON object."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hmil.cli import main
from hmil.cli import status as status_cli


def test_table_of_a_finished_run(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", str(tiny_run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{tiny_run}: 1 fold(s): 1 finished"
    assert lines[1].split() == list(status_cli.COLUMNS)
    assert re.fullmatch(r"0 +finished +1/1 +fine_auc \d\.\d{4} @0 +- +inline", lines[2])
    assert len(lines) == 3


def test_json_for_machines(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", str(tiny_run), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["run"] == str(tiny_run.resolve())
    assert payload["counts"] == {"finished": 1}
    (fold,) = payload["folds"]
    assert fold["fold"] == 0 and fold["state"] == "finished"
    assert (fold["epochs_done"], fold["epochs"], fold["best_epoch"]) == (1, 1, 0)
    assert fold["select_metric"] == "fine_auc" and 0.0 <= fold["best_value"] <= 1.0


def test_a_folder_that_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}: not a run directory (no config.yaml)\n"
