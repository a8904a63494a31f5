"""User strings shown as plain text: slide ids, class names, uploaded file names.

Why: the viewer shows strings that come from files (the hierarchy's class names, label tables'
slide ids, the names of uploaded files), and every place it shows them interprets some of the
characters. Streamlit's Markdown turns ``**x**`` bold and ``[x](url)`` into a link; Plotly's
text turns ``<a href=…>`` into a link and ``<b>`` bold in axis ticks, legends and hover labels;
and the browser's bidirectional algorithm lets an invisible RIGHT-TO-LEFT OVERRIDE (U+202E)
show ``report`` + U+202E + ``fdp.exe`` as ``reportexe.pdf``. Each helper here returns a string that
shows as exactly the characters it was given, once for each of those renderers:

* :func:`plain`: no invisible formatting characters (bidi controls and the other Unicode
  format characters, category Cf, except the joiners), no line breaks or control characters
  (each becomes a space); for ``st.text``, ``st.code``, widget labels and other places that
  show text as is.
* :func:`markdown`: :func:`plain`, then Markdown's special characters backslash-escaped and
  an invisible WORD JOINER after ``http``/``www``/``@`` (Streamlit turns bare URLs and e-mail
  addresses into links after escapes are resolved, so a backslash cannot stop those); for any
  string put into ``st.markdown``, ``st.caption``, ``st.write``, ``st.error`` and friends.
* :func:`plotly`: :func:`plain`, then what Plotly reads as markup (``&``, ``<``, ``>``, and
  ``$`` that starts LaTeX) written as entities; for tick labels, legend names, titles and
  ``customdata`` shown through a hovertemplate.

They are pure functions of one string: no state, no Streamlit import.
"""

from __future__ import annotations

import re
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
#: separators, which would break a one-line caption (or start a Markdown block)
AS_SPACE = frozenset({"Cc", "Zl", "Zp"})
#: lone surrogates cannot be encoded as UTF-8 (Streamlit would fail to send the page)
REPLACEMENT = "\ufffd"
#: what Markdown (CommonMark + GFM, Streamlit's emoji ``:name:``, colour ``:red[…]`` and
#: LaTeX ``$…$`` directives) gives a meaning; ``&`` starts entities, ``@`` e-mail autolinks
MARKDOWN_SPECIAL = frozenset("\\`*_{}[]<>()#+-.!|~:$&@")
#: where GitHub-flavoured Markdown starts a link of its own in plain text (``http://``,
#: ``www.``, ``name@host``, ``mailto:``); measured in Streamlit: escaped or not, these became links
AUTOLINK_STARTS = re.compile(r"(?i)https?(?=:)|www(?=\.)|mailto(?=:)|xmpp(?=:)|@")
#: invisible, and not a character a URL or an e-mail address may contain: after a link start
#: it leaves the text as it looks and stops the link
WORD_JOINER = "\u2060"
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


def markdown(text: object) -> str:
    """:func:`plain` ``text`` with Markdown's special characters backslash-escaped and a
    :data:`WORD_JOINER` after each :data:`AUTOLINK_STARTS` match, so that Streamlit's Markdown
    shows it as typed (no bold, link, heading, emoji, colour or formula)."""
    unlinked = AUTOLINK_STARTS.sub(lambda m: m.group() + WORD_JOINER, plain(text))
    return "".join("\\" + c if c in MARKDOWN_SPECIAL else c for c in unlinked)


def plotly(text: object) -> str:
    """:func:`plain` ``text`` with Plotly's markup characters written as entities, so that a
    tick label, legend entry or hover label shows it as typed (no link, no bold, no LaTeX)."""
    return "".join(PLOTLY_ENTITIES.get(c, c) for c in plain(text))
