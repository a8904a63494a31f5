"""``hmil.train.attention_metrics``: how well each class's attention row finds the key instances."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hmil.train.attention_metrics import (
    RowLocalisation,
    bag_localisation,
    mean_localisation,
    row_correlation,
)


def test_a_true_row_on_the_lesion_beats_the_other_rows() -> None:
    mask = np.array([True, True, False, False, False])
    rows = np.array(
        [
            [0.05, 0.05, 0.30, 0.30, 0.30],  # class 0: on the background (AUROC 0)
            [0.35, 0.35, 0.10, 0.10, 0.10],  # class 1, the true one: on the lesion (AUROC 1)
            [0.20, 0.20, 0.20, 0.20, 0.20],  # class 2: flat (AUROC 0.5)
        ]
    )
    loc = bag_localisation(rows, mask, true_class=1)
    assert loc.true_row_auroc == pytest.approx(1.0)
    assert loc.other_rows_auroc == pytest.approx(0.25)  # mean of 0 and 0.5
    assert loc.row_correlation == pytest.approx(-1.0)  # rows 0, 1 anti-correlated; row 2 constant


def test_no_auroc_without_a_mixed_mask_but_a_correlation_still() -> None:
    rows = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])
    for mask in (None, np.zeros(3, bool), np.ones(3, bool)):
        loc = bag_localisation(rows, mask, true_class=0)
        assert math.isnan(loc.true_row_auroc) and math.isnan(loc.other_rows_auroc)
        assert loc.row_correlation == pytest.approx(1.0)


def test_row_correlation_needs_two_rows_and_three_instances() -> None:
    assert math.isnan(row_correlation(np.ones((1, 10))))
    assert math.isnan(row_correlation(np.array([[1.0, 2.0], [2.0, 1.0]])))
    assert math.isnan(row_correlation(np.ones((3, 5))))  # all rows constant
    rows = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    assert row_correlation(rows) == pytest.approx((-1.0 - 1.0 + 1.0) / 3)


def test_mean_over_bags_skips_undefined_numbers() -> None:
    nan = float("nan")
    bags = [
        RowLocalisation(1.0, 0.5, 0.2),
        RowLocalisation(nan, nan, 0.4),  # a key-free bag: only its correlation counts
        RowLocalisation(0.8, 0.3, nan),
    ]
    mean = mean_localisation(bags)
    assert mean.true_row_auroc == pytest.approx(0.9)
    assert mean.other_rows_auroc == pytest.approx(0.4)
    assert mean.row_correlation == pytest.approx(0.3)
    empty = mean_localisation([])
    assert all(math.isnan(v) for v in (empty.true_row_auroc, empty.row_correlation))
