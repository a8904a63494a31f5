"""``hmil regions``: does a checkpoint's attention agree with a pathologist's annotations?

Reads QuPath annotations of one slide (GeoJSON), predicts the slide's bag with attention and
writes, for every region x level x class row, how much of the row's attention falls inside the
region and how well the row separates inside from outside (:func:`hmil.regions.region_stats`;
docs/review.md, docs/formats.md).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from hmil.cli import EXIT_OK

if TYPE_CHECKING:
    import pandas as pd

NAME = "regions"
HELP = "compare a checkpoint's attention with annotated regions (QuPath GeoJSON) -> stats CSV"
#: output arguments, checked before the command runs (hmil.cli.outputs)
OUTPUTS = {"out": "file"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint.pt")
    parser.add_argument("--bag", required=True, help="the slide's bag (.h5/.pt with coords)")
    parser.add_argument(
        "--annotations",
        required=True,
        metavar="FILE.geojson",
        help="the slide's regions: QuPath annotations (GeoJSON, Polygon/MultiPolygon, class "
        "names of the checkpoint's hierarchy or none)",
    )
    parser.add_argument("--out", required=True, metavar="STATS.csv", help="the statistics CSV")
    parser.add_argument(
        "--by-class",
        action="store_true",
        help="one region per class (the union of its polygons) instead of one per polygon",
    )
    parser.add_argument(
        "--patch-size",
        type=float,
        help="level-0 patch size (default: from the bag's attributes or coordinate grid)",
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")


def run(args: argparse.Namespace) -> int:
    from shapely import affinity

    from hmil.data.bags import level0_coords
    from hmil.errors import BagError
    from hmil.geojson import class_order
    from hmil.heatmap import bag_offset, check_patch_size
    from hmil.predict import load_checkpoint
    from hmil.regions import Region, merge_by_class, read_annotations, region_stats, write_stats
    from hmil.slides.match import RecordedSlide

    if args.patch_size is not None:
        check_patch_size(args.patch_size)
    predictor = load_checkpoint(args.checkpoint, device=args.device)
    hierarchy = predictor.hierarchy
    pred = predictor.predict(args.bag, attention=True)
    for warning in pred.warnings:  # e.g. features of another encoder than the checkpoint's
        print(f"warning: {args.bag}: {warning}", file=sys.stderr, flush=True)
    if pred.coords is None:
        raise BagError(args.bag, "bag has no coords; regions are compared with patch positions")
    if not pred.attention:
        raise BagError(args.bag, "the model returned no attention")
    coords, patch_size = level0_coords(pred.coords, pred.bag_attrs, args.patch_size, args.bag)
    attrs = pred.bag_attrs or {}
    regions = read_annotations(
        args.annotations,
        bounds=RecordedSlide.from_attrs(attrs).size,
        classes=class_order(hierarchy),
    )
    dx, dy = bag_offset(attrs)
    if dx or dy:  # QuPath's pixels start at the scanned area's corner, the bag's at level 0
        regions = [Region(r.name, r.classification, affinity.translate(r.geometry, dx, dy))
                   for r in regions]  # fmt: skip
    if args.by_class:
        regions = merge_by_class(regions)
    labels = {"coarse": hierarchy.coarse, "fine": hierarchy.fine}
    stats = region_stats(regions, coords, patch_size, pred.attention, labels)
    write_stats(args.out, stats)
    parents = {name: hierarchy.parent_of(name) for name in hierarchy.fine}
    _print_table(stats, pred.fine_pred, parents)
    print(f"{args.out}: {len(stats)} rows ({len(regions)} region(s) x {len(hierarchy.coarse)} "
          f"coarse + {len(hierarchy.fine)} fine classes, {pred.n_instances} patches)")  # fmt: skip
    return EXIT_OK


def _print_table(stats: pd.DataFrame, predicted: str, parents: Mapping[str, str]) -> None:
    """The rows that answer "does the attention find this region?": per region, the rows of
    its class (and, for a fine class, of its coarse parent); for an unclassified region, the
    row of the predicted fine class. The CSV has every row."""
    header = ("region", "class", "inside", "level", "label", "x uniform", "share", "AUROC")
    lines = [header]
    for name, rows in stats.groupby("region", sort=False):
        cls = str(rows["classification"].iloc[0])
        wanted = {cls, parents[cls]} if cls in parents else {cls}
        own = rows[rows["label"].isin(wanted)]
        if own.empty:
            own = rows[(rows["level"] == "fine") & (rows["label"] == predicted)]
        for row in own.itertuples():
            lines.append((
                _printable(str(name))[:40], _printable(str(row.classification))[:30] or "-",
                f"{row.n_inside}/{row.n_patches}", str(row.level), _printable(str(row.label)),
                _number(row.mean_attention, "{:.2f}x"), _number(row.attention_share, "{:.1%}"),
                _number(row.auroc, "{:.3f}"),
            ))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def _number(value: object, form: str) -> str:
    number = float(value) if isinstance(value, int | float) else math.nan
    return form.format(number) if math.isfinite(number) else "-"


def _printable(text: str) -> str:
    """``text`` with control characters shown as spaces (names come from an edited file)."""
    return "".join(c if c.isprintable() else " " for c in text)
