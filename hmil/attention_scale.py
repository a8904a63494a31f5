"""Attention → colour positions with a stated meaning, and the legend that states it.

A class-wise attention row ``a`` ``(N,)`` sums to 1 over the slide's N patches, so its values
shrink as slides grow and a min–max or rank stretch makes any slide look half hot. The scales
here say what a colour means before anything is drawn:

* ``relative`` (default): ``N·a``, a patch's attention as a multiple of an average patch's
  (1 = exactly its uniform share), on a log axis from ×1 to ×10 shared by every label and
  every slide; patches under ×1 are left uncoloured, ×10 and more take the top colour. Four
  patches holding 99 % of the attention colour four patches, not half the slide; a lesion
  covering a share s of the tissue and attended evenly sits at ×1/s, so lesions up to about
  a third of the tissue reach the legend's midpoint (×3.2).
* ``percentile``: each patch's rank among the slide's patches for that label (0–100); every
  label uses the whole colour range whatever its attention, so it says nothing across labels.
* ``raw``: the attention weight itself, stretched linearly between the smallest and largest
  value of the level's labels (or of each label, ``per_label``).

Every scale maps values to *codes*: ``0`` = not coloured, ``1..255`` = colour positions
``(code − 1) / 254`` in [0, 1]. The exported PNG, the browser's layer, the legend and the
tooltip all read the same codes (:func:`code_lut`, :meth:`AttentionScale.code_texts`), so the
pictures agree to the colour.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from hmil.errors import AttentionError, ConfigError

#: ×1 = a patch holding exactly its uniform share 1/N; patches below are not coloured
RELATIVE_FLOOR = 1.0
#: ×10 and above take the top colour. Measured on the SYNTHETIC demo cohort
#: (``benchmarks/attention_scale.py``): with ×1–×10 the true label's patches at or above the
#: midpoint cover 8.1 % of the tissue (the lesion 11.2 %, 85 % of them inside it); with
#: ×1–×100 only 3.3 % (94 % inside): the strongest patches of a lesion, not the lesion
RELATIVE_TOP = 10.0
#: codes per scale: 0 is "not coloured", 1..LEVELS the colour positions
LEVELS = 255


@dataclass(frozen=True)
class Legend:
    """What a colour bar shows: a title, ticks at colour positions, and the uncoloured rule.

    Attributes:
        title: what the values are (e.g. "attention × an average patch's, log scale").
        ticks: ``(position in [0, 1], text)`` pairs along the bar.
        uncoloured: what an uncoloured patch means ('' when every patch is coloured).
    """

    title: str
    ticks: tuple[tuple[float, str], ...]
    uncoloured: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "title": self.title,
            "ticks": [[round(p, 4), t] for p, t in self.ticks],
            "uncoloured": self.uncoloured,
        }


@dataclass(frozen=True)
class AttentionScale:
    """One mapping from attention values to colour positions.

    Attributes:
        kind: ``relative``, ``percentile`` or ``raw`` (:data:`SCALES`).
        lo, hi: the values at the bottom and top colour, in the kind's unit (multiples of an
            average patch, percentile, or attention weight).
        scope: whose values fitted the bounds ("every label", "this label", …), for the legend.
    """

    kind: str
    lo: float
    hi: float
    scope: str = ""

    def positions(self, scores: np.ndarray) -> np.ndarray:
        """``(N,)`` attention → ``(N,)`` float32 positions in [0, 1]; NaN = not coloured."""
        s = _finite(scores)
        if s.size == 0:
            return s.astype(np.float32)
        value = self.values(s)
        if self.kind == "relative":
            out = np.log(np.maximum(value, 1e-30) / self.lo) / math.log(self.hi / self.lo)
            out = np.where(value < self.lo, np.nan, np.clip(out, 0.0, 1.0))
        elif self.hi > self.lo:
            out = np.clip((value - self.lo) / (self.hi - self.lo), 0.0, 1.0)
        else:
            out = np.full(s.shape, 0.5)
        return out.astype(np.float32)

    def values(self, scores: np.ndarray) -> np.ndarray:
        """``(N,)`` attention in this scale's unit (× average, percentile or weight)."""
        s = np.asarray(scores, dtype=np.float64).ravel()
        if self.kind == "relative":
            return s * s.size
        if self.kind == "percentile":
            return percentile_ranks(s)
        return s

    def codes(self, scores: np.ndarray) -> np.ndarray:
        """``(N,)`` attention → ``(N,)`` uint8 codes (0 = not coloured)."""
        return position_codes(self.positions(scores))

    def value_at(self, position: float) -> float:
        """The value (in the scale's unit) shown at a colour position in [0, 1]."""
        if self.kind == "relative":
            return self.lo * (self.hi / self.lo) ** position
        return self.lo + position * (self.hi - self.lo)

    def text(self, value: float) -> str:
        """A value in this scale's unit as the legend and tooltip write it."""
        if self.kind == "relative":
            return f"×{_sig(value)}"
        if self.kind == "percentile":
            return f"{value:.0f}th pct"
        return _sig(value, 3)

    def code_texts(self) -> list[str]:
        """The 256 tooltip texts of the codes (code 0: the uncoloured rule in short)."""
        first = f"<×{_sig(self.lo)}" if self.kind == "relative" else "–"
        return [first] + [self.text(self.value_at((c - 1) / (LEVELS - 1))) for c in range(1, 256)]

    def legend(self) -> Legend:
        """Title, ticks and the uncoloured rule of this scale."""
        return _LEGENDS[self.kind](self)


