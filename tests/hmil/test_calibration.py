"""Temperature scaling and the calibration numbers, against hand-computed cases and
scikit-learn (SYNTHETIC probabilities)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.metrics import brier_score_loss, log_loss

from hmil.calibration import (
    Calibration,
    brier,
    calibration_report,
    ece,
    fit_calibration,
    fit_temperature,
    nll,
    reliability,
    scale,
)

PARENT = np.array([0, 0, 1, 1, 1])  # 5 fine classes under 2 coarse ones


def _random_probs(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    probs = softmax(rng.normal(0, 2, (n, k)), axis=1)
    y = np.array([rng.choice(k, p=p) for p in probs])
    return probs, y


def test_brier_is_the_sum_of_one_vs_rest_binary_scores_of_sklearn() -> None:
    probs, y = _random_probs(np.random.default_rng(0), 40, 4)
    ours = brier(probs, y)
    theirs = sum(brier_score_loss(y == k, probs[:, k]) for k in range(4))
    assert ours == pytest.approx(theirs, rel=1e-12)
    assert brier(np.array([[1.0, 0.0], [0.5, 0.5]]), np.array([0, 1])) == pytest.approx(0.25)


def test_nll_matches_sklearn_log_loss() -> None:
    probs, y = _random_probs(np.random.default_rng(1), 40, 3)
    assert nll(probs, y) == pytest.approx(log_loss(y, probs, labels=[0, 1, 2]), rel=1e-10)
    assert nll(np.array([[0.25, 0.75]]), np.array([1])) == pytest.approx(-np.log(0.75))


def test_equal_mass_bins_and_ece_by_hand() -> None:
    # confidences 0.6, 0.7, 0.8, 0.9 (top class 0); truths: wrong, right, right, right
    probs = np.array([[0.6, 0.4], [0.7, 0.3], [0.8, 0.2], [0.9, 0.1]])
    y = np.array([1, 0, 0, 0])
    rel = reliability(probs, y, n_bins=2)
    np.testing.assert_allclose(rel.confidence, [0.65, 0.85])
    np.testing.assert_allclose(rel.accuracy, [0.5, 1.0])
    assert rel.count.tolist() == [2, 2]
    assert ece(probs, y, n_bins=2) == pytest.approx(0.5 * 0.15 + 0.5 * 0.15)
    # fewer bags than bins: one bag per bin; 5 bags in 2 bins: sizes 3 and 2
    assert reliability(probs, y).count.tolist() == [1, 1, 1, 1]
    five = np.vstack([probs, [[0.95, 0.05]]])
    assert reliability(five, np.r_[y, 0], n_bins=2).count.tolist() == [3, 2]


def test_scaling_keeps_the_argmax_and_softens_with_t_above_one() -> None:
    probs, _ = _random_probs(np.random.default_rng(2), 20, 5)
    soft = scale(probs, 2.0)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0)
    assert (soft.argmax(axis=1) == probs.argmax(axis=1)).all()
    assert (soft.max(axis=1) <= probs.max(axis=1) + 1e-12).all()
    np.testing.assert_allclose(scale(probs, 1.0), probs, atol=1e-12)


def test_the_fit_recovers_a_known_temperature() -> None:
    """Labels drawn from softmax(z); the model reports softmax(z · T*) (over-confident for
    T* > 1): dividing its logits by T* gives back the calibrated model, so the fit finds T*."""
    rng = np.random.default_rng(3)
    z = rng.normal(0, 1.5, (4000, 5))
    y = np.array([rng.choice(5, p=p) for p in softmax(z, axis=1)])
    for t_star in (0.5, 2.0):
        reported = softmax(z * t_star, axis=1)
        assert fit_temperature(reported, y) == pytest.approx(t_star, rel=0.08)
    assert fit_temperature(np.zeros((0, 5)), np.zeros(0, dtype=int)) == 1.0


def test_the_prior_keeps_a_few_perfectly_classified_bags_from_sharpening_without_limit() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    y = np.array([0, 1, 2])  # all right: the NLL alone falls as T → 0
    assert fit_temperature(probs, y, prior_sigma=None) == pytest.approx(0.05, rel=1e-3)
    t = fit_temperature(probs, y)
    assert 0.4 < t < 1.0
    # the prior's minimum by hand: d/dlogT [NLL(T) + (log T)² / (2 · 0.25 · 3)] = 0
    grid = np.linspace(np.log(0.2), 0, 20001)
    total = [nll(scale(probs, np.exp(g)), y) + g**2 / (2 * 0.25 * 3) for g in grid]
    assert np.log(t) == pytest.approx(grid[int(np.argmin(total))], abs=1e-3)


def test_fitting_lowers_the_ece_and_nll_of_an_overconfident_model() -> None:
    rng = np.random.default_rng(4)
    z = rng.normal(0, 1.5, (3000, 5))
    y = np.array([rng.choice(5, p=p) for p in softmax(z, axis=1)])
    reported = softmax(z * 3.0, axis=1)
    cal = fit_calibration(reported[:1500], reported[:1500, :2], y[:1500], PARENT)
    section = calibration_report(cal, reported[1500:], None, y[1500:], PARENT)
    fine = section["fine"]
    assert fine["after"]["ece"] < 0.5 * fine["before"]["ece"]
    assert fine["after"]["nll"] < fine["before"]["nll"]
    assert fine["after"]["brier"] < fine["before"]["brier"]
    assert "coarse_head" not in section and set(section["risk_coverage"]) == {"fine", "coarse"}
    assert section["temperature"]["fine"] == pytest.approx(3.0, rel=0.1)
    assert 0.85 <= section["call"]["coverage"] <= 1.0


def test_calibration_round_trips_and_an_empty_one_is_the_identity() -> None:
    rng = np.random.default_rng(5)
    probs, y = _random_probs(rng, 30, 5)
    cal = fit_calibration(probs, probs[:, :2] / probs[:, :2].sum(1, keepdims=True), y, PARENT)
    data = cal.to_dict()
    assert set(data["temperature"]) == {"coarse", "fine"}
    assert data["conformal"]["n"] == 30 and data["conformal"]["coverage_target"] == 0.9
    again = Calibration.from_dict(data)
    assert again == cal and again.thresholds() == cal.thresholds()
    empty = Calibration.from_dict({})
    assert (empty.fine_temperature, empty.coarse_temperature, empty.fitted) == (1.0, 1.0, False)
    assert empty.calls(probs, PARENT) is None
    with pytest.raises(ValueError, match=r"temperature\.fine"):
        Calibration.from_dict({"temperature": {"fine": 0}})
    assert fit_calibration(probs[:0], None, y[:0], PARENT).fitted is False
