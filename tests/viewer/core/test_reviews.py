"""The viewer's review helpers: status column and filter, counts, next unreviewed slide, the
form filled once per slide and reviewer."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hmil.reviews import make_review
from viewer.core import reviews as core


def test_status_column_filter_and_counts() -> None:
    rows = pd.DataFrame({"slide_id": ["a", "b", "c", "a"]})
    status = {"a": "agree", "c": "disputed"}
    shown = core.with_status(rows, status)
    assert shown["review"].tolist() == ["agree", "unreviewed", "disputed", "agree"]
    assert core.filter_status(shown, "reviewed")["slide_id"].tolist() == ["a", "c", "a"]
    assert core.filter_status(shown, "unreviewed")["slide_id"].tolist() == ["b"]
    assert len(core.filter_status(shown, core.ANY_STATUS)) == 4
    assert core.review_counts(["a", "b", "c", "a"], status) == (2, 1)


def test_next_unreviewed_wraps_and_skips_reviewed() -> None:
    ids = ["a", "b", "c", "d"]
    assert core.next_unreviewed(ids, "a", {"b": "agree"}) == "c"
    assert core.next_unreviewed(ids, "c", {"d": "agree"}) == "a"  # wraps round
    assert core.next_unreviewed(ids, "x", {}) == "a"
    assert core.next_unreviewed(ids, "a", {"b": "x", "c": "x", "d": "x"}) is None


def test_checkpoint_name_relative_to_the_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert core.checkpoint_name(run, run / "fold_1" / "checkpoint.pt") == "fold_1/checkpoint.pt"
    assert core.checkpoint_name(run, tmp_path / "other" / "m.pt") == "m.pt"


def test_form_is_filled_once_per_slide_and_keeps_edits() -> None:
    mine = make_review("s1", "label_error", "ana", label="IC", comment="c")
    state: dict = {core.REVIEWER_KEY: "ana"}
    core.fill_form(state, "s1", mine)
    assert (state[core.VERDICT_KEY], state[core.LABEL_KEY], state[core.COMMENT_KEY]) == (
        "label_error", "IC", "c",
    )  # fmt: skip
    state[core.COMMENT_KEY] = "edited"
    core.fill_form(state, "s1", mine)
    assert state[core.COMMENT_KEY] == "edited"  # not overwritten on the next run
    core.fill_form(state, "s2", None)
    assert core.VERDICT_KEY not in state and state[core.COMMENT_KEY] == ""
    state[core.VERDICT_KEY] = "agree"
    state[core.REVIEWER_KEY] = "bob"  # a name typed after the verdict: the form stays
    core.fill_form(state, "s2", None)
    assert state[core.VERDICT_KEY] == "agree"


def test_a_verdict_clicked_while_the_name_arrives_is_not_replaced_by_an_older_one() -> None:
    older = make_review("s1", "ambiguous", "ana", comment="first look")
    state: dict = {core.REVIEWER_KEY: ""}
    core.fill_form(state, "s1", None)  # the panel drawn before the name is typed
    # one run brings the typed name and the verdict just clicked
    state[core.REVIEWER_KEY], state[core.VERDICT_KEY] = "ana", "model_error"
    core.fill_form(state, "s1", older)
    assert (state[core.VERDICT_KEY], state[core.COMMENT_KEY]) == ("model_error", "")
    # an untouched form does show the reviewer's saved verdict when the name arrives
    fresh: dict = {core.REVIEWER_KEY: ""}
    core.fill_form(fresh, "s1", None)
    fresh[core.REVIEWER_KEY] = "ana"
    core.fill_form(fresh, "s1", older)
    assert (fresh[core.VERDICT_KEY], fresh[core.COMMENT_KEY]) == ("ambiguous", "first look")
    # another slide starts from its own saved verdict whatever was edited here
    core.fill_form(state, "s2", make_review("s2", "agree", "ana"))
    assert state[core.VERDICT_KEY] == "agree"