def _finite(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size and not np.isfinite(s).all():
        raise AttentionError("attention", f"{int((~np.isfinite(s)).sum())} non-finite scores")
    return s


def percentile_ranks(scores: np.ndarray) -> np.ndarray:
    """``(N,)`` scores → average rank / (N − 1) × 100 (ties share a value; one patch: 50)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size < 2:
        return np.full(s.shape, 50.0)
    order = np.argsort(s, kind="stable")
    sorted_s = s[order]
    first = np.searchsorted(sorted_s, sorted_s, side="left")
    last = np.searchsorted(sorted_s, sorted_s, side="right") - 1
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = (first + last) / 2.0
    if sorted_s[0] == sorted_s[-1]:
        return np.full(s.shape, 50.0)
    return 100.0 * ranks / (s.size - 1)


def position_codes(positions: np.ndarray) -> np.ndarray:
    """``(N,)`` positions in [0, 1] (NaN = not coloured) → uint8 codes 0..255."""
    p = np.asarray(positions, dtype=np.float64)
    codes = 1 + np.rint(np.clip(np.nan_to_num(p, nan=0.0), 0.0, 1.0) * (LEVELS - 1))
    return np.where(np.isnan(p), 0, codes).astype(np.uint8)


def code_positions(codes: np.ndarray) -> np.ndarray:
    """uint8 codes → float32 positions in [0, 1] (NaN for code 0)."""
    c = np.asarray(codes).astype(np.float32)
    return np.where(c == 0, np.nan, (c - 1) / (LEVELS - 1)).astype(np.float32)


def code_lut(colormap: np.ndarray) -> np.ndarray:
    """A ``(256, 3)`` colormap table → the ``(256, 3)`` colour of each code (code 0 black,
    never drawn; code c the colormap at ``(c − 1) / 254``)."""
    table = np.asarray(colormap, dtype=np.float64)
    t = np.linspace(0.0, 1.0, table.shape[0])
    at = np.concatenate([[0.0], np.linspace(0.0, 1.0, LEVELS)])
    lut = np.stack([np.interp(at, t, table[:, c]) for c in range(3)], axis=1)
    lut[0] = 0
    return np.clip(np.rint(lut), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- fitting


def _fit_relative(rows: np.ndarray, per_label: bool) -> list[AttentionScale]:
    if not per_label:
        return [AttentionScale("relative", RELATIVE_FLOOR, RELATIVE_TOP, "fixed")] * len(rows)
    n = rows.shape[1]
    return [
        AttentionScale(
            "relative", RELATIVE_FLOOR, _nice_ceiling(max(float(r.max()) * n, 2.0)), "this label"
        )
        for r in rows
    ]


def _fit_percentile(rows: np.ndarray, per_label: bool) -> list[AttentionScale]:
    return [AttentionScale("percentile", 0.0, 100.0, "this label")] * len(rows)


def _fit_raw(rows: np.ndarray, per_label: bool) -> list[AttentionScale]:
    if per_label:
        return [AttentionScale("raw", float(r.min()), float(r.max()), "this label") for r in rows]
    lo, hi = float(rows.min()), float(rows.max())
    return [AttentionScale("raw", lo, hi, "every label of the level")] * len(rows)


@dataclass(frozen=True)
class ScaleKind:
    """One entry of :data:`SCALES`: a short description (help texts) and its fitting rule."""

    description: str
    fit: Callable[[np.ndarray, bool], list[AttentionScale]]


#: every scale by name; the first is the default
SCALES: dict[str, ScaleKind] = {
    "relative": ScaleKind(
        "attention × an average patch's (N·a), log scale ×1–×10 shared by every label; "
        "patches under ×1 uncoloured",
        _fit_relative,
    ),
    "percentile": ScaleKind(
        "rank among the slide's patches for each label (0–100); every label fills the range",
        _fit_percentile,
    ),
    "raw": ScaleKind(
        "attention weight, min–max of the level's labels (or of each label)", _fit_raw
    ),
}
DEFAULT_SCALE = next(iter(SCALES))


def check_scale(kind: str, where: str = "normalize") -> str:
    """``kind`` if it names a scale, else ConfigError naming ``where``."""
    if kind not in SCALES:
        raise ConfigError(where, f"unknown scale '{kind}' (choose from: {', '.join(SCALES)})")
    return kind


def fit_scales(rows: np.ndarray, kind: str, per_label: bool = False) -> list[AttentionScale]:
    """One scale per row of ``rows`` ``(K, N)`` (the attention of a level's K labels, after any
    smoothing). Shared scales (``per_label=False``) are the same object for every row, so K
    small pictures can be compared; percentile is per label by construction."""
    matrix = np.atleast_2d(np.asarray(rows, dtype=np.float64))
    if matrix.size and not np.isfinite(matrix).all():
        raise AttentionError("attention", f"{int((~np.isfinite(matrix)).sum())} non-finite scores")
    if matrix.shape[1] == 0:
        return [AttentionScale(kind, 0.0, 1.0)] * matrix.shape[0]
    return SCALES[check_scale(kind)].fit(matrix, per_label)


# --------------------------------------------------------------------------- legends


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 3, 5 × 10^k at or above ``value``."""
    exp = 10.0 ** math.floor(math.log10(value))
    return next(m * exp for m in (1, 2, 3, 5, 10) if m * exp >= value * (1 - 1e-9))


def _sig(value: float, digits: int = 2) -> str:
    """``value`` with ``digits`` significant digits, no trailing zeros or exponent for the
    usual ranges (23.4 → '23', 0.00081 → '0.00081')."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    return f"{float(f'{value:.{digits}g}'):g}" if abs(value) >= 1e-4 else f"{value:.{digits}g}"


def _relative_ticks(scale: AttentionScale) -> tuple[tuple[float, str], ...]:
    span = math.log(scale.hi / scale.lo)
    candidates: list[float] = []
    for exp in range(-1, 6):
        candidates += [m * 10.0**exp for m in ((1, 3) if span > math.log(20) else (1, 2, 5))]
    inside = [v for v in candidates if scale.lo * (1 - 1e-9) <= v <= scale.hi * (1 + 1e-9)]
    ticks = [(math.log(v / scale.lo) / span, f"×{_sig(v)}") for v in inside]
    if scale.scope == "fixed" and ticks:
        ticks[-1] = (ticks[-1][0], "≥" + ticks[-1][1])
    return tuple(ticks)


def _legend_relative(scale: AttentionScale) -> Legend:
    scope = " (this label's range)" if scale.scope == "this label" else ""
    return Legend(
        f"attention × an average patch's, log scale{scope}",
        _relative_ticks(scale),
        f"uncoloured: under ×{_sig(scale.lo)} (less than an average patch)",
    )


def _legend_percentile(scale: AttentionScale) -> Legend:
    ticks = tuple((p / 100, f"{p}") for p in (0, 25, 50, 75, 100))
    return Legend("percentile rank among this slide's patches, per label", ticks)


def _legend_raw(scale: AttentionScale) -> Legend:
    ticks = tuple((p, _sig(scale.value_at(p), 3)) for p in (0.0, 0.5, 1.0))
    return Legend(f"attention weight, min–max of {scale.scope or 'the label'}", ticks)


_LEGENDS: dict[str, Callable[[AttentionScale], Legend]] = {
    "relative": _legend_relative,
    "percentile": _legend_percentile,
    "raw": _legend_raw,
}


def distinct(scales: Sequence[AttentionScale]) -> tuple[list[AttentionScale], list[int]]:
    """The distinct scales of a level and, per label, the index of its scale (what the browser
    gets: one legend and text table per distinct scale, not per label)."""
    unique: list[AttentionScale] = []
    index: list[int] = []
    for scale in scales:
        if scale not in unique:
            unique.append(scale)
        index.append(unique.index(scale))
    return unique, index
