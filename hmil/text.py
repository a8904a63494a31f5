"""User strings shown as typed in a figure: one line, no invisible formatting, no Plotly markup.

Why here: class names and fold labels come from files (the hierarchy, a run's tables) and end
up in Plotly figures that both the viewer and ``hmil evaluate`` (``RUN/reliability.html``)
draw. Plotly reads ``<a href=…>`` as a link, ``<b>`` as bold and ``$…$`` as LaTeX, and the
browser's bidirectional algorithm lets an invisible RIGHT-TO-LEFT OVERRIDE (U+202E) show
``report`` + U+202E + ``fdp.exe`` as ``reportexe.pdf``. The figure builders live in ``hmil``
(which never imports the viewer), so the escaping they need lives here; ``viewer.core.text``
re-exports it and adds the Markdown form the pages need.

* :func:`plain`: no invisible formatting characters (bidi controls and the other Unicode
  format characters, category Cf, except the joiners), no line breaks or control characters
  (each becomes a space).
* :func:`plotly`: :func:`plain`, then what Plotly reads as markup (``&``, ``<``, ``>``, and
  ``$`` that starts LaTeX) written as entities; for tick labels, legend names, titles and
  ``customdata`` shown through a hovertemplate.

Pure functions of one string: no state.
"""

from __future__ import annotations

import unicodedata

#: the bidirectional controls: marks, embeddings, overrides and isolates (all category Cf,
#: removed by :func:`plain` like every other format character not in :data:`KEPT_FORMAT`)
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
#: format characters kept: the zero-width (non-)joiner shape emoji sequences and Persian or
#: Indic words, and never reorder or hide text
KEPT_FORMAT = frozenset("\u200c\u200d")
#: categories shown as a space: control characters (newline, tab, …) and line/paragraph
#: separators, which would break a one-line label
AS_SPACE = frozenset({"Cc", "Zl", "Zp"})
#: lone surrogates cannot be encoded as UTF-8 (a page or file holding one could not be written)
REPLACEMENT = "\ufffd"
#: what Plotly's text renderer reads as markup: ``<tag>``, ``&entity;``, and ``$…$`` (LaTeX
#: where MathJax is loaded)
PLOTLY_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "$": "&#36;"}


def plain(text: object) -> str:
    """``str(text)`` without invisible formatting characters, as one line.

    Bidirectional controls (:data:`BIDI_CONTROLS`) and the other format characters (Unicode
    category Cf: zero-width spaces, the byte-order mark, tag characters) are removed, except
    the joiners in :data:`KEPT_FORMAT`; control characters and line or paragraph separators
    become a space; lone surrogates become U+FFFD. Everything else is kept, right-to-left
    scripts included: they still show right to left, but cannot reorder what follows them.
    """
    out = []
    for char in str(text):
        category = unicodedata.category(char)
        if category == "Cf" and char not in KEPT_FORMAT:
            continue
        if category in AS_SPACE:
            out.append(" ")
        elif category == "Cs":
            out.append(REPLACEMENT)
        else:
            out.append(char)
    return "".join(out)


def plotly(text: object) -> str:
    """:func:`plain` ``text`` with Plotly's markup characters written as entities, so that a
    tick label, legend entry or hover label shows it as typed (no link, no bold, no LaTeX)."""
    return "".join(PLOTLY_ENTITIES.get(c, c) for c in plain(text))
