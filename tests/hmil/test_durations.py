"""``hmil.durations.format_duration``: the one way durations are written."""

from __future__ import annotations

import math

from hmil.durations import format_duration


def test_hours_minutes_seconds() -> None:
    assert format_duration(200) == "0:03:20"
    assert format_duration(7260) == "2:01:00"
    assert format_duration(59.6) == "0:01:00"  # rounded to the second
    assert format_duration(0) == "0:00:00"
    assert format_duration(100 * 3600 + 5) == "100:00:05"


def test_unknown_durations_give_the_placeholder() -> None:
    for unknown in (None, "soon", math.nan, math.inf, -1.0):
        assert format_duration(unknown) == ""
        assert format_duration(unknown, missing="-") == "-"
    assert format_duration("90") == "0:01:30"  # a number written as text (a status file)
