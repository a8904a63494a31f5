"""``hmil reviews list RUN``, ``hmil reviews export RUN --labels OUT.csv`` and ``hmil reviews
report RUN --out DIR``: the verdicts pathologists gave in the viewer (``RUN/reviews.jsonl``), a
label table with their corrections for the next training, and a page per reviewer to share
(docs/review.md)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from hmil.cli import EXIT_OK
from hmil.errors import ReviewError, RunError
from hmil.hierarchy import Hierarchy

if TYPE_CHECKING:
    from hmil.reviews import Review

NAME = "reviews"
HELP = (
    "list the slide reviews of a run, export its labels with the reviewers' corrections, or "
    "write a report per reviewer"
)
#: output arguments, checked before the command runs (hmil.cli.outputs)
OUTPUTS = {"out": "folder"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="latest verdict per slide and reviewer; disagreements")
    listing.add_argument("run", metavar="RUN", help="run directory (hmil train --out)")
    export = sub.add_parser(
        "export", help="write the run's label table with the label_error corrections applied"
    )
    export.add_argument("run", metavar="RUN", help="run directory (hmil train --out)")
    export.add_argument(
        "--labels", required=True, metavar="OUT.csv", help="the corrected label table to write"
    )
    export.add_argument(
        "--from", dest="source", metavar="CSV",
        help="the label table to correct (default: the one the run was trained on)",
    )  # fmt: skip
    export.add_argument(
        "--reviewer", metavar="NAME",
        help="where reviewers disagree on a slide's label, this reviewer's verdict wins",
    )  # fmt: skip
    report = sub.add_parser(
        "report", help="one HTML page and CSV per reviewer: verdicts, corrections, thumbnails"
    )
    report.add_argument("run", metavar="RUN", help="run directory (hmil train --out)")
    report.add_argument(
        "--out", required=True, metavar="DIR",
        help="folder for <reviewer>.html, <reviewer>.csv and disagreements.csv",
    )  # fmt: skip
    report.add_argument("--reviewer", metavar="NAME", help="this reviewer's report only")


def run(args: argparse.Namespace) -> int:
    from hmil import reviews

    run_dir = Path(args.run)
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise RunError(run_dir, "not a run directory (no config.yaml)")
    from hmil.config import Config

    if args.action == "report":
        return _report(run_dir, args.out, args.reviewer)
    config = Config.from_file(config_file)
    hierarchy = Hierarchy.resolve(config.data.hierarchy)
    log = reviews.read_reviews(run_dir, hierarchy.fine)
    for problem in log.problems:
        print(f"warning: {run_dir}/{problem}", file=sys.stderr)
    current = reviews.latest(log.reviews)
    if args.action == "list":
        return _list(current)
    fixed, conflicts = reviews.corrections(current, args.reviewer)
    if conflicts:
        lines = [_printable(f"{s}: " + "; ".join(reviews.describe(r) for r in rs))
                 for s, rs in sorted(conflicts.items())]  # fmt: skip
        pick = "" if args.reviewer else "; name one with --reviewer NAME"
        raise ReviewError(
            reviews.reviews_path(run_dir),
            f"reviewers disagree on the label of {len(conflicts)} slide(s){pick}: "
            + " | ".join(lines),
        )
    source = Path(args.source) if args.source else Path(config.data.labels)
    result = reviews.export_labels(source, fixed, args.labels, hierarchy.fine)
    print(f"{result.path}: {len(result.changed)} label(s) corrected, from {source}")
    for slide_id in result.changed:
        label, who = fixed[slide_id]
        print(_printable(f"  {slide_id} → {label} ({', '.join(who)})"))
    if result.unknown:
        print(f"not in {source}, left out: {', '.join(result.unknown)}")
    return EXIT_OK


def _list(current: Mapping[tuple[str, str], Review]) -> int:
    from hmil import reviews

    rows = [("slide_id", "reviewer", "verdict", "label", "time", "comment")]
    for review in current.values():
        comment = " ".join(_printable(review.comment).split())
        rows.append((_printable(review.slide_id), review.reviewer, review.verdict,
                     _printable(review.label or "-"), _printable(review.time),
                     comment[:60] + ("…" if len(comment) > 60 else "")))  # fmt: skip
    print(f"{len(current)} latest verdict(s) on {len({k[0] for k in current})} slide(s)")
    if len(rows) > 1:
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        for row in rows:
            cells = [c.ljust(w) for c, w in zip(row[:5], widths, strict=True)]
            print("  ".join([*cells, row[5]]).rstrip())
    disputed = reviews.disagreements(current)
    print(f"{len(disputed)} slide(s) where reviewers disagree")
    for slide_id, items in sorted(disputed.items()):
        print(_printable(f"  {slide_id}: " + "; ".join(reviews.describe(r) for r in items)))
    return EXIT_OK


def _report(run_dir: Path, out: str, reviewer: str | None) -> int:
    from hmil.review_report import ReportSource, write_reports
    from hmil.reviews import check_reviewer

    if reviewer is not None:
        try:
            reviewer = check_reviewer(reviewer)
        except ReviewError as exc:
            raise ReviewError("--reviewer", exc.problem) from None
    files = write_reports(ReportSource(run_dir), out, reviewer)
    for problem in files.problems:
        print(f"warning: {run_dir}/{problem}", file=sys.stderr)
    for name, (page, table) in files.reports.items():
        print(_printable(f"{page}, {table.name}: report of {name}"))
    if files.disagreements is not None:
        print(f"{files.disagreements}: slides where reviewers disagree")
    return EXIT_OK


def _printable(text: str) -> str:
    """``text`` with control characters (terminal escape sequences, line breaks) shown as
    spaces: comments and slide ids come from a file anyone may have edited."""
    return "".join(c if c.isprintable() else " " for c in text)
