"""``hmil tile``: tissue patches of slides → ``DIR/patches/<id>.h5`` (CLAM) and
``<id>_patches.h5`` (TRIDENT), QC ``DIR/masks/<id>.png``, tissue ``DIR/contours_geojson/``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hmil.cli import EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, report
from hmil.cli.flags import add_field_flags, given
from hmil.params import leaves, replace
from hmil.slides.tissue import TilingConfig

NAME = "tile"
HELP = "find tissue and lay a patch grid: DIR/patches/<slide_id>.h5 (coords) + DIR/masks QC PNGs"
#: output arguments, checked before the command runs (hmil.cli.outputs)
OUTPUTS = {"out": "folder"}
#: TilingConfig fields set by flags of their own name (--patch-size); hmil tile always writes
#: TRIDENT's names too
TILING_FIELDS = [
    name for name, _, _ in leaves(TilingConfig)
    if name != "trident_names" and not name.startswith("tissue.")
]  # fmt: skip
#: tissue mask fields, as --tissue.<field>
TISSUE_FIELDS = [name for name, _, _ in leaves(TilingConfig) if name.startswith("tissue.")]


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
    tiling = parser.add_argument_group("tiling", "the patch grid (hmil.slides.tissue.TilingConfig)")
    add_field_flags(tiling, TilingConfig, dotted=False, defaults=True, only=TILING_FIELDS)
    tissue = parser.add_argument_group("tissue mask", "segmentation of the tissue (TissueConfig)")
    add_field_flags(tissue, TilingConfig, defaults=True, only=TISSUE_FIELDS)
    parser.add_argument(
        "--tissue-geojson",
        metavar="DIR",
        help="take each slide's tissue from DIR/<slide_id>.geojson (QuPath or TRIDENT "
        "contours) instead of segmenting",
    )
    parser.add_argument("--strict", action="store_true", help="stop at the first bad slide")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from hmil.errors import ConfigError
    from hmil.slides.slide_list import SlideEntry, read_slide_list
    from hmil.slides.tile_batch import tile_slides

    flags = {name: name for name in TILING_FIELDS + TISSUE_FIELDS}
    config = replace(TilingConfig(trident_names=True), given(args, flags))
    slides = [SlideEntry(Path(s)) for s in args.slides]
    if args.slide_list:
        slides += read_slide_list(args.slide_list, args.slides_dir)
    if not slides:
        raise ConfigError("SLIDE", "no slides given (name slide files or use --slide-list CSV)")
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
