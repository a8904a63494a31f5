"""The review loop in a real browser: two reviewers at once on one run, and the whole loop from
verdicts to a model retrained on the corrected labels.

Each test works on its own copy of the viewer fixture's run (``reviews.jsonl`` is written
there), serves it with ``hmil view`` on a port of :data:`review_browser.PORTS` and drives it
in headless Chromium at 1600×1000 (:mod:`benchmarks.browser`; skipped without Debian's
``/usr/bin/chromium`` or the ``playwright`` package). Screenshots go to the test's temporary
folder, and also to ``$HMIL_SCREENSHOT_DIR`` when set.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import review_browser as rb
from viewer_fixtures import NO_SLIDE_ID

from benchmarks import browser
from hmil import reviews
from hmil.hierarchy import Hierarchy


def _need_browser() -> None:
    if not browser.CHROMIUM.is_file():
        pytest.skip("Debian chromium (/usr/bin/chromium) is not installed")
    pytest.importorskip("playwright.sync_api")


def _keep_screenshots(folder: Path) -> None:
    extra = os.environ.get("HMIL_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        for png in folder.glob("*.png"):
            shutil.copy(png, Path(extra) / png.name)


@pytest.fixture
def review_run(viewer_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the fixture's run without reviews; the viewer served on a port of
    :data:`review_browser.PORTS`."""
    monkeypatch.setattr(browser, "free_port", rb.port_in_range)
    return rb.copy_run(viewer_root / "run", tmp_path / "run")


def _slides_with_files(viewer_root: Path) -> set[str]:
    return {p.stem for p in (viewer_root / "cohort" / "slides").glob("*.tiff")} - {NO_SLIDE_ID}


