"""Does a bag belong to the slide it is about to be drawn on? One check for every caller.

A bag's coordinates are level-0 pixels of the slide it was tiled from; drawn over another slide
they land on the wrong tissue and the picture looks plausible, which is worse than an error. So
``hmil heatmap --slide`` and the viewer (run slides and uploads) all ask
:func:`check_bag_on_slide` before drawing.

What is compared depends on what the bag records on its ``coords`` (``hmil tile``/``hmil
extract`` write TRIDENT's names ``name``, ``level0_width``, ``level0_height`` and hmil's ``mpp``;
CLAM writes ``name`` only, other tools nothing):

* recorded level-0 size must equal the slide's (a different size is a different scan);
* recorded MPP must be within :data:`MPP_RTOL` of the slide's, when both are known;
* recorded ``name`` must equal the slide's id (its file stem). A name mismatch alone is what a
  renamed file looks like, the case the ``allow_mismatch`` override exists for;
* whatever is recorded, every patch's top-left corner must lie inside the slide: for bags that
  record nothing this coordinate extent is all that can be checked, and the note says so.

An attribute of the wrong type or an implausible value reads as "not recorded": a bag from an
unknown tool must never crash the check, only get a weaker one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from hmil.errors import BagError, SlideError
from hmil.slides.reader import PLAUSIBLE_MPP, slide_id_from_path

#: the ``coords`` attributes read (TRIDENT's names; ``mpp`` is hmil's addition)
NAME_ATTR, WIDTH_ATTR, HEIGHT_ATTR, MPP_ATTR = "name", "level0_width", "level0_height", "mpp"
#: recorded and slide MPP may differ by this fraction (readers round the metadata differently;
#: a 20x scan next to a 40x one differs by a factor 2)
MPP_RTOL = 0.02

MatchMethod = Literal["recorded", "extent"]
#: a recorded field or the coordinate extent, as named in :attr:`SlideMatch.mismatched`
Field = Literal["name", "size", "mpp", "extent"]


class SlideLike(Protocol):
    """What the check needs of a slide: :class:`hmil.slides.Slide` and :class:`SlideFacts`."""

    @property
    def path(self) -> Path: ...
    @property
    def slide_id(self) -> str: ...
    @property
    def dimensions(self) -> tuple[int, int]: ...
    @property
    def mpp(self) -> float | None: ...


@dataclass(frozen=True)
class SlideFacts:
    """A slide as the check sees it, for callers whose file name is not the slide's name.

    Attributes:
        path: the slide file (named in the error).
        slide_id: the id the bag's ``name`` must equal (the file stem).
        dimensions: level-0 ``(width, height)``.
        mpp: microns per level-0 pixel, None when unknown.
    """

    path: Path
    slide_id: str
    dimensions: tuple[int, int]
    mpp: float | None = None

    @classmethod
    def of(cls, slide: SlideLike, file_name: str | None = None) -> SlideFacts:
        """``slide``'s facts, its id taken from ``file_name`` when given: an upload saved under
        a temporary name keeps the name the user gave it (``upload.name``)."""
        sid = slide_id_from_path(file_name) if file_name else slide.slide_id
        return cls(Path(slide.path), sid, _dims(slide), slide.mpp)


def slide_attrs(slide: SlideLike) -> dict[str, object]:
    """The slide fields a bag records for ``slide`` (what :class:`RecordedSlide` reads back):
    ``name``, ``level0_width``, ``level0_height`` and ``mpp`` when the file states one."""
    w, h = _dims(slide)
    attrs: dict[str, object] = {NAME_ATTR: slide.slide_id, WIDTH_ATTR: w, HEIGHT_ATTR: h}
    if slide.mpp is not None:
        attrs[MPP_ATTR] = float(slide.mpp)
    return attrs


@dataclass(frozen=True)
class RecordedSlide:
    """The slide fields a bag records (None: absent or unusable)."""

    name: str | None = None
    size: tuple[int, int] | None = None
    mpp: float | None = None

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, object] | None) -> RecordedSlide:
        """Read the fields from a bag's attributes (:attr:`hmil.data.bags.Bag.attrs`)."""
        attrs = attrs if isinstance(attrs, Mapping) else {}
        width, height = _pixels(attrs.get(WIDTH_ATTR)), _pixels(attrs.get(HEIGHT_ATTR))
        return cls(
            name=_name(attrs.get(NAME_ATTR)),
            size=(width, height) if width is not None and height is not None else None,
            mpp=_mpp(attrs.get(MPP_ATTR)),
        )


