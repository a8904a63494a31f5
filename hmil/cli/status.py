"""``hmil status RUN``: each fold's state, epoch, best metric, ETA and job, whichever launcher
(inline, local, SLURM) runs it."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from hmil.cli import EXIT_OK
from hmil.durations import format_duration
from hmil.errors import RunError

if TYPE_CHECKING:
    from hmil.train.status import FoldView

NAME = "status"
HELP = "show each fold of a run: state, epoch, best validation metric, ETA and job id"

COLUMNS = ("fold", "state", "epoch", "best", "eta", "job")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="run directory (hmil train --out)")
    parser.add_argument("--json", action="store_true", help="one JSON object for machines")


def run(args: argparse.Namespace) -> int:
    from hmil.train.status import fold_views

    run_dir = Path(args.run)
    if not (run_dir / "config.yaml").is_file():
        raise RunError(run_dir, "not a run directory (no config.yaml)")
    views = fold_views(run_dir)
    counts = Counter(v.state for v in views)
    if args.json:
        payload = {
            "run": str(run_dir.resolve()),
            "counts": dict(counts),
            "folds": [v.to_dict() for v in views],
        }
        print(json.dumps(payload, indent=2))
        return EXIT_OK
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    print(f"{run_dir}: {len(views)} fold(s): {summary or 'none planned'}")
    rows = [COLUMNS, *(_row(v) for v in views)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for view in views:
        if view.error:
            print(f"fold {view.fold}: {view.error}")
    return EXIT_OK


def _row(view: FoldView) -> tuple[str, ...]:
    epoch = f"{view.epochs_done}/{view.epochs}" if view.epochs else str(view.epochs_done or "-")
    best = "-"
    if view.best_value is not None:
        best = f"{view.select_metric} {view.best_value:.4f} @{view.best_epoch}"
    job = " ".join(p for p in (view.launcher, view.job_id, view.scheduler_state) if p) or "-"
    return (str(view.fold), view.state, epoch, best, format_duration(view.eta_s, missing="-"), job)