@pytest.mark.browser
@pytest.mark.slow
def test_two_reviewers_at_once_lose_nothing_and_see_each_other(
    viewer_root: Path, review_run: Path, tmp_path: Path
) -> None:
    """Alice and Bob, each in a browser context of their own (separate viewer sessions),
    save verdicts on five slides interleaved, the same slide included, and once both at the
    same moment: every record is in ``reviews.jsonl``, each one's cohort page lists the
    other's verdicts after a reload, the slide they disagree on is disputed, and Bob's cohort
    page hands him Alice's report."""
    _need_browser()
    fine = Hierarchy.preset("bracs").fine
    s1, s2, s3, s4, s5 = rb.misclassified(review_run, _slides_with_files(viewer_root))[:5]
    fix = fine[-1]  # a corrected label both give on s2
    with (
        browser.serve(review_run, [viewer_root, tmp_path], tmp_path / "viewer.log") as url,
        browser.chromium() as chrome,
    ):
        alice, bob = browser.new_page(chrome), browser.new_page(chrome)
        assert alice.context is not bob.context
        # interleaved: each goes on while the other's page is open on the same run
        rb.open_slide(alice, url, s1)
        rb.open_slide(bob, url, s1)
        rb.save_verdict(alice, "alice", "agree", comment="looks right")
        rb.save_verdict(bob, "bob", "model_error")
        rb.open_slide(bob, url, s2)
        rb.open_slide(alice, url, s3)
        rb.save_verdict(bob, "bob", "label_error", label=fix)
        rb.save_verdict(alice, "alice", "ambiguous")
        rb.open_slide(alice, url, s2)
        assert rb.panel_lines(alice)[:2] == ["Review · label_error", f"bob: label_error → {fix}"
                                             f" · {_time_of(review_run, s2, 'bob')}"]  # fmt: skip
        rb.save_verdict(alice, "alice", "label_error", label=fix)
        rb.open_slide(bob, url, s5)
        rb.save_verdict(bob, "bob", "ambiguous")
        rb.open_slide(alice, url, s3)  # alice changes her mind: the latest verdict counts
        rb.save_verdict(alice, "alice", "model_error")
        # both press Save on s4 at the same moment
        rb.open_slide(alice, url, s4)
        rb.open_slide(bob, url, s4)
        save_a = rb.fill_verdict(alice, "alice", "agree")
        save_b = rb.fill_verdict(bob, "bob", "agree")
        save_a.click()
        save_b.click()
        saved = [rb.wait_saved(alice), rb.wait_saved(bob)]
        assert saved == [rb.saved_message("alice", "agree"), rb.saved_message("bob", "agree")]

        # the file holds every record, whole
        log = reviews.read_reviews(review_run, fine)
        assert log.problems == ()
        by_reviewer = {
            who: Counter(r.slide_id for r in log.reviews if r.reviewer == who)
            for who in ("alice", "bob")
        }
        assert by_reviewer == {
            "alice": Counter([s1, s3, s2, s3, s4]),
            "bob": Counter([s1, s2, s5, s4]),
        }
        lines = (review_run / reviews.REVIEWS_FILE).read_text().splitlines()
        assert len(lines) == 9 and all(line.startswith("{") for line in lines)
        assert [r.comment for r in log.reviews if r.comment] == ["looks right"]
        current = reviews.latest(log.reviews)
        assert set(reviews.disagreements(current)) == {s1}
        expected = {s1: "disputed", s2: "label_error", s3: "model_error", s4: "agree",
                    s5: "ambiguous"}  # fmt: skip
        assert reviews.slide_status(current) == expected

        # each one's cohort page, reloaded, shows both reviewers' verdicts
        seen = {}
        for name, page in (("alice", alice), ("bob", bob)):
            rb.open_cohort(page, url)
            seen[name] = rb.cohort_statuses(page, "reviewed")
            assert rb.matching_count(page) == 5
            assert browser.problems(page) == []
        assert seen["alice"] == seen["bob"] == expected
        # the disagreement, filtered
        assert rb.cohort_statuses(bob, "disputed") == {s1: "disputed"}
        bob.locator("p", has_text="Matching slides —").first.scroll_into_view_if_needed()
        bob.screenshot(path=str(tmp_path / "review_two_cohort.png"))
        # bob downloads alice's report from his cohort page: her latest verdicts, his absent
        report = rb.download_report(bob, "alice", tmp_path)
        assert report.name == "alice.html"
        text = report.read_text()
        assert all(f'id="slide-{s}"' in text for s in (s1, s2, s3, s4))
        assert f'id="slide-{s5}"' not in text and "looks right" in text
        # alice's slide page on the disputed slide: both verdicts; her name fills the form
        rb.open_slide(alice, url, s1)
        box = rb.panel(alice)
        box.get_by_label("Reviewer").fill("alice")
        box.get_by_label("Reviewer").press("Enter")
        browser.settle(alice)
        assert rb.chosen_verdict(alice) == "agree"
        assert box.get_by_label("Comment").input_value() == "looks right"
        shown = rb.panel_lines(alice)
        assert shown[0] == "Review · disputed"
        assert any(line.startswith("alice: agree · ") and "looks right" in line for line in shown)
        assert any(line.startswith("bob: model_error · ") for line in shown)
        alice.locator(rb.PANEL).scroll_into_view_if_needed()
        alice.screenshot(path=str(tmp_path / "review_two_slide.png"))
        assert browser.problems(alice) == []
    _keep_screenshots(tmp_path)


def _time_of(run: Path, slide_id: str, reviewer: str) -> str:
    log = reviews.read_reviews(run)
    return reviews.latest(log.reviews)[(slide_id, reviewer)].time


def _qupath_file(path: Path, width: int, height: int, classification: str) -> Path:
    """One annotation as QuPath exports it (File → Export objects as GeoJSON): a polygon in
    level-0 pixels near the slide's lower right, with QuPath's extra properties."""
    x0, y0, x1, y1 = 0.6 * width, 0.6 * height, 0.85 * width, 0.8 * height
    ring = [[x0, y0], [x1, y0], [x1, y1], [(x0 + x1) / 2, y1 + 0.05 * height], [x0, y1], [x0, y0]]
    feature = {
        "type": "Feature",
        "id": "5e1f0c4a-3b2d-4c6e-9a8b-7d6c5b4a3f21",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {
            "objectType": "annotation",
            "name": "focus from QuPath",
            "classification": {"name": classification, "color": [200, 0, 0]},
            "isLocked": False,
        },
    }
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return path


