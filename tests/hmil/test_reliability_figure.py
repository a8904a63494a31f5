"""Reliability diagrams: one panel per level, a trace per fold and calibration whose points are
the bins of the folds' reliability.csv, the diagonal; the ECE of the bins; the HTML page."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from hmil import reliability_figure as rf
from hmil.calibration import ece, reliability

LEVELS = (("fine", "fine"), ("coarse", "coarse (fine summed)"), ("coarse_head", "classifier"))
COLUMNS = ["fold", "level", "calibration", "bin", "confidence", "accuracy", "count"]


def _table() -> pd.DataFrame:
    rows = [
        (0, "fine", "before", 1, 0.95, 0.5, 3),
        (0, "fine", "before", 0, 0.6, 0.4, 2),  # out of order: drawn by bin
        (0, "fine", "after", 0, 0.5, 0.4, 2),
        (0, "fine", "after", 1, 0.7, 0.5, 3),
        (1, "fine", "after", 0, 0.45, 1.0, 4),
        (0, "coarse", "after", 0, 0.8, 0.75, 5),
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def test_reliability_points_are_the_bins_per_fold_and_calibration() -> None:
    fig = rf.reliability_figure(_table(), LEVELS, "t")
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["fine", "coarse (fine summed)"]  # no coarse_head rows: no panel
    lines = [t for t in fig.data if t.name != "perfect calibration"]
    assert len(lines) == 4  # fold 0 after/before, fold 1 after (fine); fold 0 after (coarse)
    fold0_before = next(t for t in lines if "fold 0 · before" in t.hovertemplate)
    assert list(fold0_before.x) == [0.6, 0.95] and list(fold0_before.y) == [0.4, 0.5]
    assert fold0_before.customdata.tolist() == [[0, 2], [1, 3]]
    assert fold0_before.marker.color == rf.CALIBRATION_COLOURS["before"] == "#e8853d"
    assert list(fold0_before.marker.size) == [9, 11]  # grows with the bin's count
    assert list(fig.layout.xaxis.range) == [0.39, 1.01]  # least confident fine bin 0.45
    assert list(fig.layout.xaxis2.range) == [0.79, 1.01]
    coarse = lines[-1]
    assert list(coarse.x) == [0.8] and coarse.xaxis == "x2"
    assert coarse.marker.color == rf.CALIBRATION_COLOURS["after"]
    assert [t.showlegend for t in lines] == [True, True, False, False]  # one entry per kind
    assert [t.name for t in lines[:2]] == ["after calibration", "before calibration (raw)"]
    diagonals = [t for t in fig.data if t.name == "perfect calibration"]
    assert [list(t.x) for t in diagonals] == [[0, 1], [0, 1]]
    assert [t.showlegend for t in diagonals] == [True, False]


def test_an_unknown_calibration_label_is_shown_as_typed() -> None:
    table = _table().assign(calibration="<a href='x'>$x$</a>")
    fig = rf.reliability_figure(table, LEVELS[:1], "t")
    trace = next(t for t in fig.data if t.name != "perfect calibration")
    assert trace.name == "&lt;a href='x'&gt;&#36;x&#36;&lt;/a&gt;"
    assert "<a href" not in trace.hovertemplate and trace.marker.color == "#555"


def test_the_ece_of_the_bins_is_the_ece_of_the_probabilities() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=97)
    y = rng.integers(0, 4, size=97)
    rel = reliability(probs, y)
    bins = pd.DataFrame({"confidence": rel.confidence, "accuracy": rel.accuracy,
                         "count": rel.count})  # fmt: skip
    assert len(bins) == 15
    assert rf.bins_ece(bins) == pytest.approx(ece(probs, y), abs=1e-12)
    assert np.isnan(rf.bins_ece(bins.assign(count=0)))


def test_level_ece_is_the_mean_over_the_folds_and_goes_into_the_titles() -> None:
    table = _table()
    eces = rf.level_ece(table)
    # fold 0 fine after: (2·0.1 + 3·0.2) / 5 = 0.16; fold 1 fine after: 0.55 → mean 0.355
    assert eces["fine"]["after"] == pytest.approx(0.355)
    assert eces["fine"]["before"] == pytest.approx((2 * 0.2 + 3 * 0.45) / 5)
    assert eces["coarse"] == {"after": pytest.approx(0.05)}
    titles = rf.ece_titles(table, LEVELS)
    assert titles == [
        ("fine", "fine · ECE 0.350 → 0.355"),
        ("coarse", "coarse (fine summed)"),  # no "before" numbers: the title alone
        ("coarse_head", "classifier"),
    ]


def test_unchanged_bins_mean_a_checkpoint_without_calibration() -> None:
    before = _table()[lambda t: t["calibration"] == "before"]
    same = pd.concat([before, before.assign(calibration="after")], ignore_index=True)
    assert rf.unchanged(same)
    assert not rf.unchanged(_table())


def figure_of(page: str) -> tuple[list[dict], dict]:
    """The traces and layout that a Plotly HTML page passes to ``Plotly.newPlot``."""
    decoder = json.JSONDecoder()
    start = page.index("Plotly.newPlot(") + len("Plotly.newPlot(")
    _, end = decoder.raw_decode(page, page.index('"', start))  # the div's id
    data, end = decoder.raw_decode(page, page.index("[", end))
    layout, _ = decoder.raw_decode(page, page.index("{", end))
    return data, layout


class _Page(HTMLParser):
    """The tags, the <title> text and the inline scripts of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.scripts: list[dict[str, str | None]] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._in_title = tag == "title"
        if tag == "script":
            self.scripts.append(dict(attrs))

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def test_the_html_page_is_self_contained_with_the_ece_per_level() -> None:
    same = _table().query("level == 'fine' and fold == 0")
    table = pd.concat([_table(), same.assign(level="coarse_head")], ignore_index=True)
    page = rf.reliability_html(table, "run <b>x</b>")
    parsed = _Page()
    parsed.feed(page)
    assert {"html", "head", "title", "body", "script", "div"} <= set(parsed.tags)
    assert parsed.title == "Reliability diagrams: run <b>x</b>"  # text, not markup
    assert "<title>Reliability diagrams: run &lt;b&gt;x&lt;/b&gt;</title>" in page
    assert all("src" not in s for s in parsed.scripts)  # plotly.js inline: opens offline
    assert "Plotly.newPlot" in page and len(page) > 1_000_000
    data, layout = figure_of(page)
    assert [a["text"] for a in layout["annotations"]] == [
        "fine · ECE 0.350 → 0.355",
        "coarse (fine summed)",  # only "after" bins: no ECE pair
        "coarse classifier · ECE 0.350 → 0.160",
    ]
    assert layout["title"]["text"].startswith("Reliability diagrams of run &lt;b&gt;x&lt;/b&gt;")
    assert "fold(s) 0, 1: before (raw) and after calibration" in layout["title"]["text"]
    assert len(data) == 3 + 6  # a diagonal per panel; fine 3, coarse 1, classifier 2 traces
    assert "checkpoint without calibration" not in page
    with pytest.raises(ValueError, match="no reliability rows"):
        rf.reliability_html(pd.DataFrame(), "run")
