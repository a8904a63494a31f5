"""The level-0 rectangle the slide page shows (pure).

A :class:`Canvas` is the whole slide, or — without a slide file — the extent of the bag's
patches; the deep-zoom view maps it to OpenSeadragon's coordinates (the canvas is 1 unit wide).
"""

from __future__ import annotations

from dataclasses import dataclass

from hmil.slides.reader import Region


@dataclass(frozen=True)
class Canvas:
    """The level-0 rectangle that can be viewed: ``x0, y0`` top-left, ``width, height``."""

    x0: float
    y0: float
    width: float
    height: float

    @property
    def region(self) -> Region:
        return Region(self.x0, self.y0, self.width, self.height)

    @property
    def centre(self) -> tuple[float, float]:
        return self.x0 + self.width / 2, self.y0 + self.height / 2


def slide_facts(
    dimensions: tuple[int, int],
    level_count: int,
    mpp: float | None,
    objective_power: float | None,
    backend: str,
) -> str:
    """One line about the slide: ``"2220 × 2967 px · 1 level · 0.499 µm/px · 20× · openslide"``
    (or ``MPP unknown``, which the view's scale bar repeats)."""
    w, h = dimensions
    parts = [f"{w} × {h} px", f"{level_count} level{'s' if level_count != 1 else ''}"]
    parts.append(f"{mpp:.3g} µm/px" if mpp else "MPP unknown (no µm scale)")
    if objective_power:
        parts.append(f"{objective_power:.3g}×")
    parts.append(f"read by {backend}")
    return " · ".join(parts)
