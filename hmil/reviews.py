"""Pathologists' verdicts on slides of a run, kept in ``RUN/reviews.jsonl`` (docs/review.md).

One JSON object per change, appended and never rewritten: the file is the history of every
verdict, and the latest record per slide and reviewer is what counts. Appends open the file
with ``O_APPEND``, hold an exclusive ``flock`` while they write one whole line, and ``fsync``
before returning, so two viewers (or a viewer and a script) appending at once lose nothing and
a crash leaves at most one torn last line. The reader never fails on a line it cannot use (a
hand edit, a torn line): it skips it and reports ``reviews.jsonl line N: <problem>``.

:func:`export_labels` turns the corrections (``label_error`` verdicts) into a label table in
the project's labels format (docs/formats.md), next to the original, which is never modified.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hmil.data.tables import read_text_table
from hmil.errors import LabelError, ReviewError
from hmil.io import write_text_atomic

REVIEWS_FILE = "reviews.jsonl"
VERDICTS = ("agree", "label_error", "model_error", "ambiguous")
#: what each verdict means, for the viewer's panel and the docs
VERDICT_TEXT = {
    "agree": "agree with the label",
    "label_error": "the label is wrong",
    "model_error": "the model is wrong",
    "ambiguous": "ambiguous slide",
}
MAX_REVIEWER = 40
#: a reviewer name: letters (any script), digits, space and . _ ' - ; 1 to MAX_REVIEWER long
REVIEWER_PATTERN = re.compile(r"[^\W_][\w .'\-]*")
MAX_COMMENT = 2000
#: columns the export adds to the label table
EXPORT_COLUMNS = ("original_label", "corrected_by")
FIELDS = ("slide_id", "verdict", "label", "reviewer", "comment", "time", "checkpoint")


@dataclass(frozen=True)
class Review:
    """One verdict on one slide by one reviewer.

    Attributes:
        slide_id: the slide reviewed (an id of the run's label table).
        verdict: one of :data:`VERDICTS`.
        label: the corrected fine label for ``label_error``, else None.
        reviewer: who gave the verdict (:func:`check_reviewer`).
        comment: free text (shown escaped, never as markup).
        time: when, ISO 8601 UTC (``2026-01-31T12:00:00+00:00``).
        checkpoint: the fold checkpoint the reviewer saw, relative to the run ('' when none).
        checkpoint_sha256: that file's SHA-256 ('' when not computed).
    """

    slide_id: str
    verdict: str
    label: str | None
    reviewer: str
    comment: str = ""
    time: str = ""
    checkpoint: str = ""
    checkpoint_sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "slide_id": self.slide_id,
            "verdict": self.verdict,
            "label": self.label,
            "reviewer": self.reviewer,
            "comment": self.comment,
            "time": self.time,
            "checkpoint": self.checkpoint,
            "checkpoint_sha256": self.checkpoint_sha256,
        }

    @property
    def corrected_label(self) -> str | None:
        """The label this verdict asks the table to carry (None: keep the table's)."""
        return self.label if self.verdict == "label_error" else None


def now_iso() -> str:
    """The current time, ISO 8601 UTC to the second."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def check_reviewer(name: str) -> str:
    """``name`` stripped, or :class:`ReviewError` when it is empty, longer than
    :data:`MAX_REVIEWER` or holds other characters than letters, digits, space and ``. _ ' -``."""
    value = str(name).strip()
    if not value:
        raise ReviewError("reviewer", "a reviewer name is needed")
    if len(value) > MAX_REVIEWER:
        raise ReviewError("reviewer", f"at most {MAX_REVIEWER} characters, got {len(value)}")
    if not REVIEWER_PATTERN.fullmatch(value):
        raise ReviewError(
            "reviewer", "letters, digits, spaces and . _ ' - only, starting with a letter or digit"
        )
    return value


def make_review(
    slide_id: str,
    verdict: str,
    reviewer: str,
    *,
    label: str | None = None,
    comment: str = "",
    checkpoint: str = "",
    checkpoint_sha256: str = "",
    fine_labels: Sequence[str] | None = None,
    time: str | None = None,
) -> Review:
    """A checked :class:`Review` (time: now).

    Raises:
        ReviewError: an empty slide id, an unknown verdict, a ``label_error`` without a label
            (or with one not in ``fine_labels``), a label on another verdict, a bad reviewer
            name, a comment over :data:`MAX_COMMENT` characters.
    """
    problem = _problem(slide_id, verdict, label, comment, fine_labels)
    if problem:
        raise ReviewError(slide_id or "slide_id", problem)
    return Review(
        slide_id=str(slide_id),
        verdict=verdict,
        label=label if verdict == "label_error" else None,
        reviewer=check_reviewer(reviewer),
        comment=str(comment),
        time=time or now_iso(),
        checkpoint=str(checkpoint),
        checkpoint_sha256=str(checkpoint_sha256),
    )


def _problem(
    slide_id: Any, verdict: Any, label: Any, comment: Any, fine_labels: Sequence[str] | None
) -> str:
    if not isinstance(slide_id, str) or not slide_id.strip():
        return "slide_id must be a non-empty string"
    if verdict not in VERDICTS:
        return f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}"
    if verdict == "label_error":
        if not isinstance(label, str) or not label:
            return "a label_error needs the corrected fine label"
        if fine_labels is not None and label not in fine_labels:
            return f"label {label!r} is not a fine class ({', '.join(fine_labels)})"
    elif label is not None:
        return f"only a label_error carries a label, got {label!r} with {verdict}"
    if not isinstance(comment, str):
        return "comment must be a string"
    if len(comment) > MAX_COMMENT:
        return f"comment longer than {MAX_COMMENT} characters"
    return ""


def reviews_path(run: str | Path) -> Path:
    """``RUN/reviews.jsonl``."""
    return Path(run) / REVIEWS_FILE


def append_review(run: str | Path, review: Review) -> Path:
    """Append ``review`` as one line to ``RUN/reviews.jsonl`` (created when missing).

    ``O_APPEND`` under an exclusive ``flock``; a last line left without its newline (a crash
    mid-write, a hand edit) gets one first, so the new record starts a line of its own;
    ``fsync`` before returning. The run directory must exist: nothing is written elsewhere.
    """
    folder = Path(run)
    if not folder.is_dir():
        raise ReviewError(folder, "not a run directory")
    path = reviews_path(folder)
    if path.is_symlink():
        raise ReviewError(path, "is a link; reviews are written inside the run only")
    data = (json.dumps(review.to_dict(), ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return path


@dataclass(frozen=True)
class ReviewLog:
    """What ``reviews.jsonl`` holds: its usable records in file order, and one line per line
    skipped (``reviews.jsonl line N: <problem>``)."""

    reviews: tuple[Review, ...]
    problems: tuple[str, ...]


def parse_line(line: str, fine_labels: Sequence[str] | None = None) -> Review:
    """One line of ``reviews.jsonl`` as a :class:`Review`; ValueError says what is wrong."""
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    missing = [f for f in FIELDS if f not in raw]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    problem = _problem(raw["slide_id"], raw["verdict"], raw["label"], raw["comment"], fine_labels)
    if problem:
        raise ValueError(problem)
    for name in ("reviewer", "time", "checkpoint"):
        if not isinstance(raw[name], str):
            raise ValueError(f"{name} must be a string")
    try:
        reviewer = check_reviewer(raw["reviewer"])
    except ReviewError as exc:
        raise ValueError(f"reviewer: {exc.problem}") from None
    try:
        _dt.datetime.fromisoformat(raw["time"])
    except ValueError:
        raise ValueError(f"time is not ISO 8601: {raw['time'][:40]!r}") from None
    sha = raw.get("checkpoint_sha256") or ""
    return Review(
        slide_id=raw["slide_id"],
        verdict=raw["verdict"],
        label=raw["label"] if raw["verdict"] == "label_error" else None,
        reviewer=reviewer,
        comment=raw["comment"],
        time=raw["time"],
        checkpoint=raw["checkpoint"],
        checkpoint_sha256=str(sha),
    )


def read_reviews(run: str | Path, fine_labels: Sequence[str] | None = None) -> ReviewLog:
    """Every usable record of ``RUN/reviews.jsonl`` (none when the file is missing).

    A line that is not a record (bad JSON, a field missing or of the wrong kind, an unknown
    verdict, a label not among ``fine_labels``, bytes that are not UTF-8) is skipped and
    reported; blank lines are ignored.
    """
    path = reviews_path(run)
    if not path.is_file():
        return ReviewLog((), ())
    reviews: list[Review] = []
    problems: list[str] = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            reviews.append(parse_line(raw.decode("utf-8"), fine_labels))
        except UnicodeDecodeError:
            problems.append(f"{REVIEWS_FILE} line {number}: not UTF-8 text")
        except ValueError as exc:
            problems.append(f"{REVIEWS_FILE} line {number}: {exc}")
    return ReviewLog(tuple(reviews), tuple(problems))


def latest(reviews: Iterable[Review]) -> dict[tuple[str, str], Review]:
    """``(slide_id, reviewer) -> Review``: the last record of each pair in file order (the
    order of the appends; clocks of two machines may disagree)."""
    out: dict[tuple[str, str], Review] = {}
    for review in reviews:
        out.pop((review.slide_id, review.reviewer), None)  # keep file order of the latest
        out[(review.slide_id, review.reviewer)] = review
    return out


def by_slide(current: Mapping[tuple[str, str], Review]) -> dict[str, list[Review]]:
    """``slide_id -> [latest review of each reviewer]`` (reviewers in name order)."""
    out: dict[str, list[Review]] = {}
    for (slide_id, _), review in sorted(current.items()):
        out.setdefault(slide_id, []).append(review)
    return out


def disagreements(current: Mapping[tuple[str, str], Review]) -> dict[str, list[Review]]:
    """Slides whose reviewers' latest verdicts differ (verdict, or corrected label)."""
    return {
        slide_id: reviews
        for slide_id, reviews in by_slide(current).items()
        if len({(r.verdict, r.label) for r in reviews}) > 1
    }


#: the review status of a slide nobody reviewed, and of one whose reviewers disagree
UNREVIEWED = "unreviewed"
DISPUTED = "disputed"
STATUSES = (UNREVIEWED, *VERDICTS, DISPUTED)


def slide_status(current: Mapping[tuple[str, str], Review]) -> dict[str, str]:
    """``slide_id -> status``: the verdict the reviewers share, or :data:`DISPUTED`; slides
    without a review are absent (:data:`UNREVIEWED`)."""
    out = {}
    for slide_id, reviews in by_slide(current).items():
        kinds = {(r.verdict, r.label) for r in reviews}
        out[slide_id] = reviews[0].verdict if len(kinds) == 1 else DISPUTED
    return out


def corrections(
    current: Mapping[tuple[str, str], Review], reviewer: str | None = None
) -> tuple[dict[str, tuple[str, list[str]]], dict[str, list[Review]]]:
    """The labels the reviews ask for: ``(slide_id -> (label, reviewers), conflicts)``.

    A slide is corrected when its reviewers' latest verdicts agree on one label_error label.
    Reviewers whose latest verdicts ask for different labels (one corrects, another keeps the
    table's label or corrects differently) are a conflict; ``reviewer`` settles the conflicts
    on the slides that reviewer reviewed: that reviewer's verdict wins there.
    """
    fixed: dict[str, tuple[str, list[str]]] = {}
    conflicts: dict[str, list[Review]] = {}
    for slide_id, reviews in by_slide(current).items():
        wanted = {r.corrected_label for r in reviews}
        if len(wanted) > 1:
            mine = [r for r in reviews if r.reviewer == reviewer]
            if not mine:
                conflicts[slide_id] = reviews
                continue
            reviews, wanted = mine, {mine[0].corrected_label}
        (label,) = wanted
        if label is not None:
            fixed[slide_id] = (label, [r.reviewer for r in reviews if r.corrected_label])
    return fixed, conflicts


def describe(review: Review) -> str:
    """``reviewer: verdict [→ label]`` for listings."""
    label = f" → {review.label}" if review.label else ""
    return f"{review.reviewer}: {review.verdict}{label}"


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_labels` wrote: the table, the slides changed, and the reviewed
    slides the table does not hold (their corrections could not be applied)."""

    path: Path
    changed: tuple[str, ...]
    unknown: tuple[str, ...]


def export_labels(
    source: str | Path,
    fixed: Mapping[str, tuple[str, Sequence[str]]],
    out: str | Path,
    fine_labels: Sequence[str],
) -> ExportResult:
    """Write ``source`` (a label table) to ``out`` with the corrections ``fixed`` applied.

    Every column and row of ``source`` is kept in order; ``label`` takes the corrected label,
    ``original_label`` the label it replaced and ``corrected_by`` the reviewers (``;``
    between names) on the rows changed, both empty elsewhere (a table exported before keeps
    its earlier ``original_label``). Written atomically; ``source`` is only read.

    Raises:
        LabelError: ``source`` cannot be read, has no ``slide_id``/``label`` column, or a
            corrected label is not one of ``fine_labels``.
        ReviewError: ``out`` is ``source``.
    """
    src, dst = Path(source), Path(out)
    if dst.resolve() == src.resolve():
        raise ReviewError(dst, "is the original label table; write the corrections elsewhere")
    table = read_text_table(src, LabelError, "label table")
    for column in ("slide_id", "label"):
        if column not in table.columns:
            raise LabelError(src, f"missing column {column}")
    for column in EXPORT_COLUMNS:
        if column not in table.columns:
            table[column] = ""
    index = {str(s).strip(): i for i, s in enumerate(table["slide_id"])}
    changed, unknown = [], []
    for slide_id, (label, reviewers) in sorted(fixed.items()):
        if label not in fine_labels:
            raise LabelError(src, f"corrected label {label!r} of slide {slide_id!r} is not a "
                             f"fine class ({', '.join(fine_labels)})")  # fmt: skip
        row = index.get(slide_id)
        if row is None:
            unknown.append(slide_id)
            continue
        old = str(table.at[row, "label"]).strip()
        if old == label:
            continue
        if not table.at[row, "original_label"]:
            table.at[row, "original_label"] = old
        table.at[row, "label"] = label
        table.at[row, "corrected_by"] = ";".join(reviewers)
        changed.append(slide_id)
    write_text_atomic(dst, table.to_csv(index=False))
    return ExportResult(dst, tuple(changed), tuple(unknown))


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes (a checkpoint a verdict was given under)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
