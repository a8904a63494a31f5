"""``hmil tile``: tissue patches of slides → ``DIR/patches/<id>.h5`` (CLAM) and
``<id>_patches.h5`` (TRIDENT), QC ``DIR/masks/<id>.png``, tissue ``DIR/contours_geojson/``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hmil.cli import EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, report

NAME = "tile"
HELP = "find tissue and lay a patch grid: DIR/patches/<slide_id>.h5 (coords) + DIR/masks QC PNGs"
#: output arguments, checked before the command runs (hmil.cli.outputs)
OUTPUTS = {"out": "folder"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("slides", nargs="*", metavar="SLIDE", help="slide files (SVS, TIFF, ...)")
    parser.add_argument(
        "--slide-list",
        help="CSV of slides: TRIDENT's (wsi[,mpp]) or CLAM's process list (slide_id[,process])",
    )
    parser.add_argument(
        "--slides-dir", help="folder the --slide-list names are in (default: the CSV's folder)"
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--patch-size", type=int, default=256, help="patch side in pixels at the target (256)"
    )
    parser.add_argument(
        "--magnification",
        type=float,
        default=20.0,
        help="target magnification, e.g. 20 for 20x (default); slides without objective power "
        "or microns-per-pixel fall back to --level (level 0 by default)",
    )
    parser.add_argument(
        "--level", type=int, default=None, help="read patches at this level instead"
    )
    parser.add_argument(
        "--tissue-threshold",
        type=float,
        default=0.5,
        help="minimum tissue fraction of a patch, 0..1 (0.5)",
    )
    parser.add_argument(
        "--overlap",
        type=int,
        default=0,
        help="pixels shared by neighbouring patches at the target magnification, as TRIDENT's "
        "(0; 128 = half of 256)",
    )
    parser.add_argument(
        "--mpp",
        type=float,
        help="microns per level-0 pixel, overriding the files' (for slides without metadata)",
    )
    parser.add_argument(
        "--tissue-geojson",
        metavar="DIR",
        help="take each slide's tissue from DIR/<slide_id>.geojson (QuPath or TRIDENT "
        "contours) instead of segmenting",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="re-tile slides already tiled (by default they are skipped, unless their "
        "contours_geojson file was edited since)",
    )
    parser.add_argument("--strict", action="store_true", help="stop at the first bad slide")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from hmil.errors import HMILError
    from hmil.slides.slide_list import SlideEntry, read_slide_list
    from hmil.slides.tile_batch import tile_slides
    from hmil.slides.tissue import TilingConfig

    config = TilingConfig(
        patch_size=args.patch_size,
        magnification=args.magnification,
        level=args.level,
        tissue_threshold=args.tissue_threshold,
        overlap=args.overlap,
        mpp=args.mpp,
        trident_names=True,
        overwrite=args.overwrite,
    )
    slides = [SlideEntry(Path(s)) for s in args.slides]
    if args.slide_list:
        slides += read_slide_list(args.slide_list, args.slides_dir)
    if not slides:
        raise HMILError("SLIDE", "no slides given (name slide files or use --slide-list CSV)")
    result = tile_slides(
        slides,
        args.out,
        config,
        tissue_dir=args.tissue_geojson,
        strict=args.strict,
        on_error=report,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        progress=not args.quiet,
    )
    total = sum(result.n_patches.values())
    print(
        f"{args.out}: {len(result.patch_files)} slide(s) tiled, {total} patches, "
        f"{len(result.skipped)} already tiled, {len(result.failures)} skipped with errors",
        file=sys.stderr,
    )
    if result.failures and not (result.patch_files or result.skipped):
        return EXIT_USAGE
    return EXIT_SKIPPED if result.failures else EXIT_OK
