"""``hmil.progress.Progress``: plain rate-limited lines off a terminal, silence when disabled."""

from __future__ import annotations

import io

import pytest

from hmil import progress as progress_module
from hmil.progress import Progress


def test_plain_lines_are_rate_limited_and_the_last_step_always_printed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = iter([1000.0, 1002.0, 1002.0, 1004.0, 1006.0, 1006.0])  # start, then per call
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    stream = io.StringIO()
    bar = Progress(3, "fold 0", stream=stream, min_interval_s=5.0)  # starts at t=1000
    bar.update(1, loss=0.123456, epoch=1)  # t=1002, no line yet: printed, eta 2 s × 2 steps
    bar.update(1, loss=0.5)  # t=1004: 2 s after the last line, not the last step: silent
    bar.update(1, loss=0.25)  # t=1006: the last step, printed although within 5 s
    assert stream.getvalue().splitlines() == [
        "fold 0: 1/3 eta 0:00:04 loss=0.1235, epoch=1",
        "fold 0: 3/3 eta 0:00:00 loss=0.25",
    ]
    assert bar.count == 3


def test_disabled_counts_but_writes_nothing() -> None:
    stream = io.StringIO()
    with Progress(2, "slides", stream=stream, enabled=False) as bar:
        bar.update(2)
    assert bar.count == 2 and stream.getvalue() == ""


def test_eta_from_the_measured_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([100.0, 110.0])  # start, then 10 s later
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    bar = Progress(10, "epochs", stream=io.StringIO(), enabled=False)
    assert bar.eta_seconds() is None  # no step yet
    bar.update(2)
    assert bar.eta_seconds() == pytest.approx(40.0)  # 5 s a step, 8 steps left


def test_resumed_count_starts_at_initial_and_rates_only_new_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = iter([0.0, 4.0])
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    bar = Progress(10, "epochs", stream=io.StringIO(), enabled=False, initial=6)
    bar.update(1)
    assert bar.count == 7
    assert bar.eta_seconds() == pytest.approx(12.0)  # 4 s for the one new step, 3 left


def test_a_terminal_gets_a_tqdm_bar() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    with Progress(4, "tiles", stream=stream) as bar:
        bar.update(4, slide="a")
    text = stream.getvalue()
    assert "tiles" in text and "4/4" in text and "slide=a" in text and "\r" in text


def test_formatting_of_numbers_and_durations() -> None:
    assert progress_module._fmt(0.000123456) == "0.0001235"
    assert progress_module._fmt(7) == "7"
    assert progress_module.format_duration(3725.4) == "1:02:05"
    assert progress_module._is_tty(object()) is False  # type: ignore[arg-type]  # no isatty
