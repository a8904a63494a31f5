"""``hmil evaluate`` reports calibration and the call per fold (SYNTHETIC cohort)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from hmil.cli import main


def test_evaluate_prints_ece_and_the_call_and_writes_them(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    argv = ["evaluate", "--run", str(run), "--device", "cpu", "--coverage", "0.8"]
    assert main(argv) == 0
    line = capsys.readouterr().out.splitlines()[1]
    pattern = (
        r"fold 0: T coarse \d+\.\d{3} fine \d+\.\d{3} \| fine ECE \d\.\d{3} -> \d\.\d{3} \| "
        r"coarse ECE \d\.\d{3} -> \d\.\d{3} \| call coverage \d\.\d{3} \(target 0\.8\)"
    )
    assert re.match(pattern, line), line
    report = json.loads((run / "fold_0" / "test_metrics.json").read_text())
    assert report["calibration"]["call"]["coverage_target"] == 0.8
    table = pd.read_csv(run / "fold_0" / "reliability.csv")
    assert list(table.columns) == ["level", "calibration", "bin", "confidence", "accuracy", "count"]
    fine_after = table[(table.level == "fine") & (table.calibration == "after")]
    assert fine_after["count"].sum() == report["n"]
    assert (
        fine_after["count"].tolist()
        == report["calibration"]["fine"]["after"]["reliability"]["count"]
    )
    trained = json.loads((tiny_run / "fold_0" / "test_metrics.json").read_text())
    for when in ("before", "after"):  # the same numbers as the fold's own test
        ours, theirs = report["calibration"]["fine"][when], trained["calibration"]["fine"][when]
        assert (ours["ece"], ours["nll"]) == pytest.approx((theirs["ece"], theirs["nll"]))
