"""A reviewer's verdicts on a run as one shareable page: ``hmil reviews report`` and the viewer's
download (docs/review.md, "Report").

A pathologist's review lives in ``RUN/reviews.jsonl`` (:mod:`hmil.reviews`), which nobody
outside the project reads. This module turns the latest verdict of each slide by one reviewer
into a self-contained HTML page (images inline as base64 PNG, no external URL, every text
escaped, so it can be mailed or archived as one file) and a CSV of the same rows.

Each reviewed slide gets a thumbnail of the attention of its predicted fine label (and of its
true label when they differ), drawn by the one overlay engine (:mod:`hmil.overlay`) on the
honest relative scale (:mod:`hmil.attention_scale`, ×1–×10 of an average patch's share, under
×1 uncoloured) with that scale's legend, and the regions saved for the slide
(:mod:`hmil.regions`) outlined in their class colours. The attention comes from the fold
checkpoint whose test set held the slide out (its ``predictions.csv`` says which), so the
picture is an out-of-sample one, as the slide page shows it.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from hmil import reviews
from hmil.errors import HMILError, ReviewError, RunError
from hmil.geojson import class_order
from hmil.overlay import HeatmapStyle, draw_legend, level_codes, render_codes, whole_region
from hmil.reviews import Review
from hmil.slides.reader import fit_size

#: the longer side of a thumbnail, legend included (pixels)
THUMB_SIDE = 480
#: height of the canvas the legend is drawn on before it is cropped to its box (pixels)
LEGEND_CANVAS = 120
#: width of a region's outline in the thumbnail (pixels), drawn over a dark edge 2 px wider
OUTLINE_WIDTH = 2
HALO = (40, 40, 40)
#: the CSV's columns, one row per reviewed slide
CSV_COLUMNS = (
    "slide_id",
    "fold",
    "true_fine",
    "pred_fine",
    "confidence",
    "verdict",
    "corrected_label",
    "comment",
    "time",
    "checkpoint",
)
#: the columns of ``disagreements.csv``, one row per reviewer of a disputed slide
DISAGREEMENT_COLUMNS = ("slide_id", "reviewer", "verdict", "corrected_label", "comment", "time")
DISAGREEMENTS = "disagreements"
#: slide file suffixes looked for beside the cohort (``<folder>/slides/<id><suffix>``)
SLIDE_SUFFIXES = (
    ".tiff",
    ".tif",
    ".svs",
    ".ndpi",
    ".mrxs",
    ".scn",
    ".bif",
    ".vms",
    ".svslide",
    ".ome.tiff",
    ".ome.tif",
)

SlideFinder = Callable[[str], Path | None]


# --------------------------------------------------------------------------- names


def safe_name(reviewer: str, taken: Iterable[str] = ()) -> str:
    """A file name stem for ``reviewer``: never a path, never hidden, never the name of the
    disagreements file, and not equal (ignoring case) to a stem in ``taken``.

    Letters of any script, digits, ``.``, ``_`` and ``-`` are kept (NFKC-normalised); every
    other run of characters becomes ``_``. A stem that would clash gets ``-`` and 8 hex digits
    of the name's SHA-256, so two reviewers never share a file.
    """
    text = unicodedata.normalize("NFKC", str(reviewer))
    stem = re.sub(r"[^\w.\-]+", "_", text, flags=re.UNICODE).strip("._-")[:60] or "reviewer"
    used = {t.casefold() for t in taken}
    if stem.casefold() in used or stem.casefold() == DISAGREEMENTS:
        stem = f"{stem}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:8]}"
    return stem


def _printable(text: str) -> str:
    """``text`` with control characters other than line breaks and tabs shown as spaces."""
    return "".join(c if c.isprintable() or c in "\n\t" else " " for c in str(text))


def _e(text: object) -> str:
    """HTML-escaped, printable text (quotes too: safe in attributes)."""
    return html.escape(_printable(str(text)), quote=True)


# --------------------------------------------------------------------------- the run's tables


@dataclass(frozen=True)
class Predicted:
    """One row of a fold's ``predictions.csv``: the fold that held the slide out."""

    fold: int
    true_fine: str
    pred_fine: str
    confidence: float | None


