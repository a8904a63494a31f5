"""``hmil train``: train HMIL on one, several or all folds of a cohort."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hmil.cli import EXIT_OK, EXIT_SKIPPED, report
from hmil.config import Config, describe
from hmil.errors import ConfigError
from hmil.train.api import load_run_config, train

NAME = "train"
HELP = "train HMIL folds: per-epoch metrics, best checkpoint on validation, test evaluation"

#: flag dest -> dotted config key
OVERRIDES = {
    "labels": "data.labels",
    "features": "data.features",
    "splits": "data.splits",
    "hierarchy": "data.hierarchy",
    "folds": "data.folds",
    "encoder": "data.encoder",
    "epochs": "train.epochs",
    "device": "train.device",
    "seed": "train.seed",
    "lr": "train.lr",
    "bags_per_step": "train.bags_per_step",
    "max_instances": "train.max_instances",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labels", help="label table CSV")
    parser.add_argument("--features", help="directory of bags <slide_id>.h5/.pt")
    parser.add_argument("--splits", help="directory of splits_<k>.csv")
    parser.add_argument("--hierarchy", help="preset (bracs, panda, ccc) or YAML/JSON file")
    parser.add_argument("--out", help="run directory")
    parser.add_argument("--folds", help="'all' (default) or comma-separated fold indices")
    parser.add_argument("--epochs", type=int, help="epochs (default 200)")
    parser.add_argument("--device", help="auto (default; CUDA when present), cpu or cuda")
    parser.add_argument("--seed", type=int, help="seed (default 0)")
    parser.add_argument("--lr", type=float, help="learning rate (default 1e-4)")
    parser.add_argument("--bags-per-step", type=int, help="bags per optimiser step (default 64)")
    parser.add_argument("--max-instances", type=int, help="subsample larger bags in training")
    parser.add_argument("--encoder", help="name of the encoder that made the features")
    parser.add_argument("--config", help="YAML config; flags override it")
    parser.add_argument(
        "--resume", action="store_true", help="continue interrupted folds from their last epoch"
    )
    parser.add_argument(
        "--strict", action="store_true", help="stop at the first bad bag instead of skipping it"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument(
        "--print-config", action="store_true", help="print every config field with its help"
    )


def build_config(args: argparse.Namespace) -> Config:
    """Defaults ← ``RUN/config.yaml`` (when resuming without --config) ← --config ← flags."""
    if args.config:
        base = Config.from_file(args.config)
    elif args.resume and args.out and _has_config(args.out):
        base = load_run_config(args.out)
    else:
        base = Config()
    return base.override({key: getattr(args, dest) for dest, key in OVERRIDES.items()})


def _has_config(out: str) -> bool:
    return (Path(out) / "config.yaml").is_file()


def run(args: argparse.Namespace) -> int:
    if args.print_config:
        print("\n".join(describe()))
        return EXIT_OK
    if not args.out:
        raise ConfigError("--out", "is required (the run directory)")
    config = build_config(args)
    result = train(
        config, args.out, resume=args.resume, strict=args.strict, verbose=not args.quiet,
        on_skip=report,
    )  # fmt: skip
    summary = result.summary
    for fold in result.folds:
        if fold.state == "already-finished":
            print(f"fold {fold.fold}: already finished, skipped", file=sys.stderr)
            continue
        fine = fold.test_metrics.get("fine", {})
        coarse = fold.test_metrics.get("coarse", {})
        print(
            f"fold {fold.fold}: best epoch {fold.best_epoch}, test fine balanced accuracy "
            f"{fine.get('balanced_accuracy', float('nan')):.3f}, coarse "
            f"{coarse.get('balanced_accuracy', float('nan')):.3f}"
        )
    if "fine" in summary:
        bacc = summary["fine"].get("balanced_accuracy", {})
        print(
            f"{result.run_dir}/summary.json: fine balanced accuracy "
            f"{bacc.get('mean', float('nan')):.3f} ± {bacc.get('std', float('nan')):.3f} over "
            f"{summary['n_folds']} fold(s)"
        )
    return EXIT_SKIPPED if result.skipped else EXIT_OK
