"""What the Training page shows of a run's folds: state, epochs, best metric, ETA, curves.

Read from disk only (each fold's ``status.json``, lock and ``metrics.jsonl``, and the
launchers' records through :mod:`hmil.train.status`), so a fold started from the command line
shows up the same way as one started from the page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from hmil.durations import format_duration
from hmil.io import read_jsonl
from hmil.train.runs import fold_paths, list_folds
from hmil.train.status import fold_views
from viewer.core.paths import run_file


def fold_overview(run: Path) -> pd.DataFrame:
    """One row per fold: ``fold, state, status`` (the state in words with the epoch reached:
    why a fold ended before its planned epochs, that an interrupted one can be continued),
    ``epoch`` (epochs done / total), ``best_epoch``, ``best_value``, ``select_metric``, ``eta``,
    ``launcher``, ``job``, ``updated``, ``stop_requested``, ``error``.

    The launcher-aware view of ``hmil status`` (:func:`hmil.train.status.fold_views`: local
    and SLURM jobs, queued folds).
    """
    rows = []
    for view in fold_views(run):
        rows.append(
            {
                "fold": view.fold,
                "state": view.state,
                "status": view.describe(),
                "epoch": f"{view.epochs_done}/{view.epochs}"
                if view.epochs
                else str(view.epochs_done),
                "best_epoch": view.best_epoch,
                "best_value": _finite(view.best_value),
                "select_metric": view.select_metric,
                "eta": format_duration(view.eta_s) if view.state == "running" else "",
                "launcher": view.launcher,
                "job": view.job_id,
                "updated": view.updated,
                "stop_requested": view.stop_requested,
                "error": view.error,
            }
        )
    return pd.DataFrame(rows)


def _finite(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return round(out, 4) if out == out and abs(out) != float("inf") else None


def training_curves(run: Path, folds: list[int] | None = None) -> pd.DataFrame:
    """Long table of per-epoch curves from ``metrics.jsonl``: columns ``fold, epoch, series,
    value, kind``; series ``train loss``, ``val loss`` (kind loss) and ``val fine bal. acc``,
    ``val fine AUC``, ``val coarse bal. acc`` (kind metric)."""
    rows: list[dict[str, Any]] = []
    for fold in folds if folds is not None else list_folds(run):
        metrics = run_file(run, fold_paths(run, fold).metrics)
        for record in read_jsonl(metrics) if metrics is not None else []:
            epoch = record.get("epoch")
            val = record.get("val") or {}
            series = {
                ("train loss", "loss"): (record.get("train") or {}).get("loss"),
                ("val loss", "loss"): val.get("loss"),
                ("val fine bal. acc", "metric"): (val.get("fine") or {}).get("balanced_accuracy"),
                ("val fine AUC", "metric"): (val.get("fine") or {}).get("macro_auc"),
                ("val coarse bal. acc", "metric"): (val.get("coarse") or {}).get(
                    "balanced_accuracy"
                ),
            }
            for (name, kind), value in series.items():
                v = _finite(value)
                if v is not None:
                    rows.append(
                        {"fold": fold, "epoch": epoch, "series": name, "value": v, "kind": kind}
                    )
    return pd.DataFrame(rows, columns=["fold", "epoch", "series", "value", "kind"])
