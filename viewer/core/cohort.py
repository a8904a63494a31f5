"""Cohort page tables: metrics per fold with mean ± std, confusion counts, filters, ROC data,
the call of each slide and the calibration numbers of the folds.

Input is the stacked ``predictions.csv`` of a run (:func:`viewer.core.runs.load_predictions`,
one row per slide and fold, columns ``true_<level>``, ``pred_<level>``, ``correct_<level>``,
``confidence_<level>``, ``p_<level>_<class>``; with a calibrated checkpoint also
``raw_p_<level>_<class>``, ``call_level``, ``call_label``, ``coverage_target``), the folds'
``test_metrics.json`` and ``reliability.csv``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hmil.reliability_figure import CALIBRATION_LEVELS
from hmil.train.evaluate import read_reliability
from viewer.core.inference import call_words

COHORT_LEVELS = ("coarse", "fine")
#: metrics shown per fold: (level key in test_metrics.json, metric key, column title)
METRIC_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("fine", "balanced_accuracy", "fine bal. acc"),
    ("fine", "macro_f1", "fine macro F1"),
    ("fine", "macro_auc", "fine macro AUC"),
    ("coarse", "balanced_accuracy", "coarse bal. acc"),
    ("coarse", "macro_f1", "coarse macro F1"),
    ("coarse", "macro_auc", "coarse macro AUC"),
    ("coarse_head", "balanced_accuracy", "coarse classifier bal. acc"),
)


def metrics_table(per_fold: dict[int, dict[str, Any]]) -> pd.DataFrame:
    """One row per finished fold plus ``mean ± std`` (population std, like summary.json).

    Columns: ``fold``, one per :data:`METRIC_COLUMNS`, ``consistency``, ``n``. Cells are text
    (one column mixes fold values and the summary): ``"0.812"`` per fold, ``"0.812 ± 0.034"``
    in the summary row, ``""`` when a metric is undefined (e.g. AUC with a class missing).
    """
    rows: list[dict[str, Any]] = []
    values: dict[str, list[float]] = {}
    for fold in sorted(per_fold):
        report = per_fold[fold]
        row: dict[str, Any] = {"fold": str(fold)}
        for level, metric, title in METRIC_COLUMNS:
            value = _number(report.get(level, {}).get(metric))
            row[title] = "" if value is None else f"{value:.3f}"
            if value is not None:
                values.setdefault(title, []).append(value)
        consistency = _number(report.get("consistency"))
        row["consistency"] = "" if consistency is None else f"{consistency:.3f}"
        if consistency is not None:
            values.setdefault("consistency", []).append(consistency)
        row["n"] = str(report.get("n", ""))
        rows.append(row)
    if rows:
        summary: dict[str, Any] = {"fold": "mean ± std"}
        for title in [c[2] for c in METRIC_COLUMNS] + ["consistency"]:
            vals = values.get(title, [])
            summary[title] = f"{np.mean(vals):.3f} ± {np.std(vals):.3f}" if vals else ""
        summary["n"] = str(sum(int(r["n"] or 0) for r in rows))
        rows.append(summary)
    return pd.DataFrame(rows)


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def confusion_counts(df: pd.DataFrame, level: str, classes: Sequence[str]) -> np.ndarray:
    """``(K, K)`` int counts, rows = true class, columns = predicted class (at ``level``)."""
    index = {name: i for i, name in enumerate(classes)}
    counts = np.zeros((len(classes), len(classes)), dtype=np.int64)
    if df.empty:
        return counts
    for t, p in zip(df[f"true_{level}"], df[f"pred_{level}"], strict=True):
        if t in index and p in index:
            counts[index[t], index[p]] += 1
    return counts


@dataclass(frozen=True)
class SlideFilter:
    """Which slides to list. ``None``/empty means "any".

    Attributes:
        level: ``coarse`` or ``fine``: the level the class filters and correctness refer to.
        true_class: keep slides whose true class at ``level`` is this.
        pred_class: keep slides predicted as this at ``level``.
        min_conf, max_conf: keep slides whose confidence at ``level`` lies in this range.
        only_misclassified: keep wrong predictions at ``level`` only.
        folds: keep these folds only (empty = all).
        only_withheld: keep slides whose call withheld the fine answer (a ``coarse`` call or
            ``none``); a table without calls keeps nothing.
    """

    level: str = "fine"
    true_class: str | None = None
    pred_class: str | None = None
    min_conf: float = 0.0
    max_conf: float = 1.0
    only_misclassified: bool = False
    folds: tuple[int, ...] = ()
    only_withheld: bool = False


def filter_slides(df: pd.DataFrame, f: SlideFilter) -> pd.DataFrame:
    """Rows of ``df`` matching ``f``, sorted by confidence at ``f.level`` (highest first, so the
    most confidently wrong slides lead the misclassified list)."""
    if df.empty:
        return df
    lv = f.level
    keep = np.ones(len(df), dtype=bool)
    if f.true_class:
        keep &= (df[f"true_{lv}"] == f.true_class).to_numpy()
    if f.pred_class:
        keep &= (df[f"pred_{lv}"] == f.pred_class).to_numpy()
    conf = df[f"confidence_{lv}"].to_numpy(dtype=float)
    keep &= (conf >= f.min_conf - 1e-9) & (conf <= f.max_conf + 1e-9)
    if f.only_misclassified:
        keep &= ~df[f"correct_{lv}"].to_numpy(dtype=bool)
    if f.folds:
        keep &= df["fold"].isin(f.folds).to_numpy()
    if f.only_withheld:
        levels = df["call_level"] if "call_level" in df else pd.Series("", index=df.index)
        keep &= levels.isin(WITHHELD).to_numpy()
    out = df[keep].sort_values(f"confidence_{lv}", ascending=False, kind="stable")
    return out.reset_index(drop=True)


def listing_columns(level: str) -> list[str]:
    """Columns of the slide listing for ``level``."""
    other = "coarse" if level == "fine" else "fine"
    return [
        "slide_id",
        "fold",
        f"true_{level}",
        f"pred_{level}",
        f"confidence_{level}",
        f"true_{other}",
        f"pred_{other}",
        "consistent",
    ]


#: the column of the listing with the call in words (:func:`with_calls`)
CALL_COLUMN = "call"
#: call levels that withhold the fine answer
WITHHELD = ("coarse", "none")


def has_calls(df: pd.DataFrame) -> bool:
    """True when the predictions carry a call (a calibrated checkpoint's)."""
    return "call_level" in df and bool(df["call_level"].notna().any())


def with_calls(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a :data:`CALL_COLUMN` in words (``fine: ADH``, ``atypical — subtype
    uncertain``, ``no call``) when it has ``call_level``; ``df`` itself otherwise (a run
    trained before calls, or without validation slides)."""
    if "call_level" not in df:
        return df
    labels = df["call_label"] if "call_label" in df else pd.Series(None, index=df.index)
    words = [
        call_words(str(level), None if pd.isna(label) else str(label))
        for level, label in zip(df["call_level"], labels, strict=True)
    ]
    return df.assign(**{CALL_COLUMN: words})


def roc_curves(
    df: pd.DataFrame, level: str, classes: Sequence[str]
) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """One-vs-rest ROC per class from ``p_<level>_<class>``: ``name -> (fpr, tpr, auc)``.

    The raw probabilities (``raw_p_…``) when the table has them, as the AUCs of
    ``test_metrics.json``: a temperature can reorder one class's probabilities across slides.
    A class with no positive or no negative slide gets an empty curve and AUC NaN.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    out: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
    if df.empty:
        return out
    truth = df[f"true_{level}"].to_numpy()
    for name in classes:
        column = f"p_{level}_{name}"
        column = f"raw_{column}" if f"raw_{column}" in df else column
        if column not in df:
            continue
        y = (truth == name).astype(int)
        if y.min() == y.max():
            out[name] = (np.array([]), np.array([]), float("nan"))
            continue
        scores = df[column].to_numpy(dtype=float)
        fpr, tpr, _ = roc_curve(y, scores)
        out[name] = (fpr, tpr, float(roc_auc_score(y, scores)))
    return out


def cell_from_selection(selection: Any) -> tuple[str, str] | None:
    """``(true, predicted)`` of the confusion cell clicked, from ``st.plotly_chart``'s selection
    state (``{"selection": {"points": [{"x": pred, "y": true, ...}]}}``), or None."""
    try:
        points = selection["selection"]["points"]
    except (KeyError, TypeError):
        return None
    for point in points or []:
        x, y = point.get("x"), point.get("y")
        if x is not None and y is not None:
            return str(y), str(x)
    return None


def load_reliability(run: Path) -> pd.DataFrame:
    """Every fold's ``reliability.csv`` stacked with a ``fold`` column: ``fold, level,
    calibration (before | after), bin, confidence, accuracy, count``. Empty when no fold has
    one; a file that leads out of the run, is over ``RELIABILITY_MAX_BYTES`` or does not
    parse is skipped (:func:`hmil.train.evaluate.read_reliability`, the reader ``hmil
    evaluate`` draws its ``reliability.html`` from)."""
    return read_reliability(run)


def calibration_table(per_fold: dict[int, dict[str, Any]]) -> pd.DataFrame:
    """One row per fold with a ``calibration`` section: ``fold``, ``T_fine``, ``T_coarse``,
    ``ece_<level>_before`` / ``ece_<level>_after`` per :data:`CALIBRATION_LEVELS`, and the
    call's ``coverage_target``, ``coverage``, ``share_fine``, ``n`` and ``coarse_threshold``
    (NaN when absent)."""
    rows = []
    for fold in sorted(per_fold):
        section = per_fold[fold].get("calibration")
        if not isinstance(section, dict):
            continue
        temps = section.get("temperature") or {}
        row: dict[str, Any] = {
            "fold": fold,
            "T_fine": _number(temps.get("fine")),
            "T_coarse": _number(temps.get("coarse")),
        }
        for level, _ in CALIBRATION_LEVELS:
            data = section.get(level) or {}
            for when in ("before", "after"):
                row[f"ece_{level}_{when}"] = _number((data.get(when) or {}).get("ece"))
        call = section.get("call") or {}
        for key in ("coverage_target", "coverage", "share_fine", "n", "coarse_threshold"):
            row[key] = _number(call.get(key))
        rows.append(row)
    return pd.DataFrame(rows).astype({"fold": int}) if rows else pd.DataFrame()
