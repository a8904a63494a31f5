"""``hmil tile``: tissue patches of slides → ``DIR/patches/<id>.h5`` + QC ``DIR/masks/<id>.png``."""

from __future__ import annotations

import argparse
import sys

from hmil.cli import EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, report

NAME = "tile"
HELP = "find tissue and lay a patch grid: DIR/patches/<slide_id>.h5 (coords) + DIR/masks QC PNGs"
#: output arguments, checked before the command runs (hmil.cli.outputs)
OUTPUTS = {"out": "folder"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("slides", nargs="+", metavar="SLIDE", help="slide files (SVS, TIFF, ...)")
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
    parser.add_argument("--strict", action="store_true", help="stop at the first bad slide")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from hmil.slides.tissue import TilingConfig, tile_slides

    config = TilingConfig(
        patch_size=args.patch_size,
        magnification=args.magnification,
        level=args.level,
        tissue_threshold=args.tissue_threshold,
    )
    result = tile_slides(
        args.slides,
        args.out,
        config,
        strict=args.strict,
        on_error=report,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        progress=not args.quiet,
    )
    total = sum(result.n_patches.values())
    print(
        f"{args.out}: {len(result.patch_files)} slide(s) tiled, {total} patches, "
        f"{len(result.failures)} skipped",
        file=sys.stderr,
    )
    if result.failures and not result.patch_files:
        return EXIT_USAGE
    return EXIT_SKIPPED if result.failures else EXIT_OK
