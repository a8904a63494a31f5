"""The viewer's side of slide reviews (docs/review.md): each slide's review status for the
cohort page, the reviewed / remaining counts, the next unreviewed slide, and what the slide
page's review panel shows for a slide and a reviewer. Pure functions over
:mod:`hmil.reviews`' records; no Streamlit.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hmil.reviews import UNREVIEWED, Review, by_slide, describe

#: the cohort listings' review column, and the filter's "any status"
STATUS_COLUMN = "review"
ANY_STATUS = "(any)"
#: the panel's widget keys, and the reviewer name kept for the session (not a widget)
VERDICT_KEY, LABEL_KEY, COMMENT_KEY, REVIEWER_KEY = (
    "rv_verdict",
    "rv_label",
    "rv_comment",
    "rv_reviewer",
)
REVIEWER_MEMORY = "review_reviewer"
#: which slide and reviewer the panel's widgets were filled for, and what they were filled with
FILLED_FOR = "_rv_for"
FILLED_WITH = "_rv_with"


def with_status(rows: pd.DataFrame, status: Mapping[str, str]) -> pd.DataFrame:
    """``rows`` (with a ``slide_id`` column) plus :data:`STATUS_COLUMN`: the slide's review
    status (:func:`hmil.reviews.slide_status`), ``unreviewed`` when it has none."""
    out = rows.copy()
    out[STATUS_COLUMN] = [status.get(str(s), UNREVIEWED) for s in out["slide_id"]]
    return out


def filter_status(rows: pd.DataFrame, wanted: str) -> pd.DataFrame:
    """Rows whose :data:`STATUS_COLUMN` is ``wanted`` (all rows for :data:`ANY_STATUS`;
    ``reviewed``: every status but ``unreviewed``)."""
    if wanted == ANY_STATUS or rows.empty:
        return rows
    column = rows[STATUS_COLUMN]
    keep = column != UNREVIEWED if wanted == "reviewed" else column == wanted
    return rows[keep].reset_index(drop=True)


def review_counts(ids: Sequence[str], status: Mapping[str, str]) -> tuple[int, int]:
    """``(reviewed, remaining)`` among the distinct slides ``ids``."""
    distinct = list(dict.fromkeys(str(s) for s in ids))
    reviewed = sum(1 for s in distinct if s in status)
    return reviewed, len(distinct) - reviewed


def next_unreviewed(
    ids: Sequence[str], current: str | None, status: Mapping[str, str]
) -> str | None:
    """The first slide after ``current`` in ``ids`` that nobody reviewed, wrapping round to
    the start of the list; None when every other slide of the list has a review."""
    order = list(ids)
    start = order.index(current) + 1 if current in order else 0
    for slide_id in order[start:] + order[:start]:
        if slide_id != current and slide_id not in status:
            return slide_id
    return None


def checkpoint_name(run: Path, checkpoint: Path) -> str:
    """The checkpoint's path relative to the run (its file name when it lies elsewhere)."""
    try:
        return checkpoint.resolve().relative_to(run.resolve()).as_posix()
    except ValueError:
        return checkpoint.name


def saved_lines(reviews: Sequence[Review]) -> list[str]:
    """One plain line per reviewer's latest verdict on a slide (to be escaped when shown)."""
    lines = []
    for review in reviews:
        comment = " ".join(review.comment.split())
        short = comment[:80] + ("…" if len(comment) > 80 else "")
        lines.append(f"{describe(review)} · {review.time}" + (f" — {short}" if short else ""))
    return lines


@dataclass(frozen=True)
class SlideReviews:
    """The reviews of one slide: every reviewer's latest, and this reviewer's."""

    all: tuple[Review, ...]
    mine: Review | None


def slide_reviews(
    current: Mapping[tuple[str, str], Review], slide_id: str, reviewer: str
) -> SlideReviews:
    """What the panel shows for ``slide_id``: each reviewer's latest verdict, and
    ``reviewer``'s own (to fill the form with)."""
    items = tuple(by_slide(current).get(slide_id, []))
    return SlideReviews(items, current.get((slide_id, reviewer.strip())))


def _form(state: MutableMapping[str, Any]) -> tuple[Any, Any, str]:
    return state.get(VERDICT_KEY), state.get(LABEL_KEY), str(state.get(COMMENT_KEY) or "")


def fill_form(state: MutableMapping[str, Any], slide_id: str, mine: Review | None) -> None:
    """Set the panel's widgets to the reviewer's saved verdict on ``slide_id`` (blank when
    none) once per slide and reviewer, before the widgets are drawn.

    What the user changed in the form since it was last filled is never replaced: a name typed
    (or its Enter still on its way) while a verdict is clicked arrives in the same run as the
    click, and filling the form then would save that reviewer's older verdict in place of the
    one just chosen. Another slide starts from that slide's saved verdict (or blank)."""
    who = str(state.get(REVIEWER_KEY, "")).strip()
    filled = state.get(FILLED_FOR)
    if filled == (slide_id, who):
        return
    same_slide = isinstance(filled, tuple) and filled[0] == slide_id
    state[FILLED_FOR] = (slide_id, who)
    if same_slide and (mine is None or _form(state) != state.get(FILLED_WITH)):
        return  # no saved verdict to show, or the user's own edits: keep the form
    state[COMMENT_KEY] = mine.comment if mine else ""
    for key, value in ((VERDICT_KEY, mine and mine.verdict), (LABEL_KEY, mine and mine.label)):
        if value:
            state[key] = value
        else:  # the widget starts empty
            state.pop(key, None)
    state[FILLED_WITH] = _form(state)
