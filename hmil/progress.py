"""Progress reporting: a tqdm bar on a terminal, plain timestamped lines in logs.

Long jobs (training, tiling, extraction) run both interactively and under SLURM/CI where a
carriage-return progress bar turns into megabytes of garbage, so the same call sites get a bar
on a TTY and one line per update (rate-limited) otherwise.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm import tqdm

from hmil.durations import format_duration


class Progress:
    """Count ``total`` steps of ``desc``; ``update(n, **postfix)`` after each step.

    Args:
        total: number of steps (epochs, slides, patches).
        desc: what is being counted, shown in front of every line.
        stream: where to write (stderr by default).
        min_interval_s: in plain-line mode, the minimum time between two lines (the last step
            is always printed).
        enabled: False silences all output (library use, tests).
    """

    def __init__(
        self,
        total: int,
        desc: str,
        stream: TextIO | None = None,
        min_interval_s: float = 5.0,
        enabled: bool = True,
        initial: int = 0,
    ) -> None:
        self.total = total
        self.desc = desc
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.min_interval_s = min_interval_s
        self.count = initial
        self._initial = initial
        self._start = time.monotonic()
        self._last_line = 0.0
        self._bar: tqdm | None = None
        if enabled and _is_tty(self.stream):
            self._bar = tqdm(total=total, desc=desc, file=self.stream, initial=initial, leave=True)

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.count += n
        if not self.enabled:
            return
        text = ", ".join(f"{k}={_fmt(v)}" for k, v in postfix.items())
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix_str(text, refresh=False)
            self._bar.update(n)
            return
        now = time.monotonic()
        if self.count < self.total and now - self._last_line < self.min_interval_s:
            return
        self._last_line = now
        eta = self.eta_seconds()
        eta_text = f" eta {format_duration(eta)}" if eta is not None else ""
        print(
            f"{self.desc}: {self.count}/{self.total}{eta_text}" + (f" {text}" if text else ""),
            file=self.stream,
            flush=True,
        )

    def eta_seconds(self) -> float | None:
        """Seconds left at the current rate, or None before the first step."""
        done = self.count - self._initial
        if done <= 0:
            return None
        rate = (time.monotonic() - self._start) / done
        return rate * max(self.total - self.count, 0)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
