"""``hmil train``: train HMIL on one, several or all folds of a cohort."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from hmil.cli import EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, report
from hmil.cli.flags import add_field_flags, given
from hmil.config import Config, LauncherConfig, describe, preset_names
from hmil.errors import ConfigError
from hmil.launch import LaunchOutcome, launch_training
from hmil.params import leaves
from hmil.train.api import RunResult
from hmil.train.runs import load_run_config

NAME = "train"
HELP = "train HMIL folds: per-epoch metrics, best checkpoint on validation, test evaluation"
#: output arguments, checked before the command runs (hmil.cli.outputs)
OUTPUTS = {"out": "folder"}

#: config field → its short flag; every field also has its dotted flag (``--train.epochs``),
#: built with its type, choices and help from the field's declaration (hmil.config)
SHORT_FLAGS = {
    "data.labels": "--labels",
    "data.features": "--features",
    "data.splits": "--splits",
    "data.hierarchy": "--hierarchy",
    "data.folds": "--folds",
    "data.encoder": "--encoder",
    "train.epochs": "--epochs",
    "train.device": "--device",
    "train.seed": "--seed",
    "train.lr": "--lr",
    "train.bags_per_step": "--bags-per-step",
    "train.max_instances": "--max-instances",
    "train.lr_schedule": "--lr-schedule",
    "train.select_metric": "--select-metric",
    "train.class_balance": "--class-balance",
    "train.ema_epochs": "--ema-epochs",
    "train.deterministic": "--deterministic",
    "train.experiment_log": "--experiment-log",
}

#: launcher field → its flag (shared with ``hmil extract``)
LAUNCHER_FLAGS = {
    "kind": "--launcher",
    "workers": "--workers",
    "threads": "--threads",
    "partition": "--partition",
    "gpus_per_job": "--gpus-per-job",
    "cpus_per_job": "--cpus-per-job",
    "mem_gb": "--mem-gb",
    "time_min": "--time-min",
    "account": "--account",
    "qos": "--qos",
}
SHORT_FLAGS.update({f"launcher.{name}": flag for name, flag in LAUNCHER_FLAGS.items()})


def add_launcher_arguments(
    parser: argparse.ArgumentParser, unit: str = "fold"
) -> argparse._ArgumentGroup:
    """Flags choosing where jobs run, each overriding a field of the ``launcher:`` config
    section (``hmil extract`` shares the short ones, without ``--workers``; ``hmil train``
    has every field, also as ``--launcher.<field>``); returns the group for command-specific
    flags."""
    group = parser.add_argument_group(
        "launcher", f"where each {unit} runs (default: the launcher: section of --config)"
    )
    every = unit == "fold"
    only = [name for name in LAUNCHER_FLAGS if every or name != "workers"]
    add_field_flags(group, LauncherConfig, LAUNCHER_FLAGS, prefix="launcher.", dotted=every,
                    only=None if every else only)  # fmt: skip
    group.add_argument(
        "--detach",
        action="store_true",
        help="local: return once the jobs are submitted instead of waiting for them",
    )
    return group


def launcher_from_args(args: argparse.Namespace, base: LauncherConfig) -> LauncherConfig:
    """``base`` with the launcher flags given on the command line applied (and validated)."""
    flags = {name: f"launcher.{name}" for name in LAUNCHER_FLAGS}
    return replace(base, **given(args, flags))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="run directory")
    config = parser.add_argument_group(
        "config", "every config field (see --print-config); each overrides --config and --preset"
    )
    short = {key: flag for key, flag in SHORT_FLAGS.items() if not key.startswith("launcher.")}
    add_field_flags(
        config, Config, short, only=[k for k in _fields() if k.split(".")[0] != "launcher"]
    )
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
        "--print-config",
        action="store_true",
        help="print every config field with its help, accepted values and default",
    )
    add_launcher_arguments(parser)


def _fields() -> list[str]:
    """Every config field's dotted name (``train.epochs``): the dest of its flags."""
    return [name for name, _, _ in leaves(Config)]


def build_config(args: argparse.Namespace) -> Config:
    """Defaults (or --preset) ← ``RUN/config.yaml`` (when resuming without --config/--preset)
    ← --config ← flags."""
    preset = getattr(args, "preset", None) or ""
    if args.config:
        try:
            base = Config.from_file(args.config, preset=preset)
        except ConfigError as exc:  # a bad value in the file: name the file, not a flag
            if exc.where == str(args.config):
                raise
            raise ConfigError(args.config, f"{exc.where}: {exc.problem}") from None
    elif preset:
        base = Config.from_preset(preset)
    elif args.resume and args.out and _has_config(args.out):
        base = load_run_config(args.out)
    else:
        base = Config()
    return base.override(given(args, {key: key for key in _fields()}))


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
