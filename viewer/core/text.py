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

# the renderer-independent part and Plotly's escaping live in hmil (its figures need them too)
from hmil.text import AS_SPACE as AS_SPACE
from hmil.text import BIDI_CONTROLS as BIDI_CONTROLS
from hmil.text import KEPT_FORMAT as KEPT_FORMAT
from hmil.text import PLOTLY_ENTITIES as PLOTLY_ENTITIES
from hmil.text import REPLACEMENT as REPLACEMENT
from hmil.text import plain as plain
from hmil.text import plotly as plotly

#: what Markdown (CommonMark + GFM, Streamlit's emoji ``:name:``, colour ``:red[…]`` and
#: LaTeX ``$…$`` directives) gives a meaning; ``&`` starts entities, ``@`` e-mail autolinks
MARKDOWN_SPECIAL = frozenset("\\`*_{}[]<>()#+-.!|~:$&@")
#: where GitHub-flavoured Markdown starts a link of its own in plain text (``http://``,
#: ``www.``, ``name@host``, ``mailto:``); measured in Streamlit: escaped or not, these became links
AUTOLINK_STARTS = re.compile(r"(?i)https?(?=:)|www(?=\.)|mailto(?=:)|xmpp(?=:)|@")
#: invisible, and not a character a URL or an e-mail address may contain: after a link start
#: it leaves the text as it looks and stops the link
WORD_JOINER = "\u2060"


def markdown(text: object) -> str:
    """:func:`plain` ``text`` with Markdown's special characters backslash-escaped and a
    :data:`WORD_JOINER` after each :data:`AUTOLINK_STARTS` match, so that Streamlit's Markdown
    shows it as typed (no bold, link, heading, emoji, colour or formula)."""
    unlinked = AUTOLINK_STARTS.sub(lambda m: m.group() + WORD_JOINER, plain(text))
    return "".join("\\" + c if c in MARKDOWN_SPECIAL else c for c in unlinked)
