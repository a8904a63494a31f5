"""Split-conformal thresholds and the hierarchical call (SYNTHETIC probabilities)."""

from __future__ import annotations

import numpy as np
import pytest

from hmil.conformal import (
    call_outcomes,
    check_coverage,
    conformal_threshold,
    hierarchical_calls,
    min_calibration_size,
    nonconformity,
    risk_coverage,
)
from hmil.errors import ConfigError

PARENT = np.array([0, 0, 1, 1])  # fine a, b under A; c, d under B


def test_threshold_is_the_finite_sample_corrected_quantile() -> None:
    scores = np.arange(1, 11) / 100  # 0.01 .. 0.10, n = 10
    assert conformal_threshold(scores, 0.9) == pytest.approx(0.10)  # k = ceil(9.9) = 10
    assert conformal_threshold(scores, 0.8) == pytest.approx(0.09)  # k = ceil(8.8) = 9
    assert conformal_threshold(scores, 0.5) == pytest.approx(0.06)  # k = ceil(5.5) = 6
    assert conformal_threshold(scores[:8], 0.9) == 1.0  # k = ceil(8.1) = 9 > 8: every label
    assert conformal_threshold(np.zeros(0), 0.9) == 1.0
    with pytest.raises(ValueError):
        conformal_threshold(scores, 1.0)
    assert check_coverage(0.95) == 0.95
    with pytest.raises(ConfigError, match=r"^coverage: must be in \(0, 1\), found 0$"):
        check_coverage(0)
    assert nonconformity(np.array([[0.2, 0.8]]), np.array([0])).tolist() == pytest.approx([0.8])


def test_the_call_rule_by_hand() -> None:
    probs = np.array([
        [0.90, 0.05, 0.03, 0.02],  # fine set {a}: fine a
        [0.45, 0.45, 0.05, 0.05],  # fine set {a, b}, parents {A}: coarse A
        [0.40, 0.10, 0.40, 0.10],  # fine set {a, c}: parents {A, B}: none
        [0.30, 0.25, 0.25, 0.20],  # fine set empty, coarse Mᵀp = (0.55, 0.45): set {A}: coarse A
    ])  # fmt: skip
    calls = hierarchical_calls(probs, PARENT, fine_threshold=0.6, coarse_threshold=0.45)
    assert calls.level.tolist() == ["fine", "coarse", "none", "coarse"]
    assert calls.label.tolist() == [0, 0, -1, 0]
    outcome = call_outcomes(calls, np.array([0, 1, 3, 2]), PARENT)
    # bag 4's coarse call A is wrong (true c under B); the others are right
    assert outcome["coverage"] == pytest.approx(0.75)
    assert (outcome["share_fine"], outcome["share_coarse"], outcome["share_none"]) == (
        0.25, 0.5, 0.25,
    )  # fmt: skip
    assert outcome["accuracy_fine"] == 1.0 and outcome["accuracy_coarse"] == 0.5


def test_coverage_holds_the_target_within_sampling_error() -> None:
    """Labels drawn from the reported probabilities (a calibrated model): the calls on fresh
    bags are right at least 90 % of the time, less a few standard errors."""
    rng = np.random.default_rng(0)
    n_cal, n_test = 500, 4000
    logits = rng.normal(0, 1.2, (n_cal + n_test, 4))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = (probs.cumsum(1) > rng.random((n_cal + n_test, 1))).argmax(1)
    mapping = np.eye(2)[PARENT]
    cal, test = slice(0, n_cal), slice(n_cal, None)
    q_f = conformal_threshold(nonconformity(probs[cal], y[cal]), 0.9)
    q_c = conformal_threshold(nonconformity(probs[cal] @ mapping, PARENT[y[cal]]), 0.9)
    outcome = call_outcomes(hierarchical_calls(probs[test], PARENT, q_f, q_c), y[test], PARENT)
    assert outcome["coverage"] >= 0.9 - 3 * np.sqrt(0.09 / n_test)
    fine_cover = (1 - probs[test][np.arange(n_test), y[test]] <= q_f + 1e-9).mean()
    assert fine_cover == pytest.approx(0.9, abs=0.03)  # the fine sets themselves: ≈ the target
    assert 0 < outcome["share_fine"] < 1 and outcome["share_none"] < 1


def test_risk_coverage_answers_the_most_confident_first() -> None:
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45]])
    curve = risk_coverage(probs, np.array([0, 1, 0, 1]), n_points=4)
    assert curve["coverage"] == [0.25, 0.5, 0.75, 1.0]
    assert curve["risk"] == [0.0, 0.5, pytest.approx(1 / 3, abs=1e-6), 0.5]
    assert curve["confidence"] == [0.9, 0.8, 0.6, 0.55]
    assert risk_coverage(probs[:0], np.zeros(0, dtype=int))["risk"] == []


@pytest.mark.parametrize(("coverage", "needed"), [(0.9, 9), (0.8, 4), (0.95, 19), (0.5, 1)])
def test_the_fewest_validation_bags_a_target_can_use(coverage: float, needed: int) -> None:
    assert min_calibration_size(coverage) == needed
    scores = np.linspace(0.0, 0.5, needed)
    assert conformal_threshold(scores, coverage) < 1.0
    assert conformal_threshold(scores[: needed - 1], coverage) == 1.0
