"""Training page logic: form → config, splits, detached launches, fold monitoring, stop.

A launch runs ``python -m hmil train --config RUN/launches/<stamp>.yaml --out RUN --folds ...``
as a detached process (own session, output in ``RUN/launches/<stamp>.log``) so the page stays
responsive and the training survives a page reload or the viewer itself. What is running is
read back from disk only (``RUN/launches.jsonl``, each fold's ``status.json``, lock and
``metrics.jsonl``), so a fold started from the command line shows up the same way. The
``launcher`` section of the config (inline / local / slurm) is honoured by ``hmil train``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from hmil.config import Config
from hmil.errors import ConfigError
from hmil.io import append_jsonl, read_jsonl, write_text_atomic
from hmil.procs import pid_alive
from hmil.train.runs import fold_paths, list_folds, read_status
from viewer.components.paths import check_under_roots

LAUNCHES = "launches.jsonl"
LAUNCH_DIR = "launches"


@dataclass
class TrainForm:
    """The training form's values (paths as typed; checked by :func:`checked_paths`).

    Attributes:
        out: run directory to create or continue.
        labels, features, splits: cohort paths.
        hierarchy: preset name or YAML/JSON file.
        folds: fold indices to train (empty = all split files).
        overrides: dotted config keys → values (``train.epochs``, ``train.lr``, ...).
        extra_yaml: further config as YAML text (any section), applied before ``overrides``.
    """

    out: str
    labels: str
    features: str
    splits: str
    hierarchy: str
    folds: list[int] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    extra_yaml: str = ""


def checked_paths(form: TrainForm, roots: tuple[Path, ...]) -> dict[str, Path]:
    """Resolve the form's paths, refusing any outside the data roots (PathRefused).

    A hierarchy given as a preset name is not a path and is not checked.
    """
    out = {
        "out": check_under_roots(form.out, roots),
        "labels": check_under_roots(form.labels, roots),
        "features": check_under_roots(form.features, roots),
        "splits": check_under_roots(form.splits, roots),
    }
    if is_hierarchy_file(form.hierarchy):
        out["hierarchy"] = check_under_roots(form.hierarchy, roots)
    return out


def is_hierarchy_file(text: str) -> bool:
    return Path(text).suffix.lower() in (".yaml", ".yml", ".json")


def build_config(form: TrainForm, paths: dict[str, Path]) -> Config:
    """The run config: defaults ← ``extra_yaml`` ← form fields (raises ConfigError)."""
    import yaml

    try:
        extra = yaml.safe_load(form.extra_yaml) if form.extra_yaml.strip() else {}
    except yaml.YAMLError as exc:
        raise ConfigError(
            "extra config", f"cannot parse YAML ({str(exc).splitlines()[0]})"
        ) from None
    if extra is not None and not isinstance(extra, dict):
        raise ConfigError("extra config", "must be a mapping of sections")
    base = Config.from_dict(extra or {}, source="extra config")
    hierarchy = str(paths["hierarchy"]) if "hierarchy" in paths else form.hierarchy.strip()
    dotted: dict[str, Any] = {
        "data.labels": str(paths["labels"]),
        "data.features": str(paths["features"]),
        "data.splits": str(paths["splits"]),
        "data.hierarchy": hierarchy,
        "data.folds": ",".join(str(f) for f in sorted(form.folds)) if form.folds else "all",
    }
    dotted.update(form.overrides)
    return base.override(dotted)


def create_splits(
    labels: Path,
    hierarchy: str,
    out: Path,
    k: int,
    seed: int,
    val_frac: float,
    test_frac: float | None,
) -> list[Path]:
    """Write ``splits_<i>.csv`` for ``k`` folds into ``out`` (same as ``hmil split``)."""
    from hmil.data.labels import read_labels
    from hmil.data.splits import make_splits, write_splits
    from hmil.hierarchy import Hierarchy

    table = read_labels(labels, Hierarchy.resolve(hierarchy))
    return write_splits(make_splits(table, k, seed, val_frac, test_frac), out)


def available_folds(splits_dir: str | Path) -> list[int]:
    """Fold indices that have a ``splits_<k>.csv``."""
    from hmil.data.splits import list_split_files

    try:
        return sorted(list_split_files(splits_dir))
    except Exception:  # a missing or unreadable folder simply has no folds
        return []


@dataclass(frozen=True)
class Launch:
    """One detached ``hmil train`` process started by the viewer."""

    run: Path
    pid: int
    started: str
    folds: str
    log: Path
    config: Path
    command: tuple[str, ...]


def _stamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")


def launch_training(
    run: Path, config: Config, python: str = sys.executable, extra_args: tuple[str, ...] = ()
) -> Launch:
    """Start ``hmil train`` for ``config`` in a new session, detached from the viewer.

    The process's output goes to ``RUN/launches/<stamp>.log``; the launch is recorded in
    ``RUN/launches.jsonl``. A thread reaps the process when it ends (no zombie while the viewer
    lives; after the viewer exits, init reaps it).
    """
    run.mkdir(parents=True, exist_ok=True)
    folder = run / LAUNCH_DIR
    folder.mkdir(exist_ok=True)
    stamp = _stamp()
    config_path = folder / f"{stamp}.yaml"
    log_path = folder / f"{stamp}.log"
    write_text_atomic(config_path, config.to_yaml())
    command = (
        python, "-m", "hmil", "train", "--config", str(config_path), "--out", str(run),
        "--folds", config.data.folds, *extra_args,
    )  # fmt: skip
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(run),
            env=env,
        )
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    launch = Launch(
        run=run,
        pid=proc.pid,
        started=_dt.datetime.now().isoformat(timespec="seconds"),
        folds=config.data.folds,
        log=log_path,
        config=config_path,
        command=command,
    )
    append_jsonl(
        run / LAUNCHES,
        {
            "pid": launch.pid,
            "started": launch.started,
            "folds": launch.folds,
            "log": str(log_path),
            "config": str(config_path),
            "command": list(command),
        },
    )
    return launch


def read_launches(run: Path) -> list[dict[str, Any]]:
    """Launch records of ``run`` (newest first), each with ``alive`` (process still running)."""
    records = read_jsonl(run / LAUNCHES)
    for record in records:
        record["alive"] = pid_alive(int(record.get("pid", 0)))
    return records[::-1]


def log_tail(path: Path, max_bytes: int = 4000) -> str:
    """The last ``max_bytes`` of a launch log (progress bars' carriage returns as newlines)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace").replace("\r", "\n")
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-30:])


