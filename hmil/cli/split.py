"""``hmil split``: CLAM-style splits_<k>.csv, stratified by fine label, grouped by case."""

from __future__ import annotations

import argparse
import sys

from hmil.data.labels import read_labels
from hmil.data.splits import make_splits, write_splits
from hmil.hierarchy import Hierarchy

NAME = "split"
HELP = "make k train/val/test splits (stratified by fine label, grouped by case_id)"
#: output arguments, checked before the command runs (hmil.cli.outputs)
OUTPUTS = {"out": "folder"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--labels", required=True, help="label table CSV (slide_id, label[, case_id])"
    )
    parser.add_argument("--k", type=int, required=True, help="number of folds")
    parser.add_argument("--out", required=True, help="directory for splits_<k>.csv")
    parser.add_argument(
        "--hierarchy",
        default=None,
        help="preset name or YAML/JSON file; when given, every label must belong to it",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--val-frac", type=float, default=0.1, help="validation fraction (default 0.1)"
    )
    parser.add_argument(
        "--test-frac",
        type=float,
        default=None,
        help="test fraction of independent per-fold splits (default: k-fold, tests partition "
        "the cohort)",
    )


def run(args: argparse.Namespace) -> int:
    hierarchy = Hierarchy.resolve(args.hierarchy) if args.hierarchy else None
    labels = read_labels(args.labels, hierarchy)
    splits = make_splits(labels, args.k, args.seed, args.val_frac, args.test_frac)
    paths = write_splits(splits, args.out)
    for path, split in zip(paths, splits, strict=True):
        print(f"{path}: train {len(split.train)}, val {len(split.val)}, test {len(split.test)}")
    if any(not split.val for split in splits):
        print(
            f"warning: {args.out}: some folds have no validation slides; `hmil train` refuses "
            "them unless given --select-metric last (keep the last epoch)",
            file=sys.stderr,
        )
    return 0
