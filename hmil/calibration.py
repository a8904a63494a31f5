"""Calibrated confidence per level: temperature scaling and the numbers that judge it.

A network trained with cross-entropy is usually over-confident: of the slides it calls with
probability 0.95, fewer than 95 % are right. Temperature scaling divides each level's logits by
one number T fitted on the validation part after training (T > 1 softens, T < 1 sharpens); the
argmax of a head never changes, only how much its probabilities promise. See docs/method.md
("Calibration and the hierarchical call").

Levels: ``fine`` (fine head, temperature ``T_f``), ``coarse_head`` (coarse head, ``T_c``) and
``coarse`` (Mᵀ p_f, the fine probabilities summed per parent: calibrated through ``T_f``).

The fold loop and ``hmil predict`` see probabilities, not logits, so logits are taken as
``log p`` (equal to the logits up to a per-bag constant, which softmax ignores); probabilities
that underflowed to 0 in float32 are clipped to :data:`TINY` first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from hmil.conformal import (
    DEFAULT_COVERAGE,
    Calls,
    call_outcomes,
    conformal_threshold,
    hierarchical_calls,
    nonconformity,
    parent_mapping,
    risk_coverage,
)

#: probabilities are clipped to this before taking logs (NLL and logits from probabilities)
TINY = 1e-12
#: temperatures are searched in [1/20, 20] (log-uniformly)
T_BOUNDS = (0.05, 20.0)
#: equal-mass bins of the reliability diagram and the ECE
N_BINS = 15
#: standard deviation of the log-normal prior on T (median 1) that the fit adds to the NLL
PRIOR_SIGMA = 0.5


def logits_from_probs(probs: np.ndarray) -> np.ndarray:
    """``(S, K)`` logits (up to a per-row constant) of ``(S, K)`` probabilities: ``log p``."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), TINY, None))


def scale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``(S, K)`` probabilities after dividing their logits by ``temperature``."""
    return np.exp(log_softmax(logits_from_probs(probs) / float(temperature), axis=-1))


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes ``y`` ``(S,)`` under ``(S, K)``
    probabilities (clipped to :data:`TINY`); NaN for S = 0."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=int)
    if y.size == 0:
        return float("nan")
    return float(-np.log(np.clip(p[np.arange(y.size), y], TINY, None)).mean())


def brier(probs: np.ndarray, y: np.ndarray) -> float:
    """Multi-class Brier score: mean over bags of Σ_k (p_k − 1[y = k])²; in [0, 2], NaN for
    S = 0. Equals the sum over classes of the one-vs-rest binary Brier scores."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=int)
    if y.size == 0:
        return float("nan")
    onehot = np.zeros_like(p)
    onehot[np.arange(y.size), y] = 1.0
    return float(((p - onehot) ** 2).sum(axis=1).mean())


@dataclass(frozen=True)
class Reliability:
    """Reliability-diagram data: per bin the mean top-label confidence, the accuracy and the
    number of bags (arrays of length B ≤ :data:`N_BINS`)."""

    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray

    def to_dict(self) -> dict[str, list[float] | list[int]]:
        return {
            "confidence": [round(float(v), 6) for v in self.confidence],
            "accuracy": [round(float(v), 6) for v in self.accuracy],
            "count": [int(v) for v in self.count],
        }