def fold_overview(run: Path) -> pd.DataFrame:
    """One row per fold: ``fold, state, epoch`` (epochs done / total), ``best_epoch``,
    ``best_value``, ``select_metric``, ``eta``, ``launcher``, ``job``, ``updated``,
    ``stop_requested``, ``error``.

    Uses the launcher-aware view of ``hmil status`` (:mod:`hmil.train.launch.status`: local and
    SLURM jobs, queued folds) when it is available, else the folds' own status files.
    """
    try:
        from hmil.train.launch.status import fold_views
    except ImportError:
        return _fold_overview_plain(run)
    rows = []
    for view in fold_views(run):
        paths = fold_paths(run, view.fold)
        rows.append(
            {
                "fold": view.fold,
                "state": view.state,
                "epoch": f"{view.epochs_done}/{view.epochs}"
                if view.epochs
                else str(view.epochs_done),
                "best_epoch": view.best_epoch,
                "best_value": _finite(view.best_value),
                "select_metric": view.select_metric,
                "eta": format_eta(view.eta_s) if view.state == "running" else "",
                "launcher": view.launcher,
                "job": view.job_id,
                "updated": view.updated,
                "stop_requested": paths.stop_request.is_file(),
                "error": view.error,
            }
        )
    return pd.DataFrame(rows)


def _fold_overview_plain(run: Path) -> pd.DataFrame:
    rows = []
    for fold in list_folds(run):
        paths = fold_paths(run, fold)
        status = read_status(paths)
        done = int(status.get("epochs_done") or 0)
        total = status.get("epochs")
        eta = status.get("eta_s")
        state = str(status.get("state", "pending"))
        rows.append(
            {
                "fold": fold,
                "state": state,
                "epoch": f"{done}/{total}" if total else str(done),
                "best_epoch": status.get("best_epoch"),
                "best_value": _finite(status.get("best_value")),
                "select_metric": status.get("select_metric", ""),
                "eta": format_eta(eta) if state == "running" else "",
                "updated": status.get("updated", ""),
                "stop_requested": paths.stop_request.is_file(),
            }
        )
    return pd.DataFrame(rows)


def _finite(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return round(out, 4) if out == out and abs(out) != float("inf") else None


def format_eta(seconds: Any) -> str:
    """``"3 min 20 s"`` / ``"45 s"`` / ``""`` when unknown."""
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return ""
    if s != s or s < 0 or s == float("inf"):
        return ""
    minutes, sec = divmod(int(round(s)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {sec} s"
    return f"{sec} s"


def training_curves(run: Path, folds: list[int] | None = None) -> pd.DataFrame:
    """Long table of per-epoch curves from ``metrics.jsonl``: columns ``fold, epoch, series,
    value, kind``; series ``train loss``, ``val loss`` (kind loss) and ``val fine bal. acc``,
    ``val fine AUC``, ``val coarse bal. acc`` (kind metric)."""
    rows: list[dict[str, Any]] = []
    for fold in folds if folds is not None else list_folds(run):
        for record in read_jsonl(fold_paths(run, fold).metrics):
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


def request_stop(run: Path, fold: int) -> Path:
    """Touch ``RUN/fold_<k>/STOP``; the trainer stops after its current epoch and evaluates."""
    path = fold_paths(run, fold).stop_request
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"requested": _dt.datetime.now().isoformat()}) + "\n")
    return path
