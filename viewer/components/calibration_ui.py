"""The cohort page's calibration section: reliability diagrams per level before and after
temperature scaling, with the folds' ECE, temperatures and the call's coverage in words.

The numbers come from the folds' ``test_metrics.json`` ``calibration`` sections and the
diagrams from their ``reliability.csv`` (both written by training and ``hmil evaluate``), so
the page shows what the files say and computes nothing of its own.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from hmil.reliability_figure import reliability_figure
from viewer.core import cohort


def _mean(values: pd.Series) -> float:
    """Mean of the finite values (NaN when there is none)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(finite) / len(finite) if finite else math.nan


def ece_words(table: pd.DataFrame) -> str:
    """``fine 0.084 → 0.080 · coarse (fine summed) 0.006 → 0.004 · …``: each level's ECE
    before → after calibration, the mean over the folds of ``table``
    (:func:`viewer.core.cohort.calibration_table`); levels without numbers are left out."""
    parts = []
    for level, name in cohort.CALIBRATION_LEVELS:
        columns = (f"ece_{level}_before", f"ece_{level}_after")
        if not set(columns) <= set(table.columns):
            continue
        before, after = (_mean(table[c]) for c in columns)
        if math.isfinite(before) and math.isfinite(after):
            parts.append(f"{name} {before:.3f} → {after:.3f}")
    return " · ".join(parts)


def call_words(table: pd.DataFrame) -> str:
    """The call's outcome on the test slides pooled over the folds (each fold's shares
    weighted by its number of slides): ``Call at 90 % coverage: right on 0.93 of 48 test
    slides, fine answer on 71 %.``; ``""`` when no fold has a call."""
    if "n" not in table or "coverage" not in table:
        return ""
    rows = table.dropna(subset=["n", "coverage", "share_fine", "coverage_target"])
    n = float(rows["n"].sum()) if not rows.empty else 0.0
    if n <= 0:
        return ""
    coverage = float((rows["coverage"] * rows["n"]).sum() / n)
    fine = float((rows["share_fine"] * rows["n"]).sum() / n)
    targets = sorted({round(100 * float(t)) for t in rows["coverage_target"]})
    target = " / ".join(f"{t}" for t in targets)
    text = (
        f"Call at {target} % coverage: right on {coverage:.2f} of {int(n)} test slides, "
        f"fine answer on {100 * fine:.0f} %."
    )
    if "coarse_threshold" in rows and bool((rows["coarse_threshold"] >= 1.0).all()):
        text += (
            " No fold can make any call at this target: its validation part is too small for "
            "the guarantee (every label stays in every set), whatever the slide."
        )
    return text


def calibration_caption(table: pd.DataFrame) -> str:
    """What the diagrams show, with the ECE, temperatures and call numbers of the folds."""
    folds = len(table)
    text = (
        "Test slides of each fold in 15 equal-mass bins of top-label confidence, a point per "
        "bin (larger for more slides); a point under the diagonal promises more than it "
        "delivers. Temperatures fitted on each fold's validation slides."
    )
    ece = ece_words(table) if folds else ""
    if ece:
        text += f" ECE before → after, mean over {folds} fold(s): {ece}."
    if folds and {"T_fine", "T_coarse"} <= set(table.columns):
        t_fine = ", ".join(f"{v:.2f}" for v in table["T_fine"].dropna())
        t_coarse = ", ".join(f"{v:.2f}" for v in table["T_coarse"].dropna())
        text += f" T per fold: fine {t_fine}; coarse classifier {t_coarse}."
    call = call_words(table) if folds else ""
    return f"{text} {call}" if call else text


def reliability_section(run: Path, per_fold: dict[int, dict[str, Any]]) -> None:
    """Reliability diagrams of the run's folds, or a note on how to get them."""
    st.subheader("Calibration: reliability diagrams")
    table = cohort.load_reliability(run)
    if table.empty:
        st.info(
            "No fold has reliability data (`reliability.csv`): runs trained before calibration "
            "get it from `hmil evaluate` (before = after, T = 1, without a calibrated "
            "checkpoint)."
        )
        return
    title = "before (raw) and after calibration, per fold"
    st.plotly_chart(reliability_figure(table, cohort.CALIBRATION_LEVELS, title), key="reliability")
    st.caption(calibration_caption(cohort.calibration_table(per_fold)))
