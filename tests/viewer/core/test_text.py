"""User strings are shown as text (viewer/core/text.py): no bidirectional override, no
Markdown, no Plotly markup or link, wherever the charts and uploads show them."""

from __future__ import annotations

import html
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hmil.errors import HMILError
from viewer.core import charts, text, uploads

LINK = "<a href='https://evil.example'>click</a>"
RLO = "\u202e"


@pytest.mark.parametrize("control", sorted(text.BIDI_CONTROLS))
def test_plain_removes_every_bidirectional_control(control: str) -> None:
    assert text.plain(f"report{control}fdp.exe") == "reportfdp.exe"


@pytest.mark.parametrize(
    ("given_text", "shown"),
    [
        ("a\u200bb\ufeffc\U000e0041d\u00ade", "abcde"),  # zero-width space, BOM, tag, soft hyphen
        ("line\nbreak\ttab\r\x00x\u2028y\u2029z\x85", "line break tab  x y z "),
        ("👩\u200d💻 می\u200cخواهم", "👩\u200d💻 می\u200cخواهم"),  # joiners kept
        ("عربي hebrew עברית", "عربي hebrew עברית"),  # right-to-left scripts kept
        ("\ud800lone", "\ufffdlone"),  # a lone surrogate cannot be sent as UTF-8
        (42, "42"),
    ],
)
def test_plain_keeps_what_shows_and_makes_one_line(given_text: object, shown: str) -> None:
    assert text.plain(given_text) == shown


def test_markdown_shows_markup_as_typed_and_links_nothing() -> None:
    assert text.markdown("**md**") == r"\*\*md\*\*"
    assert text.markdown("*[x](javascript:y)*") == r"\*\[x\]\(javascript\:y\)\*"
    assert charts.escape_markdown is text.markdown  # the old name still works
    shown = text.markdown(f"see http://evil.example, www.evil.example, a@evil.example {RLO}x")
    wj = text.WORD_JOINER
    assert f"http{wj}\\:" in shown and f"www{wj}\\." in shown and f"\\@{wj}evil" in shown
    assert RLO not in shown and "\n" not in text.markdown("a\n# heading")
    assert text.markdown(":smile: :red[x] $x$ &amp;") == r"\:smile\: \:red\[x\] \$x\$ \&amp;"


def _unescape_markdown(shown: str) -> str:
    out, escaped = [], False
    for char in shown.replace(text.WORD_JOINER, ""):
        if escaped or char != "\\":
            out.append(char)
            escaped = False
        else:
            escaped = True
    return "".join(out)


@given(st.text(max_size=40))
def test_markdown_escapes_every_special_character_and_nothing_else(value: str) -> None:
    shown = text.markdown(value)
    assert _unescape_markdown(shown) == text.plain(value)
    unescaped = shown.replace("\\\\", "")
    for i, char in enumerate(unescaped):
        if char in text.MARKDOWN_SPECIAL and char != "\\":
            assert i > 0 and unescaped[i - 1] == "\\", (value, shown)
    assert not any(
        unicodedata.category(c) == "Cf" for c in text.plain(value) if c not in "\u200c\u200d"
    )


@given(st.text(max_size=40))
def test_plotly_writes_markup_as_entities(value: str) -> None:
    shown = text.plotly(value)
    assert "<" not in shown and ">" not in shown and "$" not in shown
    assert html.unescape(shown) == text.plain(value)


def test_plotly_text_of_a_link_and_markup() -> None:
    assert text.plotly(LINK) == "&lt;a href='https://evil.example'&gt;click&lt;/a&gt;"
    assert text.plotly("<b>x</b> & $y$") == "&lt;b&gt;x&lt;/b&gt; &amp; &#36;y&#36;"
    assert text.plotly(f"ab{RLO}cd") == "abcd"


def test_the_confusion_matrix_draws_names_as_text_and_reports_them_as_they_are() -> None:
    """Before: the ticks and the hover label were the names themselves, so Plotly drew
    ``<a href=…>`` as a link and ``<b>`` bold, and an override reversed the tick."""
    classes = [LINK, "<b>bold</b>", f"ab{RLO}cd"]
    fig = charts.confusion_figure(np.arange(9).reshape(3, 3), classes, "fine")
    _, points = fig.data
    for axis in (fig.layout.xaxis, fig.layout.yaxis):
        assert list(axis.tickvals) == classes and axis.tickmode == "array"
        assert list(axis.ticktext) == [text.plotly(c) for c in classes]
        assert not any("<" in t or RLO in t for t in axis.ticktext)
    assert list(points.x[:3]) == classes  # a click reports the real name (cell_from_selection)
    assert list(points.customdata) == list(range(9))
    assert not any("<" in t or RLO in t for t in points.text)
    assert "%{x}" not in points.hovertemplate and "%{y}" not in points.hovertemplate


def test_roc_legends_and_probability_bars_show_names_as_text() -> None:
    curves = {LINK: (np.array([0.0, 1.0]), np.array([0.0, 1.0]), 0.5)}
    fig = charts.roc_figure(curves, "roc")
    assert fig.data[0].name == f"{text.plotly(LINK)} (AUC 0.50)"
    (row,) = charts.probability_rows([f"ab{RLO}cd"], np.array([1.0]), None)
    assert RLO not in row.html() and "abcd" in row.html()


def test_uploaded_names_are_shown_as_plain_text(tmp_path: Path) -> None:
    """An upload named ``invoice`` + U+202E + ``fdp.svs`` would show as ``invoicesvs.pdf``."""
    assert uploads.display_name(f"C:\\Users\\me\\invoice{RLO}fdp.svs") == "invoicefdp.svs"
    assert uploads.display_name("dir/a\nb.h5") == "a b.h5"
    assert uploads.display_stem(f"slide{RLO}1.ome.tiff") == "slide1"
    assert uploads.display_stem("bag.h5") == "bag" and uploads.display_stem(".h5") == ".h5"
    assert uploads.display_name("") == "upload"
    with pytest.raises(HMILError) as info:
        uploads.save_upload(b"", f"x{RLO}y.h5", tmp_path, 1)
    assert info.value.where == "xy.h5"
