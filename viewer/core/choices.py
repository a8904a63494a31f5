"""Widget values that must stay among their options (pure functions of session state),
and widget values kept across pages.

A selectbox's options change under it — another run, another slide, a search filter — and
Streamlit raises if the value in ``st.session_state`` is not among the new options. Every page
resets such a key the same way, through :func:`keep_choice`, before drawing the widget.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping, Sequence
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


def restore_widgets(state: MutableMapping[str, Any], keys: Iterable[str]) -> None:
    """Put back the values :func:`keep_widgets` saved under ``_keep_<key>`` for widgets of
    ``keys`` the state no longer holds, and write a value still held again (see
    :func:`viewer.components.shell_ui.restore` for why)."""
    for key in keys:
        kept = f"_keep_{key}"
        if key in state:
            state[key] = state[key]
        elif kept in state:
            state[key] = state[kept]


def keep_widgets(state: MutableMapping[str, Any], keys: Iterable[str]) -> None:
    """Save the values of the widgets of ``keys`` that the state holds under ``_keep_<key>``."""
    for key in keys:
        if key in state:
            state[f"_keep_{key}"] = state[key]