@dataclass(frozen=True)
class SlideMatch:
    """What :func:`check_bag_on_slide` compared and found.

    Attributes:
        method: ``recorded`` (the bag's recorded name/size/MPP were compared with the slide,
            and its coordinate extent) or ``extent`` (the bag records none of them: only its
            coordinates were checked to lie inside the slide).
        compared: the recorded fields compared, in order ``name``, ``size``, ``mpp``.
        mismatched: the fields that disagree (``extent``: a patch starts outside the slide).
        note: one sentence saying what was checked, for a caption.
        problem: one line saying what does not match, None when everything does. Only seen
            by callers that passed ``allow_mismatch`` (the others get it as a
            :class:`SlideError`); a UI shows it as a warning.
    """

    method: MatchMethod
    compared: tuple[Field, ...]
    mismatched: tuple[Field, ...]
    note: str
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """Nothing disagrees."""
        return self.problem is None

    @property
    def renamed(self) -> bool:
        """Only the name disagrees: most likely the slide file was renamed."""
        return self.mismatched == ("name",)


def check_bag_on_slide(
    attrs: Mapping[str, object] | None,
    coords: np.ndarray | None,
    slide: SlideLike,
    *,
    allow_mismatch: bool = False,
) -> SlideMatch:
    """Check that a bag can be drawn on ``slide`` (the rules are in the module docstring).

    Args:
        attrs: the bag's attributes (``Bag.attrs``, ``Prediction.bag_attrs``); None = none.
        coords: ``(N, 2)`` level-0 top-left corners; None or empty skips the extent check.
        slide: an open :class:`hmil.slides.Slide`, or :meth:`SlideFacts.of` one with the
            name the user gave the file.
        allow_mismatch: report a mismatch in :attr:`SlideMatch.problem` instead of raising
            (the "the slide file was renamed: draw anyway" override).

    Returns:
        What was compared and, under ``allow_mismatch``, what did not match.

    Raises:
        SlideError: naming the slide file, with both slides' names and sizes, when something
            does not match and ``allow_mismatch`` is False.
        BagError: ``coords`` that are not ``(N, 2)`` finite numbers.
    """
    recorded = RecordedSlide.from_attrs(attrs)
    results = {key: same(recorded, slide) for key, same in _COMPARISONS.items()}
    compared = tuple(key for key, same in results.items() if same is not None)
    mismatched: list[Field] = [key for key in compared if not results[key]]
    span = _span(coords)
    if span is not None and not _inside(span, _dims(slide)):
        mismatched.append("extent")
    match = SlideMatch(
        method="recorded" if compared else "extent",
        compared=compared,
        mismatched=tuple(mismatched),
        note=_note(compared, slide),
        problem=_problem(tuple(mismatched), recorded, slide, span),
    )
    if match.problem is not None and not allow_mismatch:
        raise SlideError(slide.path, match.problem)
    return match


# --------------------------------------------------------------------------- the comparisons

#: field → "does the recorded value equal the slide's" (None: not recorded, or slide unknown)
_COMPARISONS: dict[Field, Callable[[RecordedSlide, SlideLike], bool | None]] = {
    "name": lambda r, s: None if r.name is None else r.name == s.slide_id,
    "size": lambda r, s: None if r.size is None else r.size == _dims(s),
    "mpp": lambda r, s: (
        None if r.mpp is None or s.mpp is None else math.isclose(r.mpp, s.mpp, rel_tol=MPP_RTOL)
    ),
}
_WORDS: dict[Field, str] = {"name": "slide name", "size": "level-0 size", "mpp": "MPP"}


