"""Can the class-wise maps be trusted? Localisation of known key instances, per attention row.

HMIL draws one attention map per class. A map is useful to a pathologist when the row of the
slide's true class points at the evidence (the key instances: a lesion, a planted pattern) and
does so *better than the rows of the other classes*, and when the rows differ from one another
(if every row looks at the same patches, the maps say nothing class-specific). Three numbers
per bag, averaged over bags:

* true-row AUROC: ROC AUC of the true class's row against the key-instance mask;
* other-rows AUROC: the mean of the same over the other classes' rows;
* row correlation: the mean pairwise Pearson correlation between the rows.

Bags whose mask is all-key or key-free (e.g. a ``normal`` slide) have no AUROC; they still
count for the correlation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score


@dataclass(frozen=True)
class RowLocalisation:
    """The three numbers of one bag (NaN where undefined)."""

    true_row_auroc: float
    other_rows_auroc: float
    row_correlation: float


def bag_localisation(
    rows: np.ndarray, key_mask: np.ndarray | None, true_class: int
) -> RowLocalisation:
    """Localisation of one bag's class-wise attention.

    Args:
        rows: ``(K, N)`` attention, one row per class.
        key_mask: ``(N,)`` bool ground-truth key instances, or None.
        true_class: the bag's class index (row of ``rows``).
    """
    rows = np.asarray(rows, dtype=np.float64)
    true_auc = other_auc = float("nan")
    if key_mask is not None:
        mask = np.asarray(key_mask, dtype=bool)
        if mask.any() and not mask.all():
            true_auc = float(roc_auc_score(mask, rows[true_class]))
            others = [roc_auc_score(mask, rows[k]) for k in range(rows.shape[0]) if k != true_class]
            other_auc = float(np.mean(others)) if others else float("nan")
    return RowLocalisation(true_auc, other_auc, row_correlation(rows))


def row_correlation(rows: np.ndarray) -> float:
    """Mean pairwise Pearson correlation between the ``(K, N)`` rows (NaN for K < 2 or N < 3;
    constant rows are left out of the mean)."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.shape[0] < 2 or rows.shape[1] < 3:
        return float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(rows)
    upper = corr[np.triu_indices(rows.shape[0], k=1)]
    upper = upper[np.isfinite(upper)]
    return float(upper.mean()) if upper.size else float("nan")


def mean_localisation(bags: Iterable[RowLocalisation]) -> RowLocalisation:
    """Each number averaged over the bags where it is defined."""
    items = list(bags)

    def mean(values: list[float]) -> float:
        finite = [v for v in values if np.isfinite(v)]
        return float(np.mean(finite)) if finite else float("nan")

    return RowLocalisation(
        mean([b.true_row_auroc for b in items]),
        mean([b.other_rows_auroc for b in items]),
        mean([b.row_correlation for b in items]),
    )
