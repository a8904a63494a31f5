"""The calibration section's words: ECE before → after as the mean over folds, the folds'
temperatures and the call's coverage pooled over the test slides."""

from __future__ import annotations

import math

import pandas as pd

from viewer.components import calibration_ui


def _table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "fold": [0, 1],
            "T_fine": [0.92, 1.35],
            "T_coarse": [0.87, 0.86],
            "ece_fine_before": [0.10, 0.06],
            "ece_fine_after": [0.05, 0.03],
            "ece_coarse_before": [0.02, 0.04],
            "ece_coarse_after": [0.01, 0.02],
            "ece_coarse_head_before": [math.nan, math.nan],
            "ece_coarse_head_after": [math.nan, math.nan],
            "coverage_target": [0.9, 0.9],
            "coverage": [1.0, 0.8],
            "share_fine": [0.5, 0.0],
            "n": [10, 30],
        }
    )


def test_ece_of_each_level_as_the_mean_over_folds() -> None:
    words = calibration_ui.ece_words(_table())
    assert words == "fine 0.080 → 0.040 · coarse (fine summed) 0.030 → 0.015"


def test_the_call_pooled_over_the_folds_test_slides() -> None:
    # coverage (10·1.0 + 30·0.8) / 40 = 0.85; fine share (10·0.5) / 40 = 12.5 %
    assert calibration_ui.call_words(_table()) == (
        "Call at 90 % coverage: right on 0.85 of 40 test slides, fine answer on 12 %."
    )
    assert calibration_ui.call_words(_table().assign(n=math.nan)) == ""


def test_the_caption_names_ece_temperatures_and_call() -> None:
    caption = calibration_ui.calibration_caption(_table())
    assert "ECE before → after, mean over 2 fold(s): fine 0.080 → 0.040" in caption
    assert "T per fold: fine 0.92, 1.35; coarse classifier 0.87, 0.86." in caption
    assert caption.endswith("fine answer on 12 %.")
    assert "ECE" not in calibration_ui.calibration_caption(pd.DataFrame())


def test_a_target_no_fold_can_meet_is_said_to_be_the_validation_parts_fault() -> None:
    words = calibration_ui.call_words(_table().assign(coarse_threshold=[1.0, 1.0]))
    assert words.endswith("its validation part is too small for the guarantee (every label "
                          "stays in every set), whatever the slide.")  # fmt: skip
    partial = calibration_ui.call_words(_table().assign(coarse_threshold=[1.0, 0.2]))
    assert partial.endswith("fine answer on 12 %.")
