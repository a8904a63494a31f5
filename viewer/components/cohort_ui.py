"""Sections of the cohort page (Streamlit layout over :mod:`viewer.core.cohort`).

Widget keys: ``co_level``, ``co_true``, ``co_pred``, ``co_conf``, ``co_miscls``, ``co_folds``,
``co_review`` (review status), ``co_withheld`` (the call withheld the fine answer),
``cm_coarse``, ``cm_fine`` (confusion charts, clickable),
``co_listing``, ``co_wrong`` (slide tables: a clicked row opens the slide), ``co_open``,
``roc_level``, ``co_report_of`` and ``co_report`` (a reviewer's report to download).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pandas as pd
import streamlit as st

from hmil import reviews
from viewer.components import cached_ui
from viewer.core import charts, cohort, runs, text
from viewer.core import reviews as review_core
from viewer.core.cohort import COHORT_LEVELS, SlideFilter

ANY = "(any)"
PERSISTENT_KEYS = (
    "co_level", "co_true", "co_pred", "co_conf", "co_miscls", "co_folds", "roc_level",
    "co_review", "co_withheld",
)  # fmt: skip


def metrics_section(run: Path) -> None:
    per_fold = runs.fold_test_metrics(run)
    summary = runs.run_summary(run)
    st.subheader("Test metrics per fold")
    if not per_fold:
        st.info(
            "No fold has finished yet: metrics appear when a fold's test evaluation is written."
        )
        return
    table = cohort.metrics_table(per_fold)
    st.dataframe(table, hide_index=True, key="metrics_table")
    n = summary.get("n_folds", len(per_fold))
    st.caption(
        f"{len(per_fold)} finished fold(s) (summary.json: {n}); mean ± population std over folds. "
        "coarse = the fine probabilities summed per coarse class; coarse classifier = the "
        "model's own coarse branch."
    )


def _cell_clicked(level: str) -> None:
    """Confusion-cell click → the listing's filters (level, true, predicted)."""
    cell = cohort.cell_from_selection(st.session_state.get(f"cm_{level}"))
    if cell is None:
        return
    st.session_state["co_level"] = level
    st.session_state["co_true"], st.session_state["co_pred"] = cell


def confusion_section(
    info: runs.RunInfo, predictions: pd.DataFrame, folds: tuple[int, ...]
) -> None:
    st.subheader("Confusion matrices")
    st.caption("Click a cell to list its slides below (or use the filters).")
    subset = predictions[predictions["fold"].isin(folds)] if folds else predictions
    cols = st.columns([1, 1.6])
    for col, level in zip(cols, COHORT_LEVELS, strict=True):
        classes = info.hierarchy.coarse if level == "coarse" else info.hierarchy.fine
        counts = cohort.confusion_counts(subset, level, classes)
        col.plotly_chart(
            charts.confusion_figure(counts, classes, f"{level} ({int(counts.sum())} slides)"),
            key=f"cm_{level}",
            on_select=lambda lv=level: _cell_clicked(lv),
            selection_mode="points",
        )


def filters(info: runs.RunInfo, predictions: pd.DataFrame) -> SlideFilter:
    state = st.session_state
    state.setdefault("co_level", "fine")
    state.setdefault("co_conf", (0.0, 1.0))
    state.setdefault("co_miscls", False)
    folds = sorted(int(f) for f in predictions["fold"].unique())
    state["co_folds"] = [f for f in state.get("co_folds", []) if f in folds]
    cols = st.columns([1, 1, 1, 1.4, 1.35, 1.2])
    level = str(cols[0].radio("Level", list(COHORT_LEVELS), key="co_level", horizontal=True))
    classes = [ANY, *(info.hierarchy.coarse if level == "coarse" else info.hierarchy.fine)]
    for key in ("co_true", "co_pred"):
        if state.get(key) not in classes:
            state[key] = ANY
    true_class = cols[1].selectbox("True class", classes, key="co_true")
    pred_class = cols[2].selectbox("Predicted class", classes, key="co_pred")
    # a range slider: co_conf holds a (lo, hi) pair, which the stub cannot see
    conf = cols[3].slider("Confidence", 0.0, 1.0, key="co_conf", step=0.05)
    lo, hi = cast(tuple[float, float], conf)
    miscls = bool(cols[4].checkbox("Misclassified only", key="co_miscls"))
    calls = cohort.has_calls(predictions)
    withheld = bool(
        cols[4].checkbox(
            "Fine answer withheld", key="co_withheld", disabled=not calls,
            help="Slides whose call at the target coverage is coarse only or none."
            if calls else "This run's predictions have no call (a checkpoint without "
            "calibration): hmil evaluate rewrites them from a calibrated checkpoint.",
        )
    )  # fmt: skip
    chosen = cols[5].multiselect("Folds", folds, key="co_folds", placeholder="all folds")
    return SlideFilter(
        level=level,
        true_class=None if true_class == ANY else str(true_class),
        pred_class=None if pred_class == ANY else str(pred_class),
        min_conf=float(lo),
        max_conf=float(hi),
        only_misclassified=miscls,
        folds=tuple(int(f) for f in chosen),
        only_withheld=withheld and calls,
    )


def _open_listed(key: str, ids: list[str], title: str) -> None:
    """A row of listing ``key`` was clicked: open that slide on the slide page, in this tab,
    with this listing as the list that next / previous walk through (the overlay settings
    stay: they live in the session)."""
    selection = st.session_state.get(key)
    rows = []
    try:
        rows = list(selection["selection"]["rows"])  # type: ignore[index]  # the widget's dict
    except (KeyError, TypeError):
        return
    if rows and 0 <= int(rows[0]) < len(ids):
        open_slides(ids, ids[int(rows[0])], title)


