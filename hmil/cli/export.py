"""``hmil export``: a checkpoint as an ONNX model or a ``torch.export`` program (docs/export.md)."""

from __future__ import annotations

import argparse
import sys

from hmil.cli import EXIT_OK

NAME = "export"
HELP = (
    "export a checkpoint for deployment: ONNX or a torch.export ExportedProgram (.pt2); "
    "input one bag (N, D), outputs per-level probabilities and attention"
)
#: output arguments, checked before the command runs (hmil.cli.outputs)
OUTPUTS = {"out": "file"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hmil.export import WRITERS

    parser.add_argument("--checkpoint", required=True, help="checkpoint.pt")
    parser.add_argument(
        "--format",
        required=True,
        choices=tuple(WRITERS),
        help="onnx (needs the [export] extra) or exported-program (torch.export.save, .pt2)",
    )
    parser.add_argument("--out", required=True, help="the file to write (.onnx or .pt2)")


def run(args: argparse.Namespace) -> int:
    from hmil.export import OUTPUT_NAMES, export_checkpoint

    result = export_checkpoint(args.checkpoint, args.out, args.format)
    meta = result.metadata
    print(
        f"{result.path}: {result.format}, input features (N, {meta['in_dim']}) float32, "
        f"outputs {', '.join(OUTPUT_NAMES)}; {len(meta['coarse_labels'])} coarse and "
        f"{len(meta['fine_labels'])} fine labels",
        file=sys.stderr,
    )
    return EXIT_OK
