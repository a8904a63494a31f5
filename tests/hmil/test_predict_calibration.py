"""Prediction records carry calibrated probabilities and the hierarchical call; raw ones on
request; a checkpoint without calibration predicts as before, without a call (SYNTHETIC)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hmil.checkpoint import load_checkpoint_file, save_checkpoint
from hmil.cli import main
from hmil.hierarchy import Hierarchy
from hmil.predict import Prediction, load_checkpoint


def _records(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict]:
    assert main(["predict", *argv, "--device", "cpu"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_records_are_calibrated_with_a_call_and_raw_on_request(
    tiny_run: Path, small_cohort: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = str(tiny_run / "fold_0" / "checkpoint.pt")
    bags = sorted(str(p) for p in (small_cohort / "features").glob("*.h5"))[:4]
    calibrated = _records(capsys, "--checkpoint", checkpoint, *bags)
    raw = _records(capsys, "--checkpoint", checkpoint, *bags, "--raw-probabilities")
    predictor = load_checkpoint(checkpoint, device="cpu")
    t_fine = predictor.calibration.fine_temperature
    for cal, unscaled in zip(calibrated, raw, strict=True):
        assert (cal["probabilities"], unscaled["probabilities"]) == ("calibrated", "raw")
        assert cal["call"] == unscaled["call"]  # the call always uses calibrated probabilities
        assert cal["call"]["level"] in ("fine", "coarse", "none")
        assert cal["call"]["coverage_target"] == 0.9
        p_raw = np.array(list(unscaled["fine"]["probs"].values()))
        expected = np.exp(np.log(p_raw) / t_fine)
        got = np.array(list(cal["fine"]["probs"].values()))
        np.testing.assert_allclose(got, expected / expected.sum(), atol=2e-5)
        if cal["call"]["level"] == "fine":
            assert cal["call"]["label"] == cal["fine"]["pred"]
    lenient = _records(capsys, "--checkpoint", checkpoint, *bags, "--coverage", "0.5")
    order = {"fine": 0, "coarse": 1, "none": 2}
    for strict_call, loose in zip(calibrated, lenient, strict=True):  # lower target: never vaguer
        assert order[loose["call"]["level"]] <= order[strict_call["call"]["level"]]


def test_a_checkpoint_without_calibration_predicts_raw_without_a_call(
    tiny_run: Path, small_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, info = load_checkpoint_file(tiny_run / "fold_0" / "checkpoint.pt")
    info.calibration = {}
    old = save_checkpoint(tmp_path / "old.pt", model, info)
    bag = sorted(str(p) for p in (small_cohort / "features").glob("*.h5"))[0]
    (record,) = _records(capsys, "--checkpoint", str(old), bag)
    (raw,) = _records(capsys, "--checkpoint", str(tiny_run / "fold_0" / "checkpoint.pt"), bag,
                      "--raw-probabilities")  # fmt: skip
    assert "call" not in record and record["probabilities"] == "raw"
    assert record["fine"]["probs"] == raw["fine"]["probs"]  # T = 1


def test_a_target_coverage_outside_the_unit_interval_is_refused(
    tiny_run: Path, small_cohort: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bag = sorted(str(p) for p in (small_cohort / "features").glob("*.h5"))[0]
    argv = ["predict", "--checkpoint", str(tiny_run / "fold_0" / "checkpoint.pt"), bag]
    assert main([*argv, "--coverage", "1.5"]) != 0
    assert "error: --coverage: must be in (0, 1), found 1.5" in capsys.readouterr().err


def test_the_labels_come_from_the_raw_probabilities_when_a_temperature_would_move_them() -> None:
    # two coarse classes over fine (a, b | c): raw p = (0.26, 0.26, 0.48) sums to 0.52 vs 0.48,
    # while T = 0.5 sharpens it to (0.18, 0.18, 0.63): Mᵀp̂ = 0.37 vs 0.63 — the coarse argmax moves
    hierarchy = Hierarchy(name="t", coarse=("x", "y"), fine=("a", "b", "c"), parent=(0, 0, 1))
    raw = np.array([0.26, 0.26, 0.48])
    sharp = raw**2 / (raw**2).sum()
    pred = Prediction(
        slide_id="s", n_instances=3, hierarchy=hierarchy, fine_probs=sharp,
        coarse_head_probs=np.array([0.5, 0.5]), calibrated=True, raw_fine_probs=raw,
    )  # fmt: skip
    assert pred.coarse_probs[1] > pred.coarse_probs[0]  # the shown (calibrated) numbers
    assert (pred.fine_pred, pred.coarse_pred) == ("c", "x")  # the model's decision, as in training
    record = pred.to_dict()
    assert record["coarse"]["pred"] == "x" and record["consistent"] is False
