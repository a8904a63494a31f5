"""``hmil.train.evaluate``: per-level metrics, the predictions table and a fold re-evaluated."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hmil.calibration import Calibration
from hmil.decoding import decode
from hmil.errors import CheckpointError, RunError
from hmil.hierarchy import Hierarchy
from hmil.train.evaluate import (
    calibrates,
    evaluate_run_fold,
    evaluation_report,
    predictions_frame,
    selection_description,
    write_fold_evaluation,
)
from hmil.train.runs import fold_paths

TREE = Hierarchy.from_dict(
    {
        "name": "toy",
        "coarse": ["benign", "malignant"],
        "fine": {"a": "benign", "b": "benign", "c": "malignant"},
    }
)
Y_FINE = np.array([0, 1, 2, 2])
FINE = np.array(
    [
        [0.70, 0.20, 0.10],  # a: right at both levels
        [0.30, 0.25, 0.45],  # b read as c, but benign 0.55 overall: the levels disagree
        [0.10, 0.10, 0.80],  # c: right
        [0.20, 0.50, 0.30],  # c read as b: wrong at both levels
    ]
)
COARSE_HEAD = np.array([[0.8, 0.2], [0.6, 0.4], [0.1, 0.9], [0.4, 0.6]])  # all right


def test_report_has_every_level_and_flags_the_inconsistent_slide() -> None:
    report, dec = evaluation_report(TREE, Y_FINE, FINE, COARSE_HEAD)
    assert report["decoding"] == "fine_sum" and report["n"] == 4
    assert report["fine"]["accuracy"] == pytest.approx(0.5)
    assert report["coarse"]["accuracy"] == pytest.approx(0.75)  # coarse = argmax Mᵀ p_f
    assert report["coarse"]["specificity"] == pytest.approx(1.0)  # both benign slides benign
    assert report["coarse_head"]["accuracy"] == pytest.approx(1.0)
    assert report["consistency"] == pytest.approx(0.75) and report["n_inconsistent"] == 1
    assert dec.consistent.tolist() == [True, False, True, True]
    assert report["fine"]["confusion_matrix"] == [[1, 0, 0], [0, 0, 1], [0, 1, 1]]
    top_down, _ = evaluation_report(TREE, Y_FINE, FINE, COARSE_HEAD, "top_down")
    assert top_down["decoding"] == "top_down" and top_down["consistency"] == 1.0


def test_predictions_table_one_row_per_slide() -> None:
    dec = decode(FINE, TREE, COARSE_HEAD, "fine_sum")
    frame = predictions_frame(["s0", "s1", "s2", "s3"], Y_FINE, dec, TREE)
    assert list(frame.columns) == [
        "slide_id", "true_coarse", "true_fine", "pred_coarse", "pred_fine", "pred_coarse_head",
        "consistent", "correct_fine", "correct_coarse", "confidence",
        "p_fine_a", "p_fine_b", "p_fine_c", "p_coarse_benign", "p_coarse_malignant",
        "p_coarse_head_benign", "p_coarse_head_malignant",
    ]  # fmt: skip
    assert frame["pred_fine"].tolist() == ["a", "c", "c", "b"]
    assert frame["pred_coarse"].tolist() == ["benign", "benign", "malignant", "benign"]
    assert frame["true_coarse"].tolist() == ["benign", "benign", "malignant", "malignant"]
    assert frame["correct_coarse"].tolist() == [True, True, True, False]
    assert frame["confidence"].tolist() == [0.7, 0.45, 0.8, 0.5]
    assert frame["p_coarse_benign"].tolist() == pytest.approx([0.9, 0.55, 0.2, 0.7])


def test_selection_in_words() -> None:
    assert selection_description("fine_auc") == "best validation fine_auc"
    assert selection_description("last").startswith("last epoch (train.select_metric: last")


def test_fold_files_are_written_together(tmp_path: Path) -> None:
    report, dec = evaluation_report(TREE, Y_FINE, FINE, COARSE_HEAD)
    paths = fold_paths(tmp_path, 3)
    write_fold_evaluation(paths, report, predictions_frame(list("wxyz"), Y_FINE, dec, TREE))
    assert json.loads(paths.test_metrics.read_text())["n_inconsistent"] == 1
    assert pd.read_csv(paths.predictions)["slide_id"].tolist() == list("wxyz")
    assert sorted(p.name for p in paths.root.iterdir()) == ["predictions.csv", "test_metrics.json"]


def test_a_fold_is_recomputed_from_its_checkpoint(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    trained = json.loads((run / "fold_0" / "test_metrics.json").read_text())
    written = pd.read_csv(run / "fold_0" / "predictions.csv")  # by training
    assert {"call_level", "raw_confidence", "raw_p_fine_N"} <= set(written.columns)
    (run / "fold_0" / "test_metrics.json").unlink()
    (run / "fold_0" / "predictions.csv").unlink()
    result = evaluate_run_fold(run, 0, device="cpu")
    assert result["n"] == trained["n"] == 21  # the test half of the 42 slides
    assert result["fold"] == 0 and result["skipped"] == []
    assert result["selection"] == "best validation " + trained["selection"].split()[-1]
    assert result["fine"]["accuracy"] == pytest.approx(trained["fine"]["accuracy"])
    frame = pd.read_csv(run / "fold_0" / "predictions.csv", keep_default_na=False)
    assert len(frame) == 21 and frame["consistent"].dtype == bool
    # the checkpoint's calibration: calibrated probabilities, the raw ones and the call
    assert set(frame["call_level"]) <= {"fine", "coarse", "none"}
    assert (frame["coverage_target"] == 0.9).all()
    raw = frame[[c for c in frame if c.startswith("raw_p_fine_")]].to_numpy()
    shown = frame[[c for c in frame if c.startswith("p_fine_")]].to_numpy()
    assert raw.shape == shown.shape == (21, 7)
    assert (raw.argmax(axis=1) == shown.argmax(axis=1)).all()  # T moves no fine argmax


def test_a_checkpoint_of_another_hierarchy_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("hierarchy: bracs", "hierarchy: panda"))
    with pytest.raises(CheckpointError, match=r"checkpoint hierarchy \(N, PB, .*\) differs"):
        evaluate_run_fold(run, 0, device="cpu")


def test_a_fold_without_its_split_file_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    splits = tmp_path / "splits"
    shutil.copytree(tiny_run.parent / "splits", splits)
    (splits / "splits_0.csv").unlink()
    config = run / "config.yaml"
    config.write_text(config.read_text().replace(str(tiny_run.parent / "splits"), str(splits)))
    with pytest.raises(RunError, match=r"no splits_0\.csv"):
        evaluate_run_fold(run, 0, device="cpu")


#: T_f = 2 (square roots of the probabilities, renormalised), T_c = 0.5 (squares); nine scores
#: at target 0.9 give the thresholds 0.5 (fine: a class of ≥ 0.5) and 0.4 (coarse: ≥ 0.6)
KNOWN = Calibration(0.5, 2.0, (0.5,) * 9, (0.4,) * 9, 0.9)


def _renormalised(p: np.ndarray) -> np.ndarray:
    return p / p.sum(axis=1, keepdims=True)


def test_a_calibrated_table_shows_the_calibrated_probabilities_and_the_call() -> None:
    dec = decode(FINE, TREE, COARSE_HEAD, "fine_sum")
    frame = predictions_frame(["s0", "s1", "s2", "s3"], Y_FINE, dec, TREE, KNOWN)
    fine = _renormalised(np.sqrt(FINE))
    head = _renormalised(COARSE_HEAD**2)
    assert frame["p_fine_a"].tolist() == pytest.approx(fine[:, 0], abs=1e-6)
    assert frame["p_fine_c"].tolist() == pytest.approx(fine[:, 2], abs=1e-6)
    assert frame["p_coarse_benign"].tolist() == pytest.approx(fine[:, :2].sum(1), abs=1e-6)
    assert frame["p_coarse_head_malignant"].tolist() == pytest.approx(head[:, 1], abs=1e-6)
    assert frame["confidence"].tolist() == pytest.approx(fine.max(axis=1), abs=1e-6)
    assert frame["raw_confidence"].tolist() == [0.7, 0.45, 0.8, 0.5]
    assert frame["raw_p_fine_b"].tolist() == [0.2, 0.25, 0.1, 0.5]
    assert frame["raw_p_coarse_head_benign"].tolist() == [0.8, 0.6, 0.1, 0.4]
    # labels and correctness stay the raw decoding's (the argmax of a head does not move)
    assert frame["pred_fine"].tolist() == ["a", "c", "c", "b"]
    assert frame["correct_coarse"].tolist() == [True, True, True, False]
    # s1: 0.39 at most per fine class, benign 0.61: coarse; s3: benign 0.68: coarse
    assert frame["call_level"].tolist() == ["fine", "coarse", "fine", "coarse"]
    assert frame["call_label"].tolist() == ["a", "benign", "c", "benign"]
    assert frame["coverage_target"].tolist() == [0.9] * 4
    assert list(frame.columns[9:13]) == ["confidence", "call_level", "call_label",
                                         "coverage_target"]  # fmt: skip
    assert list(frame.columns[-3:]) == [
        "raw_p_coarse_malignant", "raw_p_coarse_head_benign", "raw_p_coarse_head_malignant",
    ]  # fmt: skip


def test_another_target_moves_the_call_and_an_uncalibrated_checkpoint_adds_nothing() -> None:
    dec = decode(FINE, TREE, COARSE_HEAD, "fine_sum")
    # target 0.5 on nine scores of 0.5: the 5th smallest, still 0.5 (same sets, new target)
    frame = predictions_frame(list("wxyz"), Y_FINE, dec, TREE, KNOWN, coverage=0.5)
    assert frame["coverage_target"].tolist() == [0.5] * 4
    temperature_only = predictions_frame(list("wxyz"), Y_FINE, dec, TREE, Calibration(1.0, 2.0))
    assert "call_level" not in temperature_only and "raw_p_fine_a" in temperature_only
    plain = predictions_frame(list("wxyz"), Y_FINE, dec, TREE)
    assert list(predictions_frame(list("wxyz"), Y_FINE, dec, TREE, Calibration()).columns) == (
        list(plain.columns)
    )
    assert not calibrates(Calibration()) and calibrates(KNOWN)
