"""One way to write a duration for people: ``h:mm:ss``.

The progress lines of long jobs, ``hmil status`` and the viewer's Training page all show
remaining times (ETAs) the same way, so a number read in one place means the same in another.
"""

from __future__ import annotations

import math


def format_duration(seconds: float | str | None, missing: str = "") -> str:
    """``seconds`` as ``h:mm:ss`` (``200`` → ``"0:03:20"``, ``7260`` → ``"2:01:00"``), rounded
    to the second; ``missing`` when it is unknown: None, not a number, negative, NaN or
    infinite."""
    if seconds is None:
        return missing
    try:
        value = float(seconds)
    except ValueError:
        return missing
    if not math.isfinite(value) or value < 0:
        return missing
    hours, rest = divmod(int(round(value)), 3600)
    return f"{hours:d}:{rest // 60:02d}:{rest % 60:02d}"