def reliability(probs: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> Reliability:
    """Equal-mass reliability bins of the top-label confidence.

    The bags are sorted by top-label confidence ``max_k p_k`` (stable sort, ties in input
    order) and cut into ``B = min(n_bins, S)`` consecutive bins whose sizes differ by at most
    one (the first ``S mod B`` bins hold one more, as :func:`numpy.array_split`). Per bin: the
    mean confidence, the fraction of bags whose argmax is the true class, and the count.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=int)
    if y.size == 0:
        empty = np.zeros(0)
        return Reliability(empty, empty, np.zeros(0, dtype=int))
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    order = np.argsort(conf, kind="stable")
    bins = np.array_split(order, min(n_bins, y.size))
    return Reliability(
        confidence=np.array([conf[b].mean() for b in bins]),
        accuracy=np.array([correct[b].mean() for b in bins]),
        count=np.array([b.size for b in bins], dtype=int),
    )


def ece(probs: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> float:
    """Expected calibration error with equal-mass bins (see :func:`reliability`):
    Σ_b (n_b / S) · |accuracy_b − confidence_b|, top-label; NaN for S = 0."""
    rel = reliability(probs, y, n_bins)
    if rel.count.sum() == 0:
        return float("nan")
    weights = rel.count / rel.count.sum()
    return float((weights * np.abs(rel.accuracy - rel.confidence)).sum())


def fit_temperature(
    probs: np.ndarray, y: np.ndarray, prior_sigma: float | None = PRIOR_SIGMA
) -> float:
    """The temperature T minimising the mean NLL of ``softmax(log p / T)`` on ``(S, K)``
    probabilities with true classes ``y`` ``(S,)``, plus ``(log T)² / (2 σ² S)``.

    The second term is a log-normal prior on T (median 1, ``σ = prior_sigma``; None: no
    prior) whose weight falls as 1/S: a validation part that classifies every bag right has
    no NLL minimum (the NLL keeps falling as T → 0), and a few bags would otherwise sharpen the
    probabilities far beyond what they can judge; on hundreds of bags the prior is negligible.
    Deterministic: a bounded scalar search (Brent) over log T in ``log`` :data:`T_BOUNDS`.
    Returns 1 for S = 0 (nothing to fit on).
    """
    y = np.asarray(y, dtype=int)
    if y.size == 0:
        return 1.0
    logits = logits_from_probs(probs)
    rows = np.arange(y.size)

    def loss(log_t: float) -> float:
        data = float(-log_softmax(logits / math.exp(log_t), axis=1)[rows, y].mean())
        prior = 0.0 if prior_sigma is None else log_t**2 / (2 * prior_sigma**2 * y.size)
        return data + prior

    lo, hi = (math.log(b) for b in T_BOUNDS)
    result = minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    return float(math.exp(float(result.x)))


def level_calibration(probs: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """ECE, Brier, NLL and the reliability data of one level's ``(S, K)`` probabilities."""
    return {
        "ece": ece(probs, y),
        "brier": brier(probs, y),
        "nll": nll(probs, y),
        "reliability": reliability(probs, y).to_dict(),
    }


@dataclass(frozen=True)
class Calibration:
    """What a checkpoint keeps under ``calibration`` (see docs/formats.md).

    Attributes:
        coarse_temperature: ``T_c`` of the coarse head's logits (1: uncalibrated).
        fine_temperature: ``T_f`` of the fine head's logits.
        fine_scores: sorted validation nonconformity scores at the fine level (calibrated
            probabilities), or None when no call was fitted.
        coarse_scores: the same at the coarse level (Mᵀ p̂_f).
        coverage_target: the call's default target coverage.
    """

    coarse_temperature: float = 1.0
    fine_temperature: float = 1.0
    fine_scores: tuple[float, ...] | None = None
    coarse_scores: tuple[float, ...] | None = None
    coverage_target: float = DEFAULT_COVERAGE

    @property
    def fitted(self) -> bool:
        """True when the checkpoint can make calls (it has conformal scores)."""
        return self.fine_scores is not None and self.coarse_scores is not None

    def apply(
        self, fine_probs: np.ndarray, coarse_head_probs: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Calibrated ``(S, Kf)`` fine and ``(S, Kc)`` coarse-head probabilities."""
        fine = scale(fine_probs, self.fine_temperature)
        head = None if coarse_head_probs is None else scale(coarse_head_probs,
                                                            self.coarse_temperature)  # fmt: skip
        return fine, head

    def thresholds(self, coverage: float | None = None) -> tuple[float, float] | None:
        """``(fine, coarse)`` conformal thresholds for ``coverage`` (default: the stored
        target), or None without scores."""
        if self.fine_scores is None or self.coarse_scores is None:
            return None
        target = self.coverage_target if coverage is None else coverage
        return (
            conformal_threshold(np.asarray(self.fine_scores), target),
            conformal_threshold(np.asarray(self.coarse_scores), target),
        )

    def calls(
        self, calibrated_fine: np.ndarray, parent: np.ndarray, coverage: float | None = None
    ) -> Calls | None:
        """Calls of ``(S, Kf)`` calibrated fine probabilities; None without scores."""
        thresholds = self.thresholds(coverage)
        if thresholds is None:
            return None
        return hierarchical_calls(calibrated_fine, parent, *thresholds)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the checkpoint (``temperature`` is what ``hmil export`` reads)."""
        out: dict[str, Any] = {
            "temperature": {"coarse": self.coarse_temperature, "fine": self.fine_temperature},
            "fitted_on": "validation",
        }
        thresholds = self.thresholds()
        if thresholds is not None and self.fine_scores is not None:
            out["conformal"] = {
                "coverage_target": self.coverage_target,
                "fine_threshold": thresholds[0],
                "coarse_threshold": thresholds[1],
                "n": len(self.fine_scores),
                "scores": {
                    "fine": list(self.fine_scores),
                    "coarse": list(self.coarse_scores or ()),
                },
            }
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Calibration:
        """Read :meth:`to_dict`'s data; None or ``{}`` (a checkpoint without calibration)
        gives T = 1 and no call.

        Raises:
            ValueError: temperatures that are not finite numbers > 0, scores outside [0, 1],
                or a target coverage outside (0, 1).
        """
        if not data:
            return cls()
        if not isinstance(data, dict):
            raise ValueError("calibration must be a mapping")
        temps = data.get("temperature") or {}
        values = {level: float(temps.get(level, 1.0)) for level in ("coarse", "fine")}
        for level, t in values.items():
            if not (math.isfinite(t) and t > 0):
                raise ValueError(f"calibration.temperature.{level} must be > 0, found {t}")
        conformal = data.get("conformal") or {}
        scores = conformal.get("scores") or {}
        fine, coarse = scores.get("fine"), scores.get("coarse")
        fine_scores = coarse_scores = None
        if fine is not None and coarse is not None:
            fine_scores = tuple(sorted(float(v) for v in fine))
            coarse_scores = tuple(sorted(float(v) for v in coarse))
            if any(not 0.0 <= v <= 1.0 for v in fine_scores + coarse_scores):
                raise ValueError("calibration.conformal.scores must lie in [0, 1]")
        target = float(conformal.get("coverage_target", DEFAULT_COVERAGE))
        if not 0.0 < target < 1.0:
            raise ValueError(
                f"calibration.conformal.coverage_target must be in (0, 1), found {target}"
            )
        return cls(values["coarse"], values["fine"], fine_scores, coarse_scores, target)


def fit_calibration(
    fine_probs: np.ndarray,
    coarse_head_probs: np.ndarray | None,
    y_fine: np.ndarray,
    parent: np.ndarray,
    coverage: float = DEFAULT_COVERAGE,
) -> Calibration:
    """Fit the temperatures and the call's scores on the validation part.

    Args:
        fine_probs: ``(n, Kf)`` raw fine probabilities of the validation bags.
        coarse_head_probs: ``(n, Kc)`` raw coarse-head ones (None: T_c = 1).
        y_fine: ``(n,)`` true fine classes.
        parent: ``(Kf,)`` coarse index of each fine class.
        coverage: the call's default target coverage.

    With n = 0 nothing is fitted (T = 1, no call).
    """
    y_fine = np.asarray(y_fine, dtype=int)
    if y_fine.size == 0:
        return Calibration(coverage_target=coverage)
    parent = np.asarray(parent, dtype=int)
    y_coarse = parent[y_fine]
    t_fine = fit_temperature(fine_probs, y_fine)
    t_coarse = 1.0 if coarse_head_probs is None else fit_temperature(coarse_head_probs, y_coarse)
    calibrated = scale(fine_probs, t_fine)
    mapping = parent_mapping(parent)

    def scores(p: np.ndarray, y: np.ndarray) -> tuple[float, ...]:
        return tuple(sorted(round(float(v), 8) for v in np.clip(nonconformity(p, y), 0, 1)))

    return Calibration(
        coarse_temperature=round(t_coarse, 6),
        fine_temperature=round(t_fine, 6),
        fine_scores=scores(calibrated, y_fine),
        coarse_scores=scores(calibrated @ mapping, y_coarse),
        coverage_target=coverage,
    )


def calibration_report(
    calibration: Calibration,
    fine_probs: np.ndarray,
    coarse_head_probs: np.ndarray | None,
    y_fine: np.ndarray,
    parent: np.ndarray,
    coverage: float | None = None,
) -> dict[str, Any]:
    """The ``calibration`` section of a test report.

    Args:
        calibration: the checkpoint's.
        fine_probs: ``(S, Kf)`` raw fine probabilities of the test bags.
        coarse_head_probs: ``(S, Kc)`` raw coarse-head ones, or None.
        y_fine: ``(S,)`` true fine classes.
        parent: ``(Kf,)`` coarse index of each fine class.
        coverage: the call's target (default: the checkpoint's).

    Returns:
        ``temperature``; per level (``fine``, ``coarse`` = Mᵀ p_f, ``coarse_head``) the
        ``before`` / ``after`` :func:`level_calibration`; ``risk_coverage`` per level of the
        calibrated probabilities; and ``call`` (:func:`hmil.conformal.call_outcomes` with the
        target and thresholds), absent when the checkpoint has no call.
    """
    y_fine = np.asarray(y_fine, dtype=int)
    parent = np.asarray(parent, dtype=int)
    y_coarse = parent[y_fine]
    mapping = parent_mapping(parent)
    fine_after, head_after = calibration.apply(fine_probs, coarse_head_probs)
    levels = {
        "fine": (np.asarray(fine_probs, dtype=np.float64), fine_after, y_fine),
        "coarse": (np.asarray(fine_probs, dtype=np.float64) @ mapping, fine_after @ mapping,
                   y_coarse),
    }  # fmt: skip
    if coarse_head_probs is not None and head_after is not None:
        levels["coarse_head"] = (np.asarray(coarse_head_probs, np.float64), head_after, y_coarse)
    report: dict[str, Any] = {
        "temperature": {
            "coarse": calibration.coarse_temperature,
            "fine": calibration.fine_temperature,
        },
        "bins": N_BINS,
    }
    for level, (before, after, y) in levels.items():
        report[level] = {
            "before": level_calibration(before, y),
            "after": level_calibration(after, y),
        }
    report["risk_coverage"] = {
        level: risk_coverage(after, y) for level, (_, after, y) in levels.items()
    }
    target = calibration.coverage_target if coverage is None else coverage
    calls = calibration.calls(fine_after, parent, target)
    thresholds = calibration.thresholds(target)
    if calls is not None and thresholds is not None:
        report["call"] = {
            "coverage_target": target,
            "fine_threshold": thresholds[0],
            "coarse_threshold": thresholds[1],
            **call_outcomes(calls, y_fine, parent),
        }
    return report