def held_out_predictions(run: str | Path) -> dict[str, Predicted]:
    """``slide_id -> Predicted`` over every fold's ``predictions.csv`` (first fold wins)."""
    from hmil.data.tables import read_text_table
    from hmil.train.runs import fold_paths, list_folds

    out: dict[str, Predicted] = {}
    for fold in list_folds(run):
        path = fold_paths(run, fold).predictions
        if not path.is_file():
            continue
        table = read_text_table(path, RunError, "predictions")
        for column in ("slide_id", "true_fine", "pred_fine"):
            if column not in table.columns:
                raise RunError(path, f"missing column {column}")
        confidence = table["confidence"] if "confidence" in table.columns else [""] * len(table)
        for sid, true, pred, conf in zip(
            table["slide_id"], table["true_fine"], table["pred_fine"], confidence, strict=True
        ):
            out.setdefault(str(sid).strip(), Predicted(fold, str(true), str(pred), _float(conf)))
    return out


def _float(value: object) -> float | None:
    try:
        number = float(str(value))
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def cohort_slide_finder(folders: Sequence[Path]) -> SlideFinder:
    """Look a slide file up as ``<folder>/slides/<id><suffix>`` or ``<folder>/<id><suffix>``."""

    def find(slide_id: str) -> Path | None:
        if not slide_id or "/" in slide_id or "\\" in slide_id or slide_id.startswith("."):
            return None
        for folder in folders:
            for sub in (folder / "slides", folder):
                for suffix in SLIDE_SUFFIXES:
                    candidate = sub / f"{slide_id}{suffix}"
                    if candidate.is_file():
                        return candidate
        return None

    return find


# --------------------------------------------------------------------------- pictures