def open_slides(ids: list[str], first: str, title: str) -> None:
    """Ask the slide page to show ``first`` and to step through ``ids`` (read by
    :func:`viewer.components.slide_pick_ui.pick_from_run`)."""
    state = st.session_state
    state["open_slide"] = first
    state["cohort_list"] = list(ids)
    state["cohort_list_title"] = title
    state["browse_list"] = "cohort"
    state["_go_to_slide_page"] = True


def listing(run: Path, rows: pd.DataFrame, level: str, title: str, key: str) -> None:
    """A table of slides; clicking a row opens that slide on the slide page (same tab), with
    the table's slides as its next / previous list."""
    st.markdown(f"**{title}** — {len(rows)} slide(s) · click a row to open it")
    if rows.empty:
        return
    extra = [c for c in (cohort.CALL_COLUMN, review_core.STATUS_COLUMN) if c in rows]
    shown = rows[[*cohort.listing_columns(level), *extra]].copy()
    shown[f"confidence_{level}"] = shown[f"confidence_{level}"].round(3)
    ids = [str(s) for s in shown["slide_id"]]
    st.dataframe(
        shown,
        hide_index=True,
        key=key,
        on_select=lambda: _open_listed(key, ids, title.lower()),
        selection_mode="single-row",
    )


def review_filter(run: Path, info: runs.RunInfo) -> tuple[dict[str, str], str]:
    """Each slide's review status (``RUN/reviews.jsonl``, docs/review.md) and the status the
    listings are filtered by; skipped lines of the file are noted."""
    log = reviews.read_reviews(run, info.hierarchy.fine)
    for problem in log.problems[:3]:
        st.caption(":material/warning: " + text.markdown(problem))
    options = [review_core.ANY_STATUS, "reviewed", *reviews.STATUSES]
    if st.session_state.get("co_review") not in options:
        st.session_state["co_review"] = review_core.ANY_STATUS
    wanted = st.columns([1.4, 4])[0].selectbox(
        "Review status", options, key="co_review",
        help="The pathologists' verdicts saved on the slide page (latest per reviewer; "
        "disputed: reviewers disagree).",
    )  # fmt: skip
    return reviews.slide_status(reviews.latest(log.reviews)), str(wanted)


def review_progress(wrong: pd.DataFrame, status: dict[str, str]) -> None:
    """``reviewed / remaining`` among the misclassified slides."""
    ids = [str(s) for s in wrong["slide_id"]] if not wrong.empty else []
    done, left = review_core.review_counts(ids, status)
    counts, pick, button = st.columns([3, 1, 1], vertical_alignment="center")
    counts.markdown(f"Review: **{done} reviewed** / **{left} remaining** of {done + left} "
                    "misclassified slide(s)")  # fmt: skip
    report_download(pick, button)


def report_download(pick: Any, button: Any) -> None:
    """A reviewer's report (:mod:`hmil.review_report`: the page ``hmil reviews report``
    writes), built when the button is clicked; slide files are read under the data roots only.
    ``pick`` and ``button`` are the columns the reviewer choice and the button go in."""
    from hmil import review_report
    from viewer.components import shell_ui
    from viewer.core import slide_lookup
    from viewer.core.paths import is_under

    run, cfg = shell_ui.current_run(), shell_ui.settings()
    if run is None:
        return
    names = review_report.reviewers(reviews.latest(reviews.read_reviews(run).reviews))
    if not names:
        return
    who = str(pick.selectbox("Report of", names, key="co_report_of", label_visibility="collapsed"))
    folders = runs.cohort_dirs(load(run, cfg.roots)[0], cfg.data_roots)
    button.download_button(
        "Review report", key="co_report", icon=":material/download:", mime="text/html",
        file_name=f"{review_report.safe_name(who)}.html", on_click="ignore",
        data=lambda: review_report.report_html(
            run, who, find_slide=lambda sid: slide_lookup.locate_slide(sid, folders, cfg.roots)[0],
            readable=lambda path: is_under(path, cfg.roots),
        ),
        help="One page to share: this reviewer's verdicts, corrected labels and, per slide, "
        "the attention of the fold that held it out with the saved regions (docs/review.md).",
    )  # fmt: skip


def open_on_slide_page(rows: pd.DataFrame, title: str) -> None:
    """Step through the listed slides on the slide page, starting with the first."""
    if rows.empty:
        return
    ids = list(dict.fromkeys(rows["slide_id"].astype(str)))
    st.button(
        f"Step through these {len(ids)} slides on the slide page (n / p)",
        key="co_open",
        on_click=open_slides,
        args=(ids, ids[0], title),
        icon=":material/slideshow:",
    )


def follow_open_request() -> None:
    """Switch to the slide page when a row or the step-through button asked for it (a
    callback cannot switch pages itself)."""
    if st.session_state.pop("_go_to_slide_page", False):
        st.switch_page("views/slide.py")


def roc_section(info: runs.RunInfo, predictions: pd.DataFrame) -> None:
    st.subheader("ROC curves (one-vs-rest)")
    st.session_state.setdefault("roc_level", "fine")
    level = str(st.radio("ROC level", list(COHORT_LEVELS), key="roc_level", horizontal=True))
    classes = info.hierarchy.coarse if level == "coarse" else info.hierarchy.fine
    curves = cohort.roc_curves(predictions, level, classes)
    st.plotly_chart(
        charts.roc_figure(curves, f"{level}: per-class ROC over all test predictions"),
        key="roc_chart",
    )


def load(run: Path, roots: tuple[Path, ...]) -> tuple[runs.RunInfo, pd.DataFrame]:
    info, predictions, _ = cached_ui.run_tables(run, roots)
    return info, predictions
