"""Per-level classification metrics from probabilities (scikit-learn does the counting).

Macro-F1 averages over *every* class of the level (``labels=range(K)``, a class absent from
the set and never predicted scoring 0), so a test part missing a class cannot raise the score;
it equals ``sklearn.metrics.f1_score(..., labels=range(K), average="macro", zero_division=0)``.
Macro one-vs-rest AUC follows CLAM's evaluation: per-class AUC where the class has both
positives and negatives in the set, NaN otherwise, macro = mean over the defined classes.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)


def level_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    class_names: tuple[str, ...] | list[str],
    y_pred: np.ndarray | None = None,
) -> dict[str, Any]:
    """Metrics of one level.

    Args:
        y_true: ``(S,)`` true class indices.
        probs: ``(S, K)`` class probabilities.
        class_names: K names, in index order.
        y_pred: ``(S,)`` predicted indices (default: argmax of ``probs``).

    Returns:
        ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``macro_auc``, ``n``, ``per_class``
        (name → precision, recall, f1, support, auc) and ``confusion_matrix`` (rows = true,
        columns = predicted, K×K list of ints).
    """
    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    k = len(class_names)
    y_pred = probs.argmax(axis=1) if y_pred is None else np.asarray(y_pred, dtype=int)
    labels = list(range(k))
    if y_true.size == 0:
        return {"n": 0, "accuracy": float("nan"), "balanced_accuracy": float("nan"),
                "macro_f1": float("nan"), "macro_auc": float("nan"), "per_class": {},
                "confusion_matrix": [[0] * k for _ in range(k)]}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes absent from a small val/test set
        precision, recall, f1, support = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, zero_division=0
        )
        bacc = balanced_accuracy_score(y_true, y_pred)
    aucs = one_vs_rest_auc(y_true, probs)
    defined = aucs[~np.isnan(aucs)]
    return {
        "n": int(y_true.size),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(bacc),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "macro_auc": float(defined.mean()) if defined.size else float("nan"),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
                "auc": float(aucs[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def one_vs_rest_auc(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """``(K,)`` per-class one-vs-rest ROC AUC; NaN where a class has no positive or negative."""
    out = np.full(probs.shape[1], np.nan)
    for k in range(probs.shape[1]):
        positive = y_true == k
        if positive.any() and (~positive).any():
            out[k] = roc_auc_score(positive, probs[:, k])
    return out


def specificity(y_true: np.ndarray, y_pred: np.ndarray, negative_class: int = 0) -> float:
    """Fraction of slides truly in ``negative_class`` that are predicted in it: TN / (TN + FP).

    With the first coarse class as the benign/negative class (every non-benign group counted
    as "positive"), this is the specificity the method doc asks for.
    """
    negatives = np.asarray(y_true) == negative_class
    if not negatives.any():
        return float("nan")
    return float((np.asarray(y_pred)[negatives] == negative_class).mean())