@dataclass(frozen=True)
class Picture:
    """One thumbnail: the attention of ``label`` with its legend, as PNG bytes."""

    label: str
    role: str  # "predicted" or "true"
    png: bytes
    size: tuple[int, int]  # (W, H)

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def png_bytes(image: np.ndarray) -> bytes:
    """``(H, W, 3)`` uint8 → PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def legend_strip(legend: Any, cmap: str, label: str, width: int = THUMB_SIDE) -> np.ndarray:
    """``(h, width, 3)`` uint8: the overlay engine's legend box (:func:`hmil.overlay.draw_legend`)
    drawn on white and cropped to the box, to sit under a thumbnail instead of hiding part of
    it."""
    canvas = np.full((LEGEND_CANVAS, width, 3), 255, dtype=np.uint8)
    drawn = draw_legend(canvas, legend, cmap, label)
    rows = np.flatnonzero((drawn != 255).any(axis=(1, 2)))
    top = max(int(rows[0]) - 4, 0) if rows.size else 0
    return np.ascontiguousarray(drawn[top:])


def attention_picture(
    matrix: np.ndarray,
    names: Sequence[str],
    label: str,
    coords: np.ndarray,
    patch_size: float,
    *,
    slide: Any = None,
    outlines: Sequence[tuple[Sequence[Sequence[Sequence[float]]], tuple[int, int, int]]] = (),
    style: HeatmapStyle | None = None,
    side: int = THUMB_SIDE,
) -> np.ndarray:
    """The thumbnail of one label: slide (or a white canvas of the bag's extent), attention
    coded on the level's shared scale, region outlines, and the legend strip under it.

    Args:
        matrix: ``(K, N)`` attention of the level's K labels (rows sum to 1).
        names: the K label names, in ``matrix``'s order.
        label: the label drawn.
        coords: ``(N, 2)`` level-0 top-left corners.
        patch_size: level-0 patch side.
        slide: an open :class:`hmil.slides.Slide`, or None for the blank canvas.
        outlines: ``(parts, colour)`` per region: exterior rings ``[[x, y], ...]`` in level-0
            pixels (:meth:`hmil.regions.Region.outline`) and an RGB colour.
        side: longer side of the whole picture, legend included.

    Returns:
        ``(H, W, 3)`` uint8 with ``max(H, W) <= side``.
    """
    style = style or HeatmapStyle()
    coded = level_codes(matrix, coords, patch_size, style)
    index = list(names).index(label)
    strip = legend_strip(coded.legend(index), style.cmap, label, width=side)
    # every thumbnail of a page gets the strip of a two-line title, so pictures share a size
    tallest = legend_strip(coded.legend(index), style.cmap, "W" * 80, width=side).shape[0]
    if strip.shape[0] < tallest:
        white = np.full((tallest - strip.shape[0], *strip.shape[1:]), 255, dtype=np.uint8)
        strip = np.concatenate([white, strip])
    region = whole_region(coords, patch_size, slide)
    room = side - strip.shape[0]
    longest = max(region.w, region.h)
    max_size = max(1, min(side, math.floor(room * longest / region.h)))
    image = render_codes(coded.codes[index], coords, patch_size, style, slide, max_size)
    out_w, out_h = fit_size(region.w, region.h, max_size)
    if outlines:
        canvas = Image.fromarray(np.ascontiguousarray(image))
        draw = ImageDraw.Draw(canvas)
        sx, sy = out_w / region.w, out_h / region.h
        for parts, colour in outlines:
            for ring in parts:
                points = [((x - region.x) * sx, (y - region.y) * sy) for x, y in ring]
                if len(points) >= 2:  # a dark edge first: light class colours show on pink
                    draw.line([*points, points[0]], fill=HALO, width=OUTLINE_WIDTH + 2)
                    draw.line([*points, points[0]], fill=tuple(colour), width=OUTLINE_WIDTH)
        image = np.asarray(canvas)
    width = max(image.shape[1], strip.shape[1])
    out = np.full((image.shape[0] + strip.shape[0], width, 3), 255, dtype=np.uint8)
    left = (width - image.shape[1]) // 2
    out[: image.shape[0], left : left + image.shape[1]] = image
    out[image.shape[0] :, : strip.shape[1]] = strip
    return out


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class RegionNote:
    """A region outlined in a thumbnail, for the page's key."""

    name: str
    classification: str
    colour: tuple[int, int, int]


@dataclass(frozen=True)
class ReportSlide:
    """One reviewed slide of a report.

    Attributes:
        review: the reviewer's latest verdict on the slide.
        fold: the fold whose test set held the slide (None: in no ``predictions.csv``).
        true_fine, pred_fine, confidence: from that fold's ``predictions.csv`` (the true label
            from the label table, the prediction from the model, when the slide is in none).
        attention_checkpoint: the checkpoint the thumbnails' attention came from, relative to
            the run ('' when none was drawn).
        pictures: the thumbnails (predicted label first).
        regions: the regions outlined in them.
        note: what the page says about the pictures (a slide file not found, no bag...).
    """

    review: Review
    fold: int | None
    true_fine: str
    pred_fine: str
    confidence: float | None
    attention_checkpoint: str = ""
    pictures: tuple[Picture, ...] = ()
    regions: tuple[RegionNote, ...] = ()
    note: str = ""

    def row(self) -> dict[str, str]:
        """The CSV row (:data:`CSV_COLUMNS`)."""
        r = self.review
        return {
            "slide_id": r.slide_id,
            "fold": "" if self.fold is None else str(self.fold),
            "true_fine": self.true_fine,
            "pred_fine": self.pred_fine,
            "confidence": "" if self.confidence is None else f"{self.confidence:.6g}",
            "verdict": r.verdict,
            "corrected_label": r.corrected_label or "",
            "comment": r.comment,
            "time": r.time,
            "checkpoint": r.checkpoint,
        }


@dataclass(frozen=True)
class ReviewReport:
    """One reviewer's report on a run."""

    run_name: str
    reviewer: str
    written: str
    slides: tuple[ReportSlide, ...]
    problems: tuple[str, ...] = ()

    def verdict_counts(self) -> dict[str, int]:
        """``verdict -> slides`` for every verdict (0 included), in :data:`VERDICTS` order."""
        counts = Counter(s.review.verdict for s in self.slides)
        return {v: counts.get(v, 0) for v in reviews.VERDICTS}

    def corrections(self) -> list[tuple[str, str, str]]:
        """``(slide_id, original, corrected)`` of the ``label_error`` verdicts."""
        return [
            (s.review.slide_id, s.true_fine, s.review.corrected_label or "")
            for s in self.slides
            if s.review.corrected_label
        ]

    def csv_text(self) -> str:
        return _csv([s.row() for s in self.slides], CSV_COLUMNS)

    def html(self) -> str:
        return render_html(self)


def _csv(rows: Sequence[Mapping[str, str]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


@dataclass
class ReportSource:
    """What a report reads from a run, loaded once and shared by every reviewer's report.

    Attributes:
        run: the run directory.
        find_slide: slide id → slide file (None: not found); the CLI searches beside the
            cohort, the viewer only under its data roots.
        readable: whether a file outside the run (a bag, the label table) may be read (None:
            any); the viewer allows its data roots only.
        device: where the fold checkpoints predict (``auto``: CUDA when present).
        pictures: draw the thumbnails (False: tables only, fast).
    """

    run: Path
    find_slide: SlideFinder | None = None
    readable: Callable[[Path], bool] | None = None
    device: str = "auto"
    pictures: bool = True
    hierarchy: Any = field(default=None, init=False, repr=False)
    _config: Any = field(default=None, init=False, repr=False)
    _held: dict[str, Predicted] | None = field(default=None, init=False, repr=False)
    _labels: dict[str, str] | None = field(default=None, init=False, repr=False)
    _predictors: dict[Path, Any] = field(default_factory=dict, init=False, repr=False)
    _cache: dict[str, ReportSlide] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        from hmil.hierarchy import Hierarchy
        from hmil.train.runs import load_run_config

        self.run = Path(self.run)
        self._config = load_run_config(self.run)
        self.hierarchy = Hierarchy.resolve(self._config.data.hierarchy)
        if self.find_slide is None:
            folders = [
                Path(p).parent for p in (self._config.data.labels, self._config.data.features) if p
            ]
            self.find_slide = cohort_slide_finder(list(dict.fromkeys(folders)))

    def log(self) -> reviews.ReviewLog:
        return reviews.read_reviews(self.run, self.hierarchy.fine)

    def held(self) -> dict[str, Predicted]:
        if self._held is None:
            self._held = held_out_predictions(self.run)
        return self._held

    def table_labels(self) -> dict[str, str]:
        """``slide_id -> label`` of the run's label table ({} when it cannot be read)."""
        if self._labels is None:
            from hmil.data.tables import read_text_table
            from hmil.errors import LabelError

            self._labels = {}
            if not self._may_read(Path(self._config.data.labels)):
                return self._labels
            try:
                table = read_text_table(self._config.data.labels, LabelError, "label table")
            except HMILError:
                return self._labels
            if {"slide_id", "label"} <= set(table.columns):
                self._labels = {
                    str(s).strip(): str(v).strip()
                    for s, v in zip(table["slide_id"], table["label"], strict=True)
                }
        return self._labels

    def slide(self, review: Review) -> ReportSlide:
        """The report entry of ``review`` (pictures cached per slide across reviewers)."""
        base = self._cache.get(review.slide_id)
        if base is None:
            base = self._entry(review)
            self._cache[review.slide_id] = base
        return ReportSlide(
            review,
            base.fold,
            base.true_fine,
            base.pred_fine,
            base.confidence,
            base.attention_checkpoint,
            base.pictures,
            base.regions,
            base.note,
        )

    def _may_read(self, path: Path) -> bool:
        return self.readable is None or self.readable(path)

    def _checkpoint(self, review: Review, fold: int | None) -> Path | None:
        from hmil.train.runs import fold_paths

        if fold is not None and fold_paths(self.run, fold).checkpoint.is_file():
            return fold_paths(self.run, fold).checkpoint
        if review.checkpoint:  # the checkpoint the reviewer saw, when it lies inside the run
            path = (self.run / review.checkpoint).resolve()
            if path.is_file() and path.is_relative_to(self.run.resolve()):
                return path
        return None

    def _entry(self, review: Review) -> ReportSlide:
        held = self.held().get(review.slide_id)
        true_fine = held.true_fine if held else self.table_labels().get(review.slide_id, "")
        entry = ReportSlide(
            review,
            held.fold if held else None,
            true_fine,
            held.pred_fine if held else "",
            held.confidence if held else None,
        )
        if not self.pictures:
            return entry
        checkpoint = self._checkpoint(review, entry.fold)
        if checkpoint is None:
            return _with(entry, note="no fold checkpoint holds this slide out: no attention drawn")
        try:
            return self._draw(entry, checkpoint)
        except HMILError as exc:
            return _with(entry, note=f"no attention drawn: {exc.where}: {exc.problem}")

    def _predictor(self, checkpoint: Path) -> Any:
        if checkpoint not in self._predictors:
            from hmil.predict import load_checkpoint

            self._predictors[checkpoint] = load_checkpoint(checkpoint, device=self.device)
        return self._predictors[checkpoint]

    def _draw(self, entry: ReportSlide, checkpoint: Path) -> ReportSlide:
        from hmil.data.bags import find_bag, level0_coords
        from hmil.errors import BagError

        slide_id = entry.review.slide_id
        bag = find_bag(self._config.data.features, slide_id) if self._config.data.features else None
        if bag is None:
            return _with(
                entry, note="no bag of this slide in the run's features folder: no attention drawn"
            )
        if not self._may_read(bag):
            note = "the slide's bag lies outside the readable folders: no attention drawn"
            return _with(entry, note=note)
        pred = self._predictor(checkpoint).predict(bag, attention=True, slide_id=slide_id)
        if pred.coords is None or pred.attention is None:
            raise BagError(bag, "the bag has no patch coordinates: no attention picture")
        coords, patch = level0_coords(pred.coords, pred.bag_attrs, None, bag)
        names = list(pred.hierarchy.fine)
        pred_fine = entry.pred_fine or pred.fine_pred
        confidence = entry.confidence
        if confidence is None and not entry.pred_fine:
            confidence = float(np.max(pred.fine_probs))
        labels = [("predicted", pred_fine)]
        if entry.true_fine in names and entry.true_fine != pred_fine:
            labels.append(("true", entry.true_fine))
        regions = _regions(self.run, slide_id, class_order(pred.hierarchy))
        outlines = [(r.outline(), r.colour) for r in regions]
        slide, note = self._open_slide(slide_id, pred.bag_attrs, coords)
        try:
            pictures = []
            for role, label in labels:
                if label not in names:
                    continue
                image = attention_picture(
                    pred.attention["fine"],
                    names,
                    label,
                    coords,
                    patch,
                    slide=slide,
                    outlines=outlines,
                )
                pictures.append(
                    Picture(label, role, png_bytes(image), (image.shape[1], image.shape[0]))
                )
        finally:
            if slide is not None:
                slide.close()
        return ReportSlide(
            entry.review,
            entry.fold,
            entry.true_fine,
            pred_fine,
            confidence,
            _relative(checkpoint, self.run),
            tuple(pictures),
            tuple(RegionNote(r.name, r.classification, tuple(r.colour)) for r in regions),
            note,
        )

    def _open_slide(self, slide_id: str, attrs: Any, coords: np.ndarray) -> tuple[Any, str]:
        """The open slide, or None and why the attention is drawn on a blank canvas."""
        from hmil.slides.match import check_bag_on_slide
        from hmil.slides.reader import open_slide

        path = self.find_slide(slide_id) if self.find_slide else None
        blank = "attention drawn on a blank canvas of the bag's extent"
        if path is None:
            return None, f"slide file not found: {blank}"
        try:
            slide = open_slide(path)
        except (HMILError, OSError) as exc:
            return None, f"slide file {path.name} could not be opened ({_short(exc)}): {blank}"
        try:
            check_bag_on_slide(attrs or {}, coords, slide)
        except HMILError as exc:
            slide.close()
            return None, f"slide file {path.name} does not match the bag ({_short(exc)}): {blank}"
        return slide, ""


def _short(exc: BaseException) -> str:
    text = exc.problem if isinstance(exc, HMILError) else str(exc)
    return text.splitlines()[0][:160] if text else type(exc).__name__


def _with(entry: ReportSlide, note: str) -> ReportSlide:
    return ReportSlide(
        entry.review, entry.fold, entry.true_fine, entry.pred_fine, entry.confidence, note=note
    )


def _relative(path: Path, run: Path) -> str:
    try:
        return path.resolve().relative_to(run.resolve()).as_posix()
    except ValueError:
        return path.name


def _regions(run: Path, slide_id: str, classes: Sequence[str]) -> list[Any]:
    """The regions saved for the slide (:func:`hmil.regions.load_regions`, coloured by the
    run's ``classes``); a file that cannot be read draws none rather than failing the whole
    report."""
    from hmil.regions import load_regions

    try:
        return list(load_regions(run, slide_id, classes))
    except HMILError:
        return []


def reviewers(current: Mapping[tuple[str, str], Review]) -> list[str]:
    """The reviewers of the latest verdicts, in name order."""
    return sorted({reviewer for _, reviewer in current})


def build_report(
    source: ReportSource, reviewer: str, *, written: str | None = None
) -> ReviewReport:
    """The report of ``reviewer``'s latest verdicts on ``source``'s run (slides in id order).

    Raises:
        ReviewError: the run has no reviews, or none by ``reviewer``.
    """
    log = source.log()
    current = reviews.latest(log.reviews)
    if not current:
        raise ReviewError(reviews.reviews_path(source.run), "no reviews in this run")
    name = reviews.check_reviewer(reviewer)
    mine = sorted((r for (_, who), r in current.items() if who == name), key=lambda r: r.slide_id)
    if not mine:
        raise ReviewError(
            reviews.reviews_path(source.run),
            f"no reviews by {name!r} (reviewers: {', '.join(reviewers(current))})",
        )
    run = source.run.resolve()
    return ReviewReport(
        run_name=f"{run.parent.name}/{run.name}" if run.parent.name else run.name,
        reviewer=name,
        written=written or reviews.now_iso(),
        slides=tuple(source.slide(r) for r in mine),
        problems=log.problems,
    )


def disagreement_rows(current: Mapping[tuple[str, str], Review]) -> list[dict[str, str]]:
    """One row per reviewer of each slide whose reviewers disagree
    (:data:`DISAGREEMENT_COLUMNS`)."""
    rows = []
    for slide_id, items in sorted(reviews.disagreements(current).items()):
        for r in items:
            rows.append(
                {
                    "slide_id": slide_id,
                    "reviewer": r.reviewer,
                    "verdict": r.verdict,
                    "corrected_label": r.corrected_label or "",
                    "comment": r.comment,
                    "time": r.time,
                }
            )
    return rows


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`write_reports` wrote: per reviewer ``(html, csv)``, and the disagreements
    table (None when the reviewers agree)."""

    reports: dict[str, tuple[Path, Path]]
    disagreements: Path | None
    problems: tuple[str, ...] = ()


def write_reports(
    source: ReportSource,
    out: str | Path,
    reviewer: str | None = None,
    *,
    written: str | None = None,
) -> ReportFiles:
    """Write ``OUT/<name>.html`` and ``OUT/<name>.csv`` per reviewer (or for ``reviewer``
    alone; ``<name>`` is :func:`safe_name`'s) and ``OUT/disagreements.csv`` when reviewers
    disagree. Every file is written atomically; ``out`` is created when missing.

    Raises:
        ReviewError: no reviews, or none by ``reviewer``.
    """
    from hmil.io import write_text_atomic

    log = source.log()
    current = reviews.latest(log.reviews)
    if not current:
        raise ReviewError(reviews.reviews_path(source.run), "no reviews in this run")
    names = reviewers(current) if reviewer is None else [reviews.check_reviewer(reviewer)]
    written = written or reviews.now_iso()
    reports = [build_report(source, name, written=written) for name in names]
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    done: dict[str, tuple[Path, Path]] = {}
    stems: list[str] = []
    for name, report in zip(names, reports, strict=True):
        stem = safe_name(name, stems)
        stems.append(stem)
        page, table = folder / f"{stem}.html", folder / f"{stem}.csv"
        write_text_atomic(page, report.html())
        write_text_atomic(table, report.csv_text())
        done[name] = (page, table)
    rows = disagreement_rows(current)
    disputed = None
    if rows:
        disputed = folder / f"{DISAGREEMENTS}.csv"
        write_text_atomic(disputed, _csv(rows, DISAGREEMENT_COLUMNS))
    return ReportFiles(done, disputed, log.problems)


def report_html(
    run: str | Path,
    reviewer: str,
    find_slide: SlideFinder | None = None,
    readable: Callable[[Path], bool] | None = None,
    device: str = "auto",
) -> str:
    """One reviewer's page (what the viewer offers as a download; see :class:`ReportSource`
    for ``find_slide`` and ``readable``)."""
    source = ReportSource(Path(run), find_slide=find_slide, readable=readable, device=device)
    return build_report(source, reviewer).html()


# --------------------------------------------------------------------------- HTML

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;
max-width:1500px;color:#222;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{font-size:1.25em;margin-top:28px;border-bottom:1px solid
#ddd;padding-bottom:4px}table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;
padding:4px 10px;text-align:left;vertical-align:top}th{background:#f4f4f6}
.meta td:first-child{color:#555}.summary{display:flex;flex-wrap:wrap;column-gap:48px}
.summary h2{margin-top:12px}.slide{border:1px solid #ddd;border-radius:6px;padding:12px 16px;
margin:16px 0;page-break-inside:avoid}.slide h3{margin:0 0 8px 0;font-size:1.1em}
.body{display:flex;flex-wrap:wrap;gap:24px}.facts{flex:0 1 500px}
.pics{display:flex;flex-wrap:wrap;gap:16px}figure{margin:0}
figcaption{font-size:.9em;color:#444;margin-top:4px}.comment{white-space:pre-wrap}
.note{color:#8a5300;background:#fff6e5;padding:4px 8px;border-radius:4px;display:inline-block}
.swatch{display:inline-block;width:.9em;height:.9em;border:1px solid #555;margin-right:4px;
vertical-align:middle}.verdict{font-weight:600}.small{color:#666;font-size:.85em}
"""


def _verdict_text(verdict: str) -> str:
    return f"{verdict} ({reviews.VERDICT_TEXT.get(verdict, verdict)})"


def _probability(value: float | None) -> str:
    return "" if value is None else f" (p = {value:.3f})"


def _slide_html(item: ReportSlide) -> str:
    r = item.review
    fold = "none" if item.fold is None else str(item.fold)
    rows = [
        ("true fine label", _e(item.true_fine or "unknown")),
        (
            "predicted fine label",
            _e(item.pred_fine or "unknown") + _e(_probability(item.confidence)),
        ),
        ("verdict", f'<span class="verdict">{_e(_verdict_text(r.verdict))}</span>'),
    ]
    if r.corrected_label:
        rows.append(("corrected label", f"{_e(item.true_fine or '?')} → {_e(r.corrected_label)}"))
    rows.append(("comment", f'<span class="comment">{_e(r.comment) or "–"}</span>'))
    rows.append(("reviewed", _e(r.time)))
    rows.append(("checkpoint reviewed", _e(r.checkpoint or "–")))
    rows.append(("held out by fold", _e(fold)))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    parts = [
        f'<section class="slide" id="slide-{_e(r.slide_id)}"><h3>{_e(r.slide_id)}</h3>',
        f'<div class="body"><div class="facts"><table>{body}</table>',
    ]
    if item.note:
        parts.append(f'<p class="note">{_e(item.note)}</p>')
    if item.regions:
        keys = "; ".join(
            f'<span class="swatch" style="background:rgb{tuple(int(c) for c in reg.colour)}">'
            f"</span>{_e(reg.name)} ({_e(reg.classification or 'unclassified')})"
            for reg in item.regions
        )
        parts.append(f'<p class="small">regions outlined: {keys}</p>')
    if item.attention_checkpoint:
        parts.append(f'<p class="small">attention of {_e(item.attention_checkpoint)}</p>')
    parts.append("</div>")
    if item.pictures:
        figures = []
        for pic in item.pictures:
            caption = f"{pic.role} label {pic.label}: attention × an average patch's"
            figures.append(
                f'<figure><img src="{pic.data_uri()}" width="{pic.size[0]}" '
                f'height="{pic.size[1]}" alt="{_e(caption)}"><figcaption>{_e(caption)}'
                "</figcaption></figure>"
            )
        parts.append(f'<div class="pics">{"".join(figures)}</div>')
    parts.append("</div></section>")
    return "".join(parts)


def render_html(report: ReviewReport) -> str:
    """The self-contained page of ``report`` (no external URL; every text escaped)."""
    counts = report.verdict_counts()
    meta = [
        ("run", report.run_name),
        ("reviewer", report.reviewer),
        ("written", report.written),
        ("slides reviewed", str(len(report.slides))),
    ]
    meta_rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in meta)
    count_rows = "".join(
        f"<tr><td>{_e(_verdict_text(v))}</td><td>{n}</td></tr>" for v, n in counts.items()
    )
    corrections = report.corrections()
    if corrections:
        fixed = "".join(
            f"<tr><td>{_e(s)}</td><td>{_e(old or '?')} → {_e(new)}</td></tr>"
            for s, old, new in corrections
        )
        fixed_html = f"<table><tr><th>slide</th><th>original → corrected</th></tr>{fixed}</table>"
    else:
        fixed_html = "<p>No label corrected.</p>"
    problems = ""
    if report.problems:
        items = "".join(f"<li>{_e(p)}</li>" for p in report.problems[:20])
        problems = f'<p class="note">Lines of reviews.jsonl skipped:</p><ul>{items}</ul>'
    slides = "".join(_slide_html(s) for s in report.slides)
    legend = (
        "Thumbnails: attention of the fine label named under each, as a multiple of an "
        "average patch's share (log scale ×1 to ≥×10, shared by every label); patches under ×1 "
        "are uncoloured. Saved regions are outlined in their class colours."
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Review report · {_e(report.reviewer)} · {_e(report.run_name)}</title>"
        f"<style>{_STYLE}</style></head><body>"
        f'<h1>Review report · {_e(report.reviewer)}</h1><div class="summary">'
        f'<div><h2>Run</h2><table class="meta">{meta_rows}</table></div>'
        "<div><h2>Verdicts</h2><table><tr><th>verdict</th><th>slides</th></tr>"
        f"{count_rows}</table></div>"
        f"<div><h2>Corrected labels</h2>{fixed_html}</div></div>{problems}"
        f'<h2>Reviewed slides</h2><p class="small">{_e(legend)}</p>{slides}'
        "</body></html>\n"
    )
