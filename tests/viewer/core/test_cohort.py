"""Cohort tables of the calibrated run: the call of each slide in words, the filter of the
slides whose fine answer was withheld, ROC from the raw probabilities, the folds'
reliability data and calibration numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hmil.calibration import Calibration
from hmil.decoding import decode
from hmil.hierarchy import Hierarchy
from hmil.train.evaluate import predictions_frame, reliability_frame
from viewer.core import cohort

TREE = Hierarchy.from_dict(
    {"name": "toy", "coarse": ["benign", "malignant"],
     "fine": {"a": "benign", "b": "benign", "c": "malignant"}}
)  # fmt: skip


def _table(levels: list[str | None], labels: list[str | None]) -> pd.DataFrame:
    n = len(levels)
    return pd.DataFrame(
        {
            "slide_id": [f"s{i}" for i in range(n)],
            "fold": [0] * n,
            "pred_fine": ["a"] * n,
            "confidence_fine": np.linspace(0.9, 0.5, n),
            "call_level": levels,
            "call_label": labels,
        }
    )


def test_calls_in_words_and_the_withheld_filter_keeps_exactly_coarse_and_none() -> None:
    table = cohort.with_calls(
        _table(["fine", "coarse", "none", "fine", "coarse"], ["a", "benign", None, "c", "x*"])
    )
    assert table[cohort.CALL_COLUMN].tolist() == [
        "fine: a", "benign — subtype uncertain", "no call", "fine: c", "x* — subtype uncertain",
    ]  # fmt: skip
    kept = cohort.filter_slides(table, cohort.SlideFilter(only_withheld=True))
    assert kept["slide_id"].tolist() == ["s1", "s2", "s4"]  # highest confidence first
    assert len(cohort.filter_slides(table, cohort.SlideFilter())) == 5
    assert cohort.has_calls(table)


def test_a_run_without_calls_reads_as_before() -> None:
    old = _table(["fine"], ["a"]).drop(columns=["call_level", "call_label"])
    assert cohort.with_calls(old) is old and not cohort.has_calls(old)
    assert cohort.filter_slides(old, cohort.SlideFilter(only_withheld=True)).empty
    assert cohort.CALL_COLUMN not in cohort.with_calls(old)


def test_a_written_table_reads_back_with_its_calls(tmp_path: Path) -> None:
    fine = np.array([[0.7, 0.2, 0.1], [0.3, 0.25, 0.45], [0.1, 0.1, 0.8], [0.2, 0.5, 0.3]])
    calibration = Calibration(1.0, 2.0, (0.5,) * 9, (0.4,) * 9, 0.9)
    dec = decode(fine, TREE, None)
    frame = predictions_frame(list("wxyz"), np.array([0, 1, 2, 2]), dec, TREE, calibration)
    frame.to_csv(tmp_path / "predictions.csv", index=False)
    read = cohort.with_calls(pd.read_csv(tmp_path / "predictions.csv").assign(fold=0))
    assert read[cohort.CALL_COLUMN].tolist() == [
        "fine: a", "benign — subtype uncertain", "fine: c", "benign — subtype uncertain",
    ]  # fmt: skip
    withheld = cohort.filter_slides(
        read.rename(columns={"confidence": "confidence_fine"}),
        cohort.SlideFilter(only_withheld=True),
    )
    assert sorted(withheld["slide_id"]) == ["x", "z"]


def test_roc_reads_the_raw_probabilities_when_there_are_some() -> None:
    table = pd.DataFrame(
        {
            "true_fine": ["a", "a", "b", "b"],
            "p_fine_a": [0.1, 0.2, 0.3, 0.4],  # calibrated: ranks a last
            "raw_p_fine_a": [0.9, 0.8, 0.3, 0.2],  # raw: ranks a first
        }
    )
    curves = cohort.roc_curves(table, "fine", ["a"])
    assert curves["a"][2] == pytest.approx(1.0)
    assert cohort.roc_curves(table.drop(columns="raw_p_fine_a"), "fine", ["a"])["a"][
        2
    ] == pytest.approx(0.0)


def _section(ece_before: float, ece_after: float, coverage: float, n: int) -> dict[str, object]:
    level = {
        "before": {"ece": ece_before, "reliability": {"confidence": [0.6, 0.9],
                                                      "accuracy": [0.5, 1.0], "count": [2, 2]}},
        "after": {"ece": ece_after, "reliability": {"confidence": [0.55, 0.8],
                                                    "accuracy": [0.5, 1.0], "count": [2, 2]}},
    }  # fmt: skip
    return {
        "temperature": {"fine": 1.5, "coarse": 1.2},
        "fine": level,
        "coarse": level,
        "call": {"coverage_target": 0.9, "coverage": coverage, "share_fine": 0.5, "n": n},
    }


def test_reliability_files_of_the_folds_and_their_numbers(tmp_path: Path) -> None:
    run = tmp_path / "run"
    per_fold = {0: {"calibration": _section(0.2, 0.1, 1.0, 4)},
                1: {"calibration": _section(0.1, 0.05, 0.5, 4)}, 2: {}}  # fmt: skip
    for fold, report in per_fold.items():
        (run / f"fold_{fold}").mkdir(parents=True)
        if report:
            reliability_frame(report["calibration"]).to_csv(
                run / f"fold_{fold}" / "reliability.csv", index=False
            )
    (run / "fold_2" / "reliability.csv").write_text("not,a\ntable\n")
    table = cohort.load_reliability(run)
    assert sorted(set(table["fold"])) == [0, 1]  # fold 2's file has no such columns
    assert len(table) == 2 * 2 * 2 * 2  # folds × levels × before/after × bins
    after = table[(table["fold"] == 1) & (table["level"] == "fine")
                  & (table["calibration"] == "after")]  # fmt: skip
    assert after["confidence"].tolist() == [0.55, 0.8]
    numbers = cohort.calibration_table(per_fold)
    assert numbers["fold"].tolist() == [0, 1]
    assert numbers["ece_fine_before"].tolist() == [0.2, 0.1]
    assert numbers["ece_coarse_after"].tolist() == [0.1, 0.05]
    assert numbers["ece_coarse_head_after"].isna().all()
    assert numbers["T_fine"].tolist() == [1.5, 1.5] and numbers["coverage"].tolist() == [1, 0.5]
    assert cohort.load_reliability(tmp_path / "nothing").empty
    json.dumps(per_fold)  # plain data, as read from test_metrics.json
