"""A trained fold is calibrated on its validation part: the checkpoint keeps the temperatures
and the call, the test report judges them (SYNTHETIC cohort)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from hmil.calibration import Calibration
from hmil.checkpoint import load_checkpoint_file
from hmil.cli import main
from hmil.export import read_temperatures


def test_the_checkpoint_keeps_what_export_reads_and_the_call(tiny_run: Path) -> None:
    checkpoint = tiny_run / "fold_0" / "checkpoint.pt"
    _, info = load_checkpoint_file(checkpoint)
    cal = Calibration.from_dict(info.calibration)
    assert cal.fitted and cal.coverage_target == 0.9
    conformal = info.calibration["conformal"]
    assert conformal["n"] == len(conformal["scores"]["fine"]) > 0
    assert (conformal["fine_threshold"], conformal["coarse_threshold"]) == cal.thresholds()
    assert info.epoch == 0 and info.val_metrics["n"] == conformal["n"]  # kept on re-saving
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    temps = read_temperatures(payload, checkpoint)
    assert (temps.coarse, temps.fine) == (cal.coarse_temperature, cal.fine_temperature)


def test_the_test_report_has_calibration_before_and_after_and_the_call(tiny_run: Path) -> None:
    report = json.loads((tiny_run / "fold_0" / "test_metrics.json").read_text())
    section = report["calibration"]
    for level in ("fine", "coarse", "coarse_head"):
        for when in ("before", "after"):
            numbers = section[level][when]
            assert 0 <= numbers["ece"] <= 1 and 0 <= numbers["brier"] <= 2 and numbers["nll"] > 0
            assert sum(numbers["reliability"]["count"]) == report["n"]
        curve = section["risk_coverage"][level]
        assert curve["coverage"][-1] == 1.0
        assert curve["risk"][-1] == round(1 - report[level]["accuracy"], 6)
    call = section["call"]
    assert call["n"] == report["n"] and call["coverage_target"] == 0.9
    shares = call["share_fine"] + call["share_coarse"] + call["share_none"]
    assert abs(shares - 1) < 1e-9 and 0 <= call["coverage"] <= 1


def test_a_fold_resumed_after_its_last_epoch_keeps_its_best_epoch_record(
    tiny_run: Path, tmp_path: Path
) -> None:
    """Interrupted between the last epoch and the test: the resumed process calibrates and
    re-saves the checkpoint without having seen the best epoch itself."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "fold_0" / "test_metrics.json").unlink()
    before = load_checkpoint_file(run / "fold_0" / "checkpoint.pt")[1]
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 0
    _, after = load_checkpoint_file(run / "fold_0" / "checkpoint.pt")
    assert (after.epoch, after.val_metrics) == (before.epoch, before.val_metrics)
    assert after.calibration == before.calibration  # the same fit on the same validation bags
