"""Driving the review loop in a real browser: the slide page's review panel and the cohort
page's review listing, the way a pathologist uses them (type, click, pick, save).

Used by tests/viewer/test_review_browser.py on top of :mod:`benchmarks.browser` (which starts
``hmil view`` and Chromium). Every function takes a Playwright page and waits until the page
has finished what the action started, so the caller can read the page (or ``reviews.jsonl``)
straight after.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks import browser
from hmil import reviews

#: the ports the review tests' viewers listen on (one at a time; the first free one is used)
PORTS = range(8641, 8650)
#: the review panel: the expander whose title starts "Review ·"
PANEL = '[data-testid="stExpander"]:has(summary:has-text("Review ·"))'


def port_in_range(ports: range = PORTS) -> int:
    """The first port of ``ports`` that nothing listens on (OSError when all are taken): a
    fixed range keeps these servers apart from others started on the same machine."""
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port in {ports.start}-{ports.stop - 1}")


def copy_run(run: Path, target: Path) -> Path:
    """A copy of ``run`` at ``target`` (its config still names the shared cohort), so the
    reviews a test writes stay out of the run other tests read."""
    shutil.copytree(run, target, ignore=shutil.ignore_patterns("reviews.jsonl"))
    return target


def misclassified(run: Path, with_slide: set[str] | None = None) -> list[str]:
    """Slide ids the run's folds got wrong at the fine level, most confident first (the order
    of the slide page's "misclassified (fine)" list, which "Next unreviewed" walks), only
    those in ``with_slide`` when given (slides that have a slide file)."""
    folds = sorted(run.glob("fold_*/predictions.csv"))
    table = pd.concat([pd.read_csv(p, dtype={"slide_id": str}) for p in folds])
    wrong = table[table["true_fine"] != table["pred_fine"]]
    wrong = wrong.sort_values("confidence", ascending=False, kind="stable")
    ids = wrong["slide_id"].astype(str)
    return [s for s in dict.fromkeys(ids) if with_slide is None or s in with_slide]


def truth(run: Path, slide_id: str) -> tuple[str, str]:
    """``(true_fine, pred_fine)`` of a slide in its fold's ``predictions.csv``."""
    for path in sorted(run.glob("fold_*/predictions.csv")):
        table = pd.read_csv(path, dtype=str)
        row = table[table["slide_id"] == slide_id]
        if len(row):
            return str(row["true_fine"].iloc[0]), str(row["pred_fine"].iloc[0])
    raise KeyError(slide_id)


def open_slide(page: Any, url: str, slide_id: str, browse: str = "") -> None:
    """Load the slide page on ``slide_id`` (a new page load: a new viewer session), stepping
    through the browse list ``browse`` when given (e.g. ``wrong_fine``)."""
    page.goto(f"{url}/?slide={slide_id}" + (f"&list={browse}" if browse else ""))
    browser.wait_event(page, "slide-loaded", 0.0, timeout_s=120)  # a new document: time 0
    browser.settle(page)


def panel(page: Any) -> Any:
    """The review panel, opened (it starts closed on a slide the model got right)."""
    box = page.locator(PANEL)
    if not box.get_by_label("Reviewer").is_visible():
        box.locator("summary").click()
        browser.settle(page)
    return box


def fill_verdict(
    page: Any, reviewer: str, verdict: str, label: str | None = None, comment: str = ""
) -> Any:
    """Type the reviewer's name, pick the verdict (one of :data:`hmil.reviews.VERDICTS`, by
    its text on the panel), the corrected label and a comment; the Save button is returned,
    not pressed."""
    box = panel(page)
    name = box.get_by_label("Reviewer")
    if name.input_value() != reviewer:
        name.fill(reviewer)
        name.press("Enter")
        # the page fills the form with this reviewer's saved verdict: wait for it, as a
        # person does, before choosing
        browser.settle(page)
    box.get_by_text(reviews.VERDICT_TEXT[verdict], exact=True).click()
    browser.settle(page)
    if label is not None:
        pick_option(page, box, "Correct fine label", label)
    if comment:
        text = box.get_by_label("Comment")
        text.fill(comment)
        text.press("Control+Enter")
        browser.settle(page)
    return box.get_by_role("button", name="Save")


