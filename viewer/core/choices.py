"""Widget values that must stay among their options (a pure function of session state).

A selectbox's options change under it — another run, another slide, a search filter — and
Streamlit raises if the value in ``st.session_state`` is not among the new options. Every page
resets such a key the same way, through :func:`keep_choice`, before drawing the widget.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from typing import Any


def keep_choice(
    state: MutableMapping[str, Any], key: str, options: Sequence[Any], default: Any = None
) -> Any:
    """Keep ``state[key]`` when it is one of ``options``, else set it to ``default`` (or the
    first option when ``default`` is None or not an option); returns the value kept.

    With no options the key is left alone and None is returned.
    """
    if not options:
        return None
    if key in state and state[key] in options:
        return state[key]
    state[key] = default if default in options else options[0]
    return state[key]
