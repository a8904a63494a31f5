"""``hmil evaluate``: recompute test metrics of a run's folds from their checkpoints, and draw
the folds' reliability diagrams into ``RUN/reliability.html``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hmil.cli import EXIT_OK, EXIT_SKIPPED, report
from hmil.decoding import DECODINGS
from hmil.errors import ConfigError, RunError
from hmil.io import write_text_atomic
from hmil.reliability_figure import RELIABILITY_HTML, reliability_html
from hmil.train.evaluate import evaluate_run_fold, read_reliability
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
    parser.add_argument(
        "--coverage",
        type=float,
        default=None,
        help="target coverage of the hierarchical call, in (0, 1) (default: the checkpoint's)",
    )


def run(args: argparse.Namespace) -> int:
    if args.coverage is not None and not 0.0 < args.coverage < 1.0:
        raise ConfigError("--coverage", f"must be in (0, 1), found {args.coverage}")
    folds = [args.fold] if args.fold is not None else list_folds(args.run)
    folds = [f for f in folds if fold_paths(args.run, f).checkpoint.is_file()]
    if not folds:
        raise RunError(args.run, "no fold with a checkpoint to evaluate")
    skipped = 0
    for fold in folds:
        result = evaluate_run_fold(
            args.run, fold, args.device, args.decoding, args.strict, report, args.coverage
        )
        skipped += len(result["skipped"])
        print(
            f"fold {fold}: n={result['n']} fine bacc {result['fine']['balanced_accuracy']:.3f} "
            f"auc {result['fine']['macro_auc']:.3f} | coarse bacc "
            f"{result['coarse']['balanced_accuracy']:.3f} | consistency "
            f"{result['consistency']:.3f} ({args.decoding})"
        )
        print(f"fold {fold}: {calibration_line(result['calibration'])}")
    summarise_run(args.run)
    print(write_reliability(args.run))
    return EXIT_SKIPPED if skipped else EXIT_OK


def write_reliability(run_dir: str | Path) -> str:
    """Write the reliability diagrams of every fold that has a ``reliability.csv`` (all of
    them, not only the folds evaluated now) to ``RUN/reliability.html`` atomically; return
    the line that says where, or that there was nothing to draw (then nothing is written)."""
    table = read_reliability(run_dir)
    if table.empty:
        return "reliability diagrams: none written (no fold has a reliability.csv)"
    path = Path(run_dir) / RELIABILITY_HTML
    write_text_atomic(path, reliability_html(table, Path(run_dir).resolve().name))
    return f"reliability diagrams: {path}"


def calibration_line(section: dict[str, Any]) -> str:
    """ECE before → after per level, and the call's coverage and shares, on one line."""
    temps = section["temperature"]
    parts = [f"T coarse {temps['coarse']:.3f} fine {temps['fine']:.3f}"]
    for level in ("fine", "coarse"):
        before, after = section[level]["before"]["ece"], section[level]["after"]["ece"]
        parts.append(f"{level} ECE {_num(before)} -> {_num(after)}")
    call = section.get("call")
    if call is None:
        parts.append("no call (checkpoint without conformal calibration)")
    else:
        parts.append(
            f"call coverage {_num(call['coverage'])} (target {call['coverage_target']:g}), "
            f"fine {_num(call['share_fine'])} coarse {_num(call['share_coarse'])} "
            f"none {_num(call['share_none'])}, fine-call accuracy {_num(call['accuracy_fine'])}"
        )
    return " | ".join(parts)


def _num(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.3f}"
