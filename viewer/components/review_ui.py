"""The slide page's review panel: a pathologist's verdict on the slide (agree, the label is
wrong → the corrected fine label, the model is wrong, ambiguous), a comment and the reviewer's
name, appended to ``RUN/reviews.jsonl`` at once (:mod:`hmil.reviews`, docs/review.md); and the
"Next unreviewed" button (the view's own n / p keys walk the whole browse list).

Widget keys: ``rv_reviewer``, ``rv_verdict``, ``rv_label``, ``rv_comment``, ``rv_save``,
``rv_next``; non-widget: ``review_reviewer`` (the name, kept for the session), ``_rv_for``,
``_rv_saved`` (the last save's outcome), ``open_slide`` (the next unreviewed slide, read by
:func:`viewer.components.slide_pick_ui.apply_open_request`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import streamlit as st

from hmil import reviews
from hmil.errors import HMILError
from viewer.components.cached_ui import signature
from viewer.components.shell_ui import session_state
from viewer.core import reviews as core
from viewer.core import slide_state, text

SAVED_KEY = "_rv_saved"


@st.cache_data(max_entries=32, show_spinner=False)
def _sha256(path: str, sig: Any) -> str:
    return reviews.file_sha256(path)


def checkpoint_sha256(path: Path) -> str:
    """The checkpoint file's SHA-256, computed once per version of the file."""
    try:
        return _sha256(str(path), signature(path))
    except OSError:
        return ""


def run_reviews(run: Path, fine: Sequence[str]) -> reviews.ReviewLog:
    """``RUN/reviews.jsonl`` as it is now (read on every run of the panel: another viewer may
    have appended)."""
    return reviews.read_reviews(run, fine)


def show_problems(log: reviews.ReviewLog, limit: int = 3) -> None:
    """The lines of ``reviews.jsonl`` that were skipped, shown as typed."""
    for problem in log.problems[:limit]:
        st.caption(":material/warning: " + text.markdown(problem))
    if len(log.problems) > limit:
        st.caption(f"… and {len(log.problems) - limit} more skipped line(s)")


def _remember_reviewer() -> None:
    state = session_state()
    state[core.REVIEWER_MEMORY] = str(state.get(core.REVIEWER_KEY, "")).strip()


def _save(run: Path, slide_id: str, checkpoint: Path, fine: Sequence[str]) -> None:
    state = session_state()
    try:
        review = reviews.make_review(
            slide_id,
            str(state.get(core.VERDICT_KEY) or ""),
            str(state.get(core.REVIEWER_KEY, "")),
            label=state.get(core.LABEL_KEY)
            if state.get(core.VERDICT_KEY) == "label_error"
            else None,
            comment=str(state.get(core.COMMENT_KEY, "")),
            checkpoint=core.checkpoint_name(run, checkpoint),
            checkpoint_sha256=checkpoint_sha256(checkpoint),
            fine_labels=fine,
        )
        reviews.append_review(run, review)
    except HMILError as exc:
        state[SAVED_KEY] = ("error", f"{exc.where}: {exc.problem}")
        return
    except OSError as exc:
        state[SAVED_KEY] = ("error", f"{reviews.REVIEWS_FILE}: cannot write ({exc.strerror})")
        return
    state[SAVED_KEY] = ("ok", f"saved: {reviews.describe(review)}")


def _next(target: str) -> None:
    session_state()[slide_state.OPEN_REQUEST] = target  # read before the picker is drawn


@st.fragment
def review_panel(
    run: Path,
    slide_id: str,
    checkpoint: Path,
    fine: Sequence[str],
    misclassified: bool,
    browse: Sequence[str],
) -> None:
    """The panel, in an expander that is open when the slide is misclassified or reviewed.
    A fragment: typing a comment or picking a verdict re-runs the panel only."""
    state = session_state()
    if slide_state.OPEN_REQUEST in state:  # "Next unreviewed" in a run of this fragment alone
        st.rerun()  # the slide picker must move: the whole page
    log = run_reviews(run, fine)
    current = reviews.latest(log.reviews)
    if core.REVIEWER_KEY not in state:
        state[core.REVIEWER_KEY] = state.get(core.REVIEWER_MEMORY, "")
    mine = core.slide_reviews(current, slide_id, str(state[core.REVIEWER_KEY]))
    core.fill_form(state, slide_id, mine.mine)
    status = reviews.slide_status(current)
    title = f"Review · {status.get(slide_id, reviews.UNREVIEWED)}"
    with st.expander(
        title, expanded=misclassified or bool(mine.all), icon=":material/rate_review:"
    ):
        show_problems(log)
        for line in core.saved_lines(mine.all):
            st.caption(text.markdown(line))
        st.text_input(
            "Reviewer", key=core.REVIEWER_KEY, max_chars=reviews.MAX_REVIEWER,
            on_change=_remember_reviewer, placeholder="your name",
        )  # fmt: skip
        verdict = st.radio(
            "Verdict", reviews.VERDICTS, key=core.VERDICT_KEY, index=None,
            format_func=reviews.VERDICT_TEXT.__getitem__,
        )  # fmt: skip
        if verdict == "label_error":
            if state.get(core.LABEL_KEY) not in fine:
                state[core.LABEL_KEY] = fine[0]
            st.selectbox("Correct fine label", list(fine), key=core.LABEL_KEY)
        st.text_area("Comment", key=core.COMMENT_KEY, height=68, max_chars=reviews.MAX_COMMENT)
        st.button(
            "Save", key="rv_save", on_click=_save, args=(run, slide_id, checkpoint, fine),
            disabled=verdict is None, icon=":material/save:", width="stretch",
        )  # fmt: skip
        target = core.next_unreviewed(browse, slide_id, status)
        state[slide_state.NEXT_UNREVIEWED_KEY] = (slide_id, target)  # the view's key u
        st.button(
            "Next unreviewed", key="rv_next", on_click=_next, args=(target or "",),
            disabled=target is None, icon=":material/skip_next:", width="stretch",
            help="The next slide of the browse list that nobody reviewed yet (key u on the view).",
        )  # fmt: skip
        saved = state.pop(SAVED_KEY, None)
        if saved is not None:
            kind, message = saved
            show = st.success if kind == "ok" else st.error
            show(text.markdown(message))
