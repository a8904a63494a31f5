"""Split-conformal hierarchical call: say less when the model knows less.

Calibrated on the validation part (n bags) after temperature scaling, applied to any new bag.
See docs/method.md ("Calibration and the hierarchical call").

Nonconformity score of a bag at a level: ``s = 1 − p̂[true class]`` with the calibrated fine
probabilities ``p̂_f`` at the fine level and ``p̂_c = Mᵀ p̂_f`` at the coarse level. For a target
coverage ``1 − α`` the level's threshold is the ``k``-th smallest validation score,
``k = ⌈(n + 1)(1 − α)⌉`` (the quantile at level ``⌈(n + 1)(1 − α)⌉ / n``); when ``k > n``
the threshold is 1, which admits every label. A new bag's prediction set at a level is every
label with ``1 − p̂ ≤ threshold``.

The call of a bag, with fine set ``C_f`` and coarse set ``C_c``:

* ``fine`` with label ``j`` when ``C_f = {j}``;
* else ``coarse`` with label ``c`` when ``C_c ∪ parents(C_f) = {c}``;
* else ``none`` (no label; the bag needs a closer look).

A fine call is right when it names the true fine label, a coarse call when it names the true
coarse label, and no call is always right. Every wrong call has the true fine label outside
``C_f`` (a coarse call's set contains ``parent(y)`` whenever ``y ∈ C_f``), so for validation
and new bags drawn from the same distribution the share of right calls is at least ``1 − α``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from hmil.errors import ConfigError

#: default target coverage of the call (1 − α)
DEFAULT_COVERAGE = 0.9
#: call levels, most to least specific
CALL_LEVELS = ("fine", "coarse", "none")
#: slack of the set membership test (scores are differences of float probabilities)
_EPS = 1e-9


def check_coverage(coverage: float) -> float:
    """``coverage`` when it is a target in (0, 1).

    Raises:
        ConfigError: naming ``coverage``, for a value outside (0, 1).
    """
    if not 0.0 < float(coverage) < 1.0:
        raise ConfigError("coverage", f"must be in (0, 1), found {coverage}")
    return float(coverage)


def parent_mapping(parent: np.ndarray) -> np.ndarray:
    """``(Kf, Kc)`` 0/1 matrix M of a ``(Kf,)`` parent index array (coarse = fine @ M)."""
    parent = np.asarray(parent, dtype=int)
    mapping = np.zeros((parent.size, int(parent.max()) + 1))
    mapping[np.arange(parent.size), parent] = 1.0
    return mapping


def nonconformity(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(S,)`` scores ``1 − p[i, y_i]`` of ``(S, K)`` probabilities and true classes ``y``."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=int)
    return 1.0 - p[np.arange(y.size), y]


def min_calibration_size(coverage: float) -> int:
    """The fewest validation bags whose threshold can be below 1 at target ``coverage``: the
    least ``n`` with ``⌈(n + 1)·coverage⌉ ≤ n`` (9 at 0.9, 4 at 0.8, 19 at 0.95). With fewer,
    every set holds every label and the call is always ``none`` — a statement about the size
    of the validation part, not about the bag."""
    check_coverage(coverage)
    n = 1
    while math.ceil((n + 1) * coverage - 1e-9) > n:
        n += 1
    return n


def conformal_threshold(scores: np.ndarray, coverage: float) -> float:
    """The ``k``-th smallest of ``n`` scores, ``k = ⌈(n + 1)·coverage⌉``; 1 when ``k > n``
    (including n = 0), so that the set then holds every label.

    Raises:
        ValueError: ``coverage`` outside (0, 1).
    """
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be in (0, 1), found {coverage}")
    s = np.sort(np.asarray(scores, dtype=np.float64))
    k = math.ceil((s.size + 1) * coverage - 1e-9)  # 10 · 0.9 is 9.000000000000002
    if k > s.size:
        return 1.0
    return float(s[max(k, 1) - 1])


def prediction_sets(probs: np.ndarray, threshold: float) -> np.ndarray:
    """``(S, K)`` bool membership of each label in each bag's set: ``1 − p ≤ threshold``."""
    p = np.asarray(probs, dtype=np.float64)
    return (1.0 - p) <= threshold + _EPS


