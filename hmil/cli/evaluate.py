"""``hmil evaluate``: recompute test metrics of a run's folds from their checkpoints."""

from __future__ import annotations

import argparse

from hmil.cli import EXIT_OK, EXIT_SKIPPED, report
from hmil.decoding import DECODINGS
from hmil.errors import RunError
from hmil.train.evaluate import evaluate_run_fold
from hmil.train.runs import fold_paths, list_folds, summarise_run

NAME = "evaluate"
HELP = "recompute test metrics (per level) and predictions.csv from a run's checkpoints"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run directory")
    parser.add_argument("--fold", type=int, default=None, help="one fold (default: all)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument(
        "--decoding",
        choices=DECODINGS,
        default="fine_sum",
        help="fine_sum: coarse = argmax Mᵀp_f (default); top_down: coarse first, then fine",
    )
    parser.add_argument("--strict", action="store_true", help="stop at the first bad bag")


def run(args: argparse.Namespace) -> int:
    folds = [args.fold] if args.fold is not None else list_folds(args.run)
    folds = [f for f in folds if fold_paths(args.run, f).checkpoint.is_file()]
    if not folds:
        raise RunError(args.run, "no fold with a checkpoint to evaluate")
    skipped = 0
    for fold in folds:
        result = evaluate_run_fold(args.run, fold, args.device, args.decoding, args.strict, report)
        skipped += len(result["skipped"])
        print(
            f"fold {fold}: n={result['n']} fine bacc {result['fine']['balanced_accuracy']:.3f} "
            f"auc {result['fine']['macro_auc']:.3f} | coarse bacc "
            f"{result['coarse']['balanced_accuracy']:.3f} | consistency "
            f"{result['consistency']:.3f} ({args.decoding})"
        )
    summarise_run(args.run)
    return EXIT_SKIPPED if skipped else EXIT_OK
