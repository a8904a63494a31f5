"""Strings in figures show as typed: hmil's escaping (what viewer.core.text re-uses; its
behaviour per character class is tested in tests/viewer/core/test_text.py)."""

from __future__ import annotations

from hmil import text
from viewer.core import text as viewer_text


def test_plotly_labels_show_as_typed_on_one_line() -> None:
    given = "a\u202e<b>x</b> & $y$\nz\u200d"
    assert text.plain(given) == "a<b>x</b> & $y$ z\u200d"  # override gone, joiner kept
    assert text.plotly(given) == "a&lt;b&gt;x&lt;/b&gt; &amp; &#36;y&#36; z\u200d"
    assert text.plain("\ud800") == text.REPLACEMENT


def test_the_viewer_uses_the_same_functions() -> None:
    assert viewer_text.plotly is text.plotly and viewer_text.plain is text.plain
    assert viewer_text.BIDI_CONTROLS is text.BIDI_CONTROLS
