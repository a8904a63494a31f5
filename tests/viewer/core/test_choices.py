"""Widget values kept among their options and across pages (viewer/core/choices.py)."""

from __future__ import annotations

from typing import Any

from viewer.core.choices import keep_choice, keep_widgets, restore_widgets


def test_keep_choice_resets_a_value_that_left_the_options() -> None:
    state: dict[str, Any] = {"k": "gone"}
    assert keep_choice(state, "k", ["a", "b"], "b") == "b" and state["k"] == "b"
    assert keep_choice(state, "k", ["a", "b"]) == "b"  # still an option: kept
    assert keep_choice(state, "k", []) is None and state["k"] == "b"


def test_kept_widget_values_come_back_after_another_page() -> None:
    state: dict[str, Any] = {"w": 3, "other": 1}
    keep_widgets(state, ["w", "missing"])
    assert state == {"w": 3, "other": 1, "_keep_w": 3}
    del state["w"]  # another page ran: Streamlit forgot the widget
    restore_widgets(state, ["w", "missing"])
    assert state["w"] == 3 and "missing" not in state