@dataclass(frozen=True)
class Calls:
    """The calls of S bags: ``level`` ``(S,)`` strings of :data:`CALL_LEVELS` and ``label``
    ``(S,)`` the called class index at that level (−1 for ``none``)."""

    level: np.ndarray
    label: np.ndarray


def hierarchical_calls(
    fine_probs: np.ndarray, parent: np.ndarray, fine_threshold: float, coarse_threshold: float
) -> Calls:
    """Calls of ``(S, Kf)`` calibrated fine probabilities (the rule of the module docstring).

    Args:
        fine_probs: ``(S, Kf)`` calibrated fine probabilities.
        parent: ``(Kf,)`` coarse index of each fine class.
        fine_threshold: the fine level's conformal threshold.
        coarse_threshold: the coarse level's, on ``p̂_c = Mᵀ p̂_f``.
    """
    p_f = np.atleast_2d(np.asarray(fine_probs, dtype=np.float64))
    mapping = parent_mapping(parent)
    fine_set = prediction_sets(p_f, fine_threshold)  # (S, Kf)
    coarse_set = prediction_sets(p_f @ mapping, coarse_threshold)  # (S, Kc)
    coarse_set |= (fine_set.astype(np.float64) @ mapping) > 0  # ∪ parents(C_f)
    level = np.full(p_f.shape[0], "none", dtype=object)
    label = np.full(p_f.shape[0], -1, dtype=int)
    coarse_one = coarse_set.sum(axis=1) == 1
    level[coarse_one] = "coarse"
    label[coarse_one] = coarse_set[coarse_one].argmax(axis=1)
    fine_one = fine_set.sum(axis=1) == 1
    level[fine_one] = "fine"
    label[fine_one] = fine_set[fine_one].argmax(axis=1)
    return Calls(level=level, label=label)


def call_outcomes(calls: Calls, y_fine: np.ndarray, parent: np.ndarray) -> dict[str, Any]:
    """How the calls of S bags with true fine classes ``y_fine`` fared.

    Returns:
        ``n``; ``coverage`` (share of right calls, none counting as right); ``share_fine``,
        ``share_coarse``, ``share_none``; ``accuracy_fine`` / ``accuracy_coarse`` (share right
        among the calls made at that level, NaN when none was made).
    """
    y_fine = np.asarray(y_fine, dtype=int)
    y_coarse = np.asarray(parent, dtype=int)[y_fine]
    fine = calls.level == "fine"
    coarse = calls.level == "coarse"
    right_fine = fine & (calls.label == y_fine)
    right_coarse = coarse & (calls.label == y_coarse)
    right = right_fine | right_coarse | (calls.level == "none")
    n = int(y_fine.size)

    def share(mask: np.ndarray) -> float:
        return float(mask.mean()) if n else float("nan")

    def accuracy(hit: np.ndarray, made: np.ndarray) -> float:
        return float(hit.sum() / made.sum()) if made.any() else float("nan")

    return {
        "n": n,
        "coverage": share(right),
        "share_fine": share(fine),
        "share_coarse": share(coarse),
        "share_none": share(calls.level == "none"),
        "accuracy_fine": accuracy(right_fine, fine),
        "accuracy_coarse": accuracy(right_coarse, coarse),
    }


def risk_coverage(probs: np.ndarray, y: np.ndarray, n_points: int = 20) -> dict[str, list[float]]:
    """Selective-prediction curve of one level: answer only the most confident bags.

    Bags are sorted by top-label confidence (descending, stable); for answered shares
    ``i / n_points`` (i = 1..n_points, rounded up to whole bags) the curve gives the share
    answered (``coverage``), the error rate among them (``risk``) and the lowest confidence
    answered (``confidence``). Empty lists for S = 0.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=int)
    out: dict[str, list[float]] = {"coverage": [], "risk": [], "confidence": []}
    if y.size == 0:
        return out
    conf = p.max(axis=1)
    order = np.argsort(-conf, kind="stable")
    wrong = np.cumsum(p.argmax(axis=1)[order] != y[order])
    for k in sorted({math.ceil(y.size * i / n_points) for i in range(1, n_points + 1)}):
        out["coverage"].append(round(k / y.size, 6))
        out["risk"].append(round(float(wrong[k - 1] / k), 6))
        out["confidence"].append(round(float(conf[order[k - 1]]), 6))
    return out