def wait_saved(page: Any, timeout_s: float = 60.0) -> str:
    """The panel's "saved: …" message once it shows (an error message fails at once)."""
    box = page.locator(PANEL)
    done = box.locator('[data-testid="stAlertContentSuccess"], [data-testid="stAlertContentError"]')
    done.first.wait_for(timeout=timeout_s * 1000)
    browser.settle(page)
    message = str(done.first.inner_text())
    if not message.startswith("saved:"):
        raise AssertionError(f"the review was not saved: {message}")
    return message


def saved_message(reviewer: str, verdict: str, label: str | None = None) -> str:
    """What the panel says after saving this verdict."""
    return f"saved: {reviewer}: {verdict}" + (f" → {label}" if label else "")


def save_verdict(
    page: Any, reviewer: str, verdict: str, label: str | None = None, comment: str = ""
) -> None:
    """Fill the panel, press Save, and check the panel says it saved this verdict."""
    fill_verdict(page, reviewer, verdict, label, comment).click()
    message = wait_saved(page)
    assert message == saved_message(reviewer, verdict, label), message


def chosen_verdict(page: Any) -> str | None:
    """The verdict the panel's form shows chosen (None: none)."""
    radios = page.locator(PANEL).locator('input[type="radio"]')
    checked = radios.evaluate_all("els => els.map(e => e.checked)")
    return next((v for v, on in zip(reviews.VERDICTS, checked, strict=True) if on), None)


def panel_lines(page: Any) -> list[str]:
    """The panel's title and the saved verdicts it lists (``reviewer: verdict [→ label] · time
    — comment``), as shown."""
    box = page.locator(PANEL)
    title = str(box.locator("summary").inner_text()).split("\n")[-1].strip()
    captions = box.locator('[data-testid="stCaptionContainer"]').all_inner_texts()
    return [title, *(" ".join(c.split()) for c in captions)]


def pick_option(page: Any, scope: Any, label: str, option: str) -> None:
    """Choose ``option`` (its exact text) in the Streamlit select box ``label`` (a react-aria
    combobox) inside ``scope`` (a page or a locator)."""
    combobox = scope.get_by_role("combobox", name=label, exact=True)
    combobox.focus()
    combobox.press("ArrowDown")  # opens the list (a click on the box does not, every time)
    page.get_by_role("option", name=option, exact=True).click()
    browser.settle(page)


def open_cohort(page: Any, url: str) -> None:
    page.goto(f"{url}/cohort")
    browser.settle(page)


def listing(page: Any, title: str = "Matching slides") -> dict[str, dict[str, str]]:
    """The cohort listing headed ``title``: ``slide_id -> {column: cell}``, read from the
    table's accessible grid (the rows in view; the review tests list a few slides only)."""
    head = page.locator("p", has_text=f"{title} —").first
    # the table is the element right after the line that heads it
    grid = page.locator(
        f'xpath=//div[@data-testid="stElementContainer"][.//p[contains(., "{title} —")]]'
        '/following-sibling::div[@data-testid="stElementContainer"][1]'
        '//div[@data-testid="stDataFrame"]//*[@role="grid"]'
    )
    if not grid.count():  # no rows: the page draws no table
        assert " 0 slide(s)" in head.inner_text(), head.inner_text()
        return {}
    columns = [" ".join(c.split()) for c in grid.locator('[role="columnheader"]').all_inner_texts()]
    out: dict[str, dict[str, str]] = {}
    for row in grid.locator('[role="row"]:has([role="gridcell"])').all():
        cells = [" ".join(c.split()) for c in row.locator('[role="gridcell"]').all_inner_texts()]
        record = dict(zip(columns, cells, strict=False))
        out[record["slide_id"]] = record
    return out


def cohort_statuses(page: Any, wanted: str = "reviewed") -> dict[str, str]:
    """Filter the cohort page by review status ``wanted``; ``slide_id -> review status`` of
    the slides then listed under "Matching slides"."""
    pick_option(page, page, "Review status", wanted)
    return {s: row["review"] for s, row in listing(page).items()}


