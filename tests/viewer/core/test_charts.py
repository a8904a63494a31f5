"""The cohort page's reliability diagrams: the folds' reliability.csv drawn by the engine that
``hmil evaluate`` shares (hmil.reliability_figure, whose figure tests are in
tests/hmil/test_reliability_figure.py), a panel per level the run has, under the page's names."""

from __future__ import annotations

from pathlib import Path

from hmil import reliability_figure as rf
from hmil.train.evaluate import reliability_frame
from viewer.components import calibration_ui
from viewer.core import cohort


def _section(confidence: list[float]) -> dict[str, object]:
    bins = {"confidence": confidence, "accuracy": [0.5, 1.0], "count": [2, 3]}
    level = {"before": {"reliability": bins}, "after": {"reliability": bins}}
    return {"fine": level, "coarse": level}


def test_the_cohort_page_draws_the_folds_reliability_files_with_the_shared_engine(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    for fold, confidence in ((0, [0.6, 0.9]), (2, [0.35, 0.8])):
        (run / f"fold_{fold}").mkdir(parents=True)
        path = run / f"fold_{fold}" / "reliability.csv"
        reliability_frame(_section(confidence)).to_csv(path, index=False)
    assert calibration_ui.reliability_figure is rf.reliability_figure  # one engine
    assert cohort.CALIBRATION_LEVELS is rf.CALIBRATION_LEVELS
    table = cohort.load_reliability(run)
    fig = calibration_ui.reliability_figure(table, cohort.CALIBRATION_LEVELS, "t")
    assert [a.text for a in fig.layout.annotations] == ["fine", "coarse (fine summed)"]
    points = [t for t in fig.data if t.name != "perfect calibration"]
    assert len(points) == 2 * 2 * 2  # levels × folds × before/after
    fold2 = [t for t in points if t.hovertemplate.startswith("fold 2 · after")]
    assert [list(t.x) for t in fold2] == [[0.35, 0.8], [0.35, 0.8]]
    assert list(fig.layout.xaxis.range) == [0.29, 1.01]
