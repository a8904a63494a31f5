"""Reliability diagrams: one panel per level, a line per fold and calibration whose points
are the bins of the folds' reliability.csv, and the diagonal."""

from __future__ import annotations

import pandas as pd

from viewer.core import charts

LEVELS = (("fine", "fine"), ("coarse", "coarse (fine summed)"), ("coarse_head", "classifier"))


def _table() -> pd.DataFrame:
    rows = [
        (0, "fine", "before", 1, 0.95, 0.5, 3),
        (0, "fine", "before", 0, 0.6, 0.4, 2),  # out of order: drawn by bin
        (0, "fine", "after", 0, 0.5, 0.4, 2),
        (0, "fine", "after", 1, 0.7, 0.5, 3),
        (1, "fine", "after", 0, 0.45, 1.0, 4),
        (0, "coarse", "after", 0, 0.8, 0.75, 5),
    ]
    columns = ["fold", "level", "calibration", "bin", "confidence", "accuracy", "count"]
    return pd.DataFrame(rows, columns=columns)


def test_reliability_points_are_the_bins_per_fold_and_calibration() -> None:
    fig = charts.reliability_figure(_table(), LEVELS, "t")
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["fine", "coarse (fine summed)"]  # no coarse_head rows: no panel
    lines = [t for t in fig.data if t.name != "perfect calibration"]
    assert len(lines) == 4  # fold 0 after/before, fold 1 after (fine); fold 0 after (coarse)
    fold0_before = next(t for t in lines if "fold 0 · before" in t.hovertemplate)
    assert list(fold0_before.x) == [0.6, 0.95] and list(fold0_before.y) == [0.4, 0.5]
    assert fold0_before.customdata.tolist() == [[0, 2], [1, 3]]
    assert fold0_before.marker.color == charts.CALIBRATION_COLOURS["before"]
    assert list(fold0_before.marker.size) == [9, 11]  # grows with the bin's count
    assert list(fig.layout.xaxis.range) == [0.39, 1.01]  # least confident fine bin 0.45
    assert list(fig.layout.xaxis2.range) == [0.79, 1.01]
    coarse = lines[-1]
    assert list(coarse.x) == [0.8] and coarse.xaxis == "x2"
    assert [t.showlegend for t in lines] == [True, True, False, False]  # one entry per kind
    diagonals = [t for t in fig.data if t.name == "perfect calibration"]
    assert [list(t.x) for t in diagonals] == [[0, 1], [0, 1]]