def matching_count(page: Any) -> int:
    """The number in the cohort page's "Matching slides — N slide(s)" line."""
    text = page.locator("p", has_text="Matching slides").first.inner_text()
    return int(text.split("—")[1].split()[0])


def review_progress(page: Any) -> str:
    """The cohort page's "Review: N reviewed / M remaining of K misclassified" line."""
    return " ".join(str(page.locator("p", has_text="reviewed /").first.inner_text()).split())


#: the regions panel: the expander whose title starts "Regions"
REGIONS = '[data-testid="stExpander"]:has(summary:has-text("Regions"))'


def regions_panel(page: Any) -> Any:
    """The regions panel, opened (it starts closed on a slide without regions)."""
    box = page.locator(REGIONS)
    if not box.locator('input[type="file"]').count():
        box.locator("summary").click()
        browser.settle(page)
    return box


def region_rows(page: Any) -> list[str]:
    """The regions panel's list: ``<name> · <class>`` per saved region."""
    box = page.locator(REGIONS)
    rows = box.locator('[data-testid="stCaptionContainer"]').all_inner_texts()
    return [" ".join(r.split()) for r in rows if " · " in r]


def wait_regions(page: Any, count: int, timeout_s: float = 60.0) -> list[str]:
    """Wait until the regions panel's title says ``Regions · count``; its list then."""
    page.locator(REGIONS).locator("summary", has_text=f"Regions · {count}").wait_for(
        timeout=timeout_s * 1000
    )
    browser.settle(page)
    return region_rows(page)


def draw_rectangle(
    page: Any, start: tuple[float, float], end: tuple[float, float], count: int
) -> list[str]:
    """Choose the view's rectangle tool and drag from ``start`` to ``end`` (fractions of the
    view's width and height); the regions list once the page has saved the drawing as the
    slide's ``count``-th region."""
    page.locator('.hmil-dz-tool[data-tool="rectangle"]').click()
    page.locator(".hmil-dz-frame.hmil-dz-drawing").first.wait_for(timeout=30_000)
    page.wait_for_timeout(300)  # the drawing layer takes the pointer
    box = page.locator(".hmil-dz-frame").first.bounding_box()
    a = (box["x"] + box["width"] * start[0], box["y"] + box["height"] * start[1])
    b = (box["x"] + box["width"] * end[0], box["y"] + box["height"] * end[1])
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move((a[0] + b[0]) / 2, (a[1] + b[1]) / 2, steps=4)
    page.mouse.move(*b, steps=4)
    page.mouse.up()
    return wait_regions(page, count)


def import_geojson(page: Any, path: Path, count: int) -> list[str]:
    """Upload ``path`` into the regions panel's "Import QuPath GeoJSON" box; the regions
    list once the slide has ``count`` regions."""
    box = regions_panel(page)
    box.locator('input[type="file"]').set_input_files(str(path))
    return wait_regions(page, count)


def next_unreviewed(page: Any, key: bool = False) -> str:
    """Press the review panel's "Next unreviewed" (``key``: the view's key u instead); the
    slide id the page then shows."""
    from urllib.parse import parse_qs, urlparse

    before = parse_qs(urlparse(page.url).query).get("slide", [""])[0]
    t0 = browser.now(page)
    if key:
        page.locator("body").press("u")
    else:
        panel(page).get_by_role("button", name="Next unreviewed").click()
    page.wait_for_function(
        "(s) => new URLSearchParams(location.search).get('slide') !== s", arg=before
    )
    browser.wait_event(page, "slide-loaded", t0, timeout_s=120)
    browser.settle(page)
    return parse_qs(urlparse(page.url).query)["slide"][0]


def download_report(page: Any, reviewer: str, folder: Path) -> Path:
    """Pick ``reviewer`` beside the cohort page's "Review report" button and download the
    page it builds into ``folder``; the file."""
    pick_option(page, page, "Report of", reviewer)
    with page.expect_download(timeout=120_000) as got:
        page.get_by_role("button", name="Review report").click()
    download = got.value
    target = folder / download.suggested_filename
    download.save_as(str(target))
    return target
