"""Cohort page: metrics per fold, confusion matrices, slide lists, misclassified slides, ROC,
reliability diagrams."""

from __future__ import annotations

import streamlit as st

from hmil.errors import HMILError
from viewer.components import calibration_ui, cohort_ui, shell_ui
from viewer.core import cohort, runs
from viewer.core.reviews import filter_status, with_status


def main() -> None:
    cohort_ui.follow_open_request()
    st.title("Cohort")
    run = shell_ui.current_run()
    if run is None:
        st.info("No run is open: pick one in the sidebar (or start `hmil view RUN`).")
        return
    try:
        info, predictions = cohort_ui.load(run, shell_ui.settings().roots)
    except HMILError as exc:
        shell_ui.show_problem(exc)
        return
    cohort_ui.metrics_section(run)
    if predictions.empty:
        return
    predictions = cohort.with_calls(predictions)
    st.subheader("Slides")
    chosen = cohort_ui.filters(info, predictions)
    status, wanted = cohort_ui.review_filter(run, info)
    cohort_ui.confusion_section(info, predictions, chosen.folds)
    rows = filter_status(with_status(cohort.filter_slides(predictions, chosen), status), wanted)
    cohort_ui.listing(run, rows, chosen.level, "Matching slides", key="co_listing")
    wrong = cohort.filter_slides(
        predictions,
        cohort.SlideFilter(level=chosen.level, only_misclassified=True, folds=chosen.folds),
    )
    st.subheader(f"Misclassified at the {chosen.level} level — most confident first")
    cohort_ui.review_progress(wrong, status)
    wrong = filter_status(with_status(wrong, status), wanted)
    cohort_ui.listing(run, wrong, chosen.level, "Misclassified", key="co_wrong")
    cohort_ui.open_on_slide_page(wrong, f"misclassified at the {chosen.level} level")
    cohort_ui.roc_section(info, predictions)
    calibration_ui.reliability_section(run, runs.fold_test_metrics(run))


shell_ui.restore(*cohort_ui.PERSISTENT_KEYS)
try:
    main()
finally:
    shell_ui.keep(*cohort_ui.PERSISTENT_KEYS)