def _name(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        return None
    return value if value.strip() else None


def _number(value: object) -> float | None:
    """A finite real number (bools and arrays are not numbers here)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _pixels(value: object) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number >= 1 and number.is_integer() else None


def _mpp(value: object) -> float | None:
    number, (lo, hi) = _number(value), PLAUSIBLE_MPP
    return number if number is not None and lo <= number <= hi else None


def _span(coords: np.ndarray | None) -> tuple[int, int, int, int] | None:
    """``(x_min, y_min, x_max, y_max)`` of the corners, None without any."""
    if coords is None:
        return None
    try:
        c = np.asarray(coords, dtype=np.float64)
    except (TypeError, ValueError):
        raise BagError("coords", "not numbers") from None
    if c.ndim != 2 or c.shape[1] != 2:
        raise BagError("coords", f"expected (N, 2) level-0 corners, got shape {c.shape}")
    if c.shape[0] == 0:
        return None
    if not np.isfinite(c).all():
        raise BagError("coords", "non-finite coordinates")
    (x0, y0), (x1, y1) = c.min(axis=0), c.max(axis=0)
    return (math.floor(x0), math.floor(y0), math.floor(x1), math.floor(y1))


def _inside(span: tuple[int, int, int, int], dimensions: tuple[int, int]) -> bool:
    x0, y0, x1, y1 = span
    w, h = dimensions
    return x0 >= 0 and y0 >= 0 and x1 < w and y1 < h


# --------------------------------------------------------------------------- the words


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]} px"


def _dims(slide: SlideLike) -> tuple[int, int]:
    w, h = slide.dimensions
    return (int(w), int(h))


def _slide_words(slide: SlideLike) -> str:
    return f"'{slide.slide_id}' ({_size(_dims(slide))})"


def _note(compared: tuple[Field, ...], slide: SlideLike) -> str:
    if not compared:
        return (
            "the bag records no slide name, size or MPP: only its coordinate extent could be "
            f"checked against slide {_slide_words(slide)}"
        )
    words = [_WORDS[key] for key in compared]
    listed = words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"
    return (
        f"compared the bag's recorded {listed} with slide {_slide_words(slide)}, "
        "and its coordinate extent"
    )


def _problem(
    mismatched: tuple[Field, ...],
    recorded: RecordedSlide,
    slide: SlideLike,
    span: tuple[int, int, int, int] | None,
) -> str | None:
    """The one line for a mismatch: the two slides' identities when a recorded field
    disagrees (the extent then disagrees for the same reason), else the extent."""
    if not mismatched:
        return None
    if mismatched == ("extent",) and span is not None:
        x0, y0, x1, y1 = span
        return (
            f"the bag's patch corners span ({x0}, {y0})–({x1}, {y1}), outside slide "
            f"{_slide_words(slide)}"
        )
    return _identity_problem(recorded, slide, show_mpp="mpp" in mismatched)


def _identity_problem(recorded: RecordedSlide, slide: SlideLike, show_mpp: bool) -> str:
    """The line ``the bag was tiled from slide 'A' (…), this is 'B' (…)``: the sizes, and the
    MPPs when they are what differs, so the reader sees why at once."""
    ours = [_size(recorded.size)] if recorded.size is not None else []
    theirs = [_size(_dims(slide))]
    if show_mpp:
        ours.append(f"{recorded.mpp:g} µm/px")
        theirs.append(f"{slide.mpp:g} µm/px")
    source = f"slide '{recorded.name}'" if recorded.name is not None else "a slide"
    if ours:
        source += f" ({', '.join(ours)})"
    return f"the bag was tiled from {source}, this is '{slide.slide_id}' ({', '.join(theirs)})"
