"""``hmil train``: train HMIL on one, several or all folds of a cohort."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from hmil.cli import EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, report
from hmil.config import (
    CLASS_BALANCE,
    LR_SCHEDULES,
    SELECT_METRICS,
    Config,
    LauncherConfig,
    describe,
    preset_names,
)
from hmil.errors import ConfigError
from hmil.launch import LaunchOutcome, launch_training
from hmil.train.api import RunResult
from hmil.train.runs import load_run_config

NAME = "train"
HELP = "train HMIL folds: per-epoch metrics, best checkpoint on validation, test evaluation"
#: output arguments, checked before the command runs (hmil.cli.outputs)
OUTPUTS = {"out": "folder"}

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
    "lr_schedule": "train.lr_schedule",
    "select_metric": "train.select_metric",
    "class_balance": "train.class_balance",
    "ema_epochs": "train.ema_epochs",
    "deterministic": "train.deterministic",
}

#: launcher flag dest -> field of the ``launcher:`` config section (shared with ``hmil extract``)
LAUNCHER_FLAGS = {
    "launcher": "kind",
    "workers": "workers",
    "threads": "threads",
    "partition": "partition",
    "gpus_per_job": "gpus_per_job",
    "cpus_per_job": "cpus_per_job",
    "mem_gb": "mem_gb",
    "time_min": "time_min",
    "account": "account",
    "qos": "qos",
}
OVERRIDES.update({dest: f"launcher.{key}" for dest, key in LAUNCHER_FLAGS.items()})


def add_launcher_arguments(
    parser: argparse.ArgumentParser, unit: str = "fold"
) -> argparse._ArgumentGroup:
    """Flags choosing where jobs run, each overriding the ``launcher:`` config section (shared
    by ``hmil train`` and ``hmil extract``); returns the group for command-specific flags."""
    group = parser.add_argument_group(
        "launcher", f"where each {unit} runs (default: the launcher: section of --config)"
    )
    group.add_argument(
        "--launcher",
        choices=("inline", "local", "slurm"),
        help=f"inline (default: this process), local (one process per {unit}) or slurm (one "
        f"SLURM job per {unit})",
    )
    if unit == "fold":
        group.add_argument("--workers", type=int, help="local: folds running at once (default 1)")
    group.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads per job (default 0 = automatic: local CPUs // workers, SLURM "
        "--cpus-per-job); CPU results are bit-identical across launchers at equal threads",
    )
    group.add_argument("--partition", help="SLURM partition")
    group.add_argument("--gpus-per-job", type=int, help="SLURM GPUs per job (default 0)")
    group.add_argument("--cpus-per-job", type=int, help="SLURM CPUs per job (default 4)")
    group.add_argument("--mem-gb", type=int, help="SLURM memory per job in GB (default 32)")
    group.add_argument(
        "--time-min", type=int, help="time limit per job in minutes (default 720; SLURM and local)"
    )
    group.add_argument("--account", help="SLURM account")
    group.add_argument("--qos", help="SLURM QOS")
    group.add_argument(
        "--detach",
        action="store_true",
        help="local: return once the jobs are submitted instead of waiting for them",
    )
    return group


def launcher_from_args(args: argparse.Namespace, base: LauncherConfig) -> LauncherConfig:
    """``base`` with the launcher flags given on the command line applied (and validated)."""
    given = {key: getattr(args, dest, None) for dest, key in LAUNCHER_FLAGS.items()}
    launcher = replace(base, **{k: v for k, v in given.items() if v is not None})
    launcher.validate()
    return launcher


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labels", help="label table CSV")
    parser.add_argument("--features", help="directory of bags <slide_id>.h5/.pt")
    parser.add_argument("--splits", help="directory of splits_<k>.csv")
    parser.add_argument("--hierarchy", help="preset (bracs, panda, ccc) or YAML/JSON file")
    parser.add_argument("--out", help="run directory")
    parser.add_argument("--folds", help="'all' (default) or comma-separated fold indices")
    defaults = Config().train
    parser.add_argument("--epochs", type=int, help=f"epochs (default {defaults.epochs})")
    parser.add_argument("--device", help="auto (default; CUDA when present), cpu or cuda")
    parser.add_argument("--seed", type=int, help="seed (default 0)")
    parser.add_argument("--lr", type=float, help=f"learning rate (default {defaults.lr:g})")
    parser.add_argument(
        "--bags-per-step",
        type=int,
        help=f"bags per optimiser step (default {defaults.bags_per_step})",
    )
    parser.add_argument("--max-instances", type=int, help="subsample larger bags in training")
    parser.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        help=f"learning rate over epochs (default {defaults.lr_schedule})",
    )
    parser.add_argument(
        "--select-metric",
        choices=SELECT_METRICS,
        help=f"validation metric choosing the checkpoint (default {defaults.select_metric}); "
        "'last' keeps the last epoch (needed when the splits have no validation slides)",
    )
    parser.add_argument(
        "--class-balance",
        choices=CLASS_BALANCE,
        help=f"class imbalance handling (default {defaults.class_balance})",
    )
    parser.add_argument(
        "--ema-epochs",
        type=float,
        help="validate, keep and test a moving average of the weights over this many epochs "
        f"(default {defaults.ema_epochs:g}; 0 = the live weights)",
    )
    parser.add_argument(
        "--deterministic",
        action="store_true",
        default=None,
        help="CUDA: deterministic kernels only (CPU training is deterministic anyway)",
    )
    parser.add_argument("--encoder", help="name of the encoder that made the features")
    parser.add_argument(
        "--preset",
        choices=preset_names(),
        help="start from a named recipe instead of the defaults: 'paper' (the published "
        "recipe: shared head, 64 bags per step, plateau on validation AUC) or 'released' (the "
        "authors' code); --config and flags still override it",
    )
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
    add_launcher_arguments(parser)


def build_config(args: argparse.Namespace) -> Config:
    """Defaults (or --preset) ← ``RUN/config.yaml`` (when resuming without --config/--preset)
    ← --config ← flags."""
    preset = getattr(args, "preset", None) or ""
    if args.config:
        base = Config.from_file(args.config, preset=preset)
    elif preset:
        base = Config.from_preset(preset)
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
    outcome = launch_training(
        config, args.out, resume=args.resume, strict=args.strict, verbose=not args.quiet,
        detach=args.detach, on_skip=report, on_line=None if args.quiet else _progress,
    )  # fmt: skip
    if outcome.result is None:
        return _print_submitted(outcome)
    for fold, problem in outcome.failed:
        report(outcome.run_dir / f"fold_{fold}", problem)
    _print_result(outcome.result)
    if outcome.failed:
        finished = [f for f in outcome.result.folds if f.state == "finished"]
        return EXIT_SKIPPED if finished else EXIT_USAGE
    return EXIT_SKIPPED if outcome.result.skipped else EXIT_OK


def _print_result(result: RunResult) -> None:
    summary = result.summary
    for fold in result.folds:
        if fold.state == "already-finished":
            print(f"fold {fold.fold}: already finished, skipped", file=sys.stderr)
            continue
        fine = fold.test_metrics.get("fine", {})
        coarse = fold.test_metrics.get("coarse", {})
        selection = str(fold.test_metrics.get("selection", ""))
        if selection.startswith("last epoch"):
            print(f"fold {fold.fold}: no validation-based selection; kept the {selection}")
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


def _print_submitted(outcome: LaunchOutcome) -> int:
    """Jobs left running (SLURM, or --detach): their ids and logs, and how to follow them."""
    for sub in outcome.submitted:
        print(f"fold {sub.fold}: {sub.launcher} job {sub.job_id}, log {sub.stderr}")
    print(f"follow with: hmil status {outcome.run_dir}")
    return EXIT_OK


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
