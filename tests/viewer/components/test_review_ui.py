"""The slide page's review panel and the cohort page's review status, through AppTest: a
verdict saved to RUN/reviews.jsonl, shown again when the slide is reopened, a nonsense line
noted, the next unreviewed slide, and the cohort's review column, filter and counts."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from viewer_fixtures import APP
from viewer_fixtures import APP_TIMEOUT as TIMEOUT

from hmil.reviews import REVIEWS_FILE
from viewer.core import slide_state


@pytest.fixture()
def reviews_file(app_env: Path) -> Iterator[Path]:
    """The fixture run's reviews.jsonl, absent before and removed after each test (the run
    is shared with other tests)."""
    path = app_env / "run" / REVIEWS_FILE
    path.unlink(missing_ok=True)
    yield path
    path.unlink(missing_ok=True)


def _run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def _start(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    if page is not None:
        at.switch_page(page)
    return _run(at)


def _ids(at: AppTest) -> list[str]:
    """The slide ids the picker offers (its options read ``id — true … → pred …``)."""
    return [o.split(" — ")[0] for o in at.selectbox(key="slide_pick").options]


def _captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def test_a_verdict_is_saved_and_shown_again_on_reopen(reviews_file: Path) -> None:
    at = _start()
    slide = at.selectbox(key="slide_pick").value
    at.text_input(key="rv_reviewer").input("Dr Ana")
    _run(at)
    at.radio(key="rv_verdict").set_value("label_error")
    _run(at)
    at.selectbox(key="rv_label").set_value("DCIS")
    at.text_area(key="rv_comment").input("<b>focal</b> **atypia** [x](http://e.org)")
    at.button(key="rv_save").click()
    _run(at)
    (line,) = reviews_file.read_text().splitlines()
    record = json.loads(line)
    assert (record["slide_id"], record["verdict"], record["label"]) == (
        slide,
        "label_error",
        "DCIS",
    )
    assert record["reviewer"] == "Dr Ana"
    assert record["comment"] == "<b>focal</b> **atypia** [x](http://e.org)"
    assert re.fullmatch(r"fold_\d/checkpoint\.pt", record["checkpoint"])
    assert re.fullmatch(r"[0-9a-f]{64}", record["checkpoint_sha256"])
    assert record["time"].endswith("+00:00")
    assert [s.value for s in at.success] == [r"saved\: Dr Ana\: label\_error → DCIS"]
    # the comment is shown escaped: no HTML, no bold, no link
    shown = _captions(at)
    assert r"\<b\>focal\</b\> \*\*atypia\*\*" in shown and "<b>" not in shown
    # another slide, then back: the form holds the saved verdict again
    other = next(s for s in _ids(at) if s != slide)
    at.selectbox(key="slide_pick").set_value(other)
    _run(at)
    assert at.radio(key="rv_verdict").value is None  # nothing saved on that slide
    assert at.text_input(key="rv_reviewer").value == "Dr Ana"  # the name stays
    at.selectbox(key="slide_pick").set_value(slide)
    _run(at)
    assert at.radio(key="rv_verdict").value == "label_error"
    assert at.selectbox(key="rv_label").value == "DCIS"
    assert at.text_area(key="rv_comment").value == record["comment"]
    assert any(e.label.startswith("Review · label_error") for e in at.expander)


def test_a_nonsense_line_is_noted_and_the_panel_works(reviews_file: Path) -> None:
    reviews_file.write_text("not a record\n")
    at = _start()
    assert r"reviews\.jsonl line 1\: not JSON \(Expecting value\)" in _captions(at)
    at.text_input(key="rv_reviewer").input("bob")
    at.radio(key="rv_verdict").set_value("agree")
    _run(at)
    at.button(key="rv_save").click()
    _run(at)
    lines = reviews_file.read_text().splitlines()
    assert lines[0] == "not a record" and json.loads(lines[1])["verdict"] == "agree"


def test_a_bad_reviewer_name_is_refused_in_one_line(reviews_file: Path) -> None:
    at = _start()
    at.text_input(key="rv_reviewer").input("<img src=x>")
    at.radio(key="rv_verdict").set_value("model_error")
    _run(at)
    at.button(key="rv_save").click()
    at.run()
    assert not at.exception
    (error,) = at.error
    assert error.value.startswith(r"reviewer\: letters, digits")
    assert not reviews_file.exists()


def test_next_unreviewed_skips_reviewed_slides(reviews_file: Path) -> None:
    at = _start()
    ids = _ids(at)
    first = str(at.selectbox(key="slide_pick").value)
    stamp = "2026-01-01T00:00:00+00:00"
    with open(reviews_file, "w") as handle:
        for slide in ids[1:3]:  # the next two slides are reviewed already
            handle.write(json.dumps({"slide_id": slide, "verdict": "agree", "label": None,
                                     "reviewer": "ana", "comment": "", "time": stamp,
                                     "checkpoint": ""}) + "\n")  # fmt: skip
    _run(at)
    target = ids[ids.index(first) + 3]
    assert at.session_state[slide_state.NEXT_UNREVIEWED_KEY] == (first, target)  # for key u
    at.button(key="rv_next").click()
    _run(at)
    assert at.selectbox(key="slide_pick").value == target


def _listings(at: AppTest) -> list:
    """The slide tables of the cohort page (matching, then misclassified), as DataFrames."""
    return [d.value for d in at.dataframe if "review" in d.value.columns]


def _progress(at: AppTest) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("Review:"))


def test_cohort_page_review_column_filter_and_counts(reviews_file: Path) -> None:
    at = _start("views/cohort.py")
    matching, wrong = _listings(at)
    assert set(matching["review"]) == {"unreviewed"}
    total = wrong["slide_id"].nunique()
    assert total >= 1
    assert _progress(at) == f"Review: **0 reviewed** / **{total} remaining** of {total} " + (
        "misclassified slide(s)"
    )
    target = str(wrong["slide_id"].iloc[0])
    reviews_file.write_text(json.dumps({
        "slide_id": target, "verdict": "ambiguous", "label": None, "reviewer": "ana",
        "comment": "", "time": "2026-01-01T00:00:00+00:00", "checkpoint": "",
    }) + "\n")  # fmt: skip
    at.selectbox(key="co_review").set_value("ambiguous")
    _run(at)
    matching, wrong = _listings(at)
    assert matching["slide_id"].tolist() == [target] == wrong["slide_id"].tolist()
    assert matching["review"].tolist() == ["ambiguous"]
    assert _progress(at).startswith(f"Review: **1 reviewed** / **{total - 1} remaining**")
    at.selectbox(key="co_review").set_value("unreviewed")
    _run(at)
    assert target not in set(_listings(at)[0]["slide_id"])


def test_checkpoint_hash_is_the_file_sha256(tmp_path: Path) -> None:
    import hashlib

    from viewer.components import review_ui

    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"weights" * 1000)
    assert review_ui.checkpoint_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert review_ui.checkpoint_sha256(tmp_path / "gone.pt") == ""
