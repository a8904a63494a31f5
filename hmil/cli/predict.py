"""``hmil predict``: one prediction record (JSON line) per bag."""

from __future__ import annotations

import argparse
import json
import sys

from hmil.cli import EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, report
from hmil.errors import BagError, ConfigError
from hmil.io import atomic_path
from hmil.predict import Predictor, load_checkpoint

NAME = "predict"
HELP = "predict bags with a checkpoint; one JSON record per bag (coarse, fine, consistency)"
#: output arguments, checked before the command runs (hmil.cli.outputs)
OUTPUTS = {"out": "file"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint.pt")
    parser.add_argument("bags", nargs="+", metavar="BAG", help="bag files (.h5 or .pt)")
    parser.add_argument("--out", help="write JSON lines here (default: stdout)")
    parser.add_argument("--attention", action="store_true", help="include class-wise attention")
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    parser.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32", help="bf16 autocast on CUDA"
    )
    parser.add_argument("--strict", action="store_true", help="stop at the first bad bag")
    parser.add_argument(
        "--raw-probabilities",
        action="store_true",
        help="probabilities without the checkpoint's temperature scaling (the call still uses "
        "the calibrated ones)",
    )
    parser.add_argument(
        "--coverage",
        type=float,
        default=None,
        help="target coverage of the record's call, in (0, 1) (default: the checkpoint's, 0.9)",
    )


def run(args: argparse.Namespace) -> int:
    if args.coverage is not None and not 0.0 < args.coverage < 1.0:
        raise ConfigError("--coverage", f"must be in (0, 1), found {args.coverage}")
    predictor = load_checkpoint(
        args.checkpoint, device=args.device, precision=args.precision,
        calibrated=not args.raw_probabilities, coverage=args.coverage,
    )  # fmt: skip
    lines: list[str] = []
    done = skipped = 0
    for bag in args.bags:
        try:
            line, warnings = _record(predictor, bag, args.attention)
        except BagError as exc:
            if args.strict:
                raise
            report(exc.where, exc.problem)
            skipped += 1
            continue
        for warning in warnings:
            print(f"warning: {bag}: {warning}", file=sys.stderr, flush=True)
        done += 1
        if args.out:
            lines.append(line)
        else:
            print(line, flush=True)
    if skipped and not done:
        return EXIT_USAGE  # nothing could be done, and --out is left as it was
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        print(f"{args.out}: {len(lines)} prediction(s)", file=sys.stderr)
    return EXIT_SKIPPED if skipped else EXIT_OK


def _record(predictor: Predictor, bag: str, attention: bool) -> tuple[str, list[str]]:
    """One bag's JSON line and its warnings. BagError for a bad bag, including one whose
    prediction or record does not fit in memory, so the batch goes on with the next bag."""
    try:
        pred = predictor.predict(bag, attention=attention)
        return json.dumps(pred.to_dict(attention=attention)), pred.warnings
    except MemoryError:
        raise BagError(bag, "does not fit in the memory available") from None