#: the ``hmil`` processes a test started, ended at its teardown if still running
STARTED: list[subprocess.Popen[bytes]] = []


@pytest.fixture
def hmil_processes() -> Iterator[None]:
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _start(*args: str | Path, log: Path) -> subprocess.Popen[bytes]:
    """``hmil ARGS`` as a user runs it (a process of its own), its output into ``log``; the
    loop's commands that do not wait for each other run side by side."""
    command = [sys.executable, "-m", "hmil", *(str(a) for a in args)]
    with open(log, "wb") as out:
        STARTED.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT))
    return STARTED[-1]


def _finish(proc: subprocess.Popen[bytes], log: Path, timeout: float = 300) -> str:
    """Wait for ``proc`` (started by :func:`_start`); its output, once it exited 0."""
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    output = log.read_text(errors="replace")
    assert code == 0, output[-2000:]
    return output


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.usefixtures("hmil_processes")
def test_review_loop_from_verdicts_to_a_model_trained_on_the_corrections(
    viewer_root: Path, review_run: Path, tmp_path: Path
) -> None:
    """One reviewer walks three misclassified slides with "Next unreviewed" (one label
    error with its corrected label), draws a region on the view and imports a QuPath GeoJSON
    file; then ``hmil reviews export`` writes the corrected labels, ``hmil reviews report``
    the report, and ``hmil train`` retrains the fold that held the corrected slide out on
    those labels: the new fold's predictions carry the corrected label."""
    _need_browser()
    from hmil.slides.reader import open_slide

    fine = Hierarchy.preset("bracs").fine
    with_file = _slides_with_files(viewer_root)
    order = rb.misclassified(review_run)  # the "misclassified (fine)" list, as the page steps
    start = next(i for i in range(len(order) - 2) if set(order[i : i + 3]) <= with_file)
    m1, m2, m3 = order[start : start + 3]
    true1, pred1 = rb.truth(review_run, m1)
    width, height = open_slide(viewer_root / "cohort" / "slides" / f"{m1}.tiff").dimensions
    upload = _qupath_file(tmp_path / f"{m1}_qupath.geojson", width, height, pred1)
    with (
        browser.serve(review_run, [viewer_root, tmp_path], tmp_path / "viewer.log") as url,
        browser.chromium() as chrome,
    ):
        page = browser.new_page(chrome)
        # earlier slides of the list were reviewed by someone else: Next unreviewed skips them
        for earlier in order[:start]:
            reviews.append_review(review_run, reviews.make_review(earlier, "agree", "dana"))
        rb.open_slide(page, url, m1, browse="wrong_fine")
        # the label is wrong: the model's answer is the right one
        rb.save_verdict(page, "carol", "label_error", label=pred1, comment="re-read: " + pred1)
        drawn = rb.draw_rectangle(page, (0.3, 0.3), (0.5, 0.55), count=1)
        assert drawn == [f"region 1 · {true1}"]  # a new drawing takes the slide's true class
        assert rb.import_geojson(page, upload, count=2) == [*drawn, f"focus from QuPath · {pred1}"]
        assert page.get_by_text("Attention in the regions").is_visible()
        page.screenshot(path=str(tmp_path / "review_loop_slide.png"))
        assert rb.next_unreviewed(page) == m2
        rb.save_verdict(page, "carol", "model_error")
        assert rb.next_unreviewed(page, key=True) == m3  # the view's key u
        rb.save_verdict(page, "carol", "ambiguous", comment="poor fixation")
        assert browser.problems(page) == []
        # the report and the corrected labels, written while the viewer is still open
        report, labels = tmp_path / "report", tmp_path / "labels_reviewed.csv"
        reporting = _start("reviews", "report", review_run, "--out", report, log=tmp_path / "r.log")
        exporting = _start("reviews", "export", review_run, "--labels", labels,
                           log=tmp_path / "export.log")  # fmt: skip
    _keep_screenshots(tmp_path)

    # what the browser wrote
    log = reviews.read_reviews(review_run, fine)
    carol = [r for r in log.reviews if r.reviewer == "carol"]
    assert log.problems == ()
    assert [(r.slide_id, r.verdict, r.label) for r in carol] == [
        (m1, "label_error", pred1),
        (m2, "model_error", None),
        (m3, "ambiguous", None),
    ]
    saved = json.loads((review_run / "regions" / f"{m1}.geojson").read_text())
    names = [f["properties"]["name"] for f in saved["features"]]
    assert names == ["region 1", "focus from QuPath"]
    xs = [x for x, _ in saved["features"][0]["geometry"]["coordinates"][0]]
    assert 0 <= min(xs) < max(xs) <= width  # the drawn rectangle, in level-0 pixels
    assert saved["features"][1]["properties"]["classification"]["name"] == pred1

    # the corrected labels
    done = _finish(exporting, tmp_path / "export.log")
    assert "1 label(s) corrected" in done
    table = pd.read_csv(labels, dtype=str, keep_default_na=False).set_index("slide_id")
    assert table.loc[m1, "label"] == pred1 and table.loc[m1, "original_label"] == true1
    assert table.loc[m1, "corrected_by"] == "carol"
    assert (table.drop(index=m1)["original_label"] == "").all()

    # retrain the fold that held the corrected slide out, on the corrected labels
    fold = next(int(p.parent.name.split("_")[1]) for p in review_run.glob("fold_*/predictions.csv")
                if m1 in set(pd.read_csv(p, dtype=str)["slide_id"]))  # fmt: skip
    again = tmp_path / "run_reviewed"
    training = _start(
        "train", "--config", viewer_root / "small.yaml", "--labels", labels,
        "--features", viewer_root / "cohort" / "features", "--splits", viewer_root / "splits",
        "--hierarchy", "bracs", "--out", again, "--epochs", "1", "--folds", str(fold), "--quiet",
        log=tmp_path / "train.log",
    )  # fmt: skip

    # the report: one page and table per reviewer, the regions outlined on the thumbnails
    _finish(reporting, tmp_path / "r.log")
    rows = pd.read_csv(report / "carol.csv", dtype=str, keep_default_na=False)
    assert sorted(
        zip(rows["slide_id"], rows["verdict"], rows["corrected_label"], strict=True)
    ) == sorted([(m1, "label_error", pred1), (m2, "model_error", ""), (m3, "ambiguous", "")])
    assert rows.set_index("slide_id").loc[m1, "true_fine"] == true1
    page_html = (report / "carol.html").read_text()
    section = page_html.split(f'id="slide-{m1}"')[1].split("</section>")[0]
    assert "region 1" in section and "focus from QuPath" in section
    assert page_html.count('src="data:image/png;base64,') >= 3
    assert 'src="http' not in page_html
    # as a reader opens it: one file, nothing fetched from anywhere
    with browser.chromium() as chrome:
        reader = browser.new_page(chrome)
        fetched: list[str] = []
        reader.on("request", lambda r: fetched.append(r.url))
        reader.goto((report / "carol.html").as_uri())
        reader.wait_for_load_state("load")
        reader.locator(f'[id="slide-{m1}"]').scroll_into_view_if_needed()
        reader.screenshot(path=str(tmp_path / "review_loop_report.png"))
        assert [u for u in fetched if not u.startswith(("file:", "data:"))] == []

    # the retrained fold: its predictions carry the corrected label
    _finish(training, tmp_path / "train.log")
    predicted = pd.read_csv(again / f"fold_{fold}" / "predictions.csv", dtype=str)
    row = predicted[predicted["slide_id"] == m1].iloc[0]
    assert row["true_fine"] == pred1  # the corrected label, not the original
    assert (again / f"fold_{fold}" / "checkpoint.pt").is_file()
    _keep_screenshots(tmp_path)
