"""``hmil extract``: slides + patch coordinates → one feature bag per slide."""

from __future__ import annotations

import argparse
import sys

from hmil.cli import EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, report

NAME = "extract"
HELP = "encode the tiled patches of slides into bags (<slide_id>.h5/.pt); resumes finished slides"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("slides", nargs="+", metavar="SLIDE", help="slide files")
    parser.add_argument(
        "--patches", required=True, help="`hmil tile` output folder or its patches/ subfolder"
    )
    parser.add_argument("--out", required=True, help="bag folder")
    parser.add_argument(
        "--encoder",
        default="hed-texture",
        help="hed-texture (default, weight-free H&E colour + texture, D=104) or torchscript",
    )
    parser.add_argument("--weights", help="TorchScript file for --encoder torchscript")
    parser.add_argument("--batch-size", type=int, default=64, help="patches per batch (64)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    parser.add_argument(
        "--format", choices=("h5", "pt", "both"), default="h5", help="bag file format (h5)"
    )
    parser.add_argument("--readers", type=int, default=2, help="patch-decoding threads (2)")
    parser.add_argument(
        "--overwrite", action="store_true", help="re-extract slides whose bags exist"
    )
    parser.add_argument("--strict", action="store_true", help="stop at the first bad slide")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from hmil.slides.encoders import create_encoder
    from hmil.slides.extract import ExtractConfig, extract_slides

    formats = ("h5", "pt") if args.format == "both" else (args.format,)
    config = ExtractConfig(
        batch_size=args.batch_size,
        formats=formats,
        num_readers=args.readers,
        overwrite=args.overwrite,
    )
    encoder = create_encoder(args.encoder, args.weights, args.device)
    result = extract_slides(
        args.slides,
        args.patches,
        args.out,
        encoder,
        config,
        strict=args.strict,
        on_error=report,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        progress=not args.quiet,
    )
    print(
        f"{args.out}: {len(result.done)} extracted, {len(result.skipped)} already there, "
        f"{len(result.failed)} skipped with errors",
        file=sys.stderr,
    )
    if result.failed and not (result.done or result.skipped):
        return EXIT_USAGE
    return EXIT_SKIPPED if result.failed else EXIT_OK
