"""The run directory: layout, per-fold locks and status, and the cross-fold summary.

Layout (docs/formats.md, "Run directory")::

    RUN/config.yaml                 resolved config
    RUN/fold_<k>/checkpoint.pt      best checkpoint (selected on validation)
    RUN/fold_<k>/state.pt           resume state after the last finished epoch
    RUN/fold_<k>/metrics.jsonl      one JSON object per epoch
    RUN/fold_<k>/status.json        state, epoch, best metric, ETA (read by `hmil status`/viewer)
    RUN/fold_<k>/test_metrics.json  written when the fold finishes
    RUN/fold_<k>/predictions.csv
    RUN/summary.json                mean ± std over finished folds

A fold being trained holds ``fold_<k>/.lock`` (pid, its start time and host); a second training
of the same fold is refused while that process lives (:func:`hmil.procs.record_alive`: a lock
whose pid now belongs to another process is stale).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hmil.config import Config
from hmil.errors import ConfigError, RunError
from hmil.io import read_jsonl, write_json_atomic
from hmil.procs import process_record, record_alive

LEVELS = ("fine", "coarse", "coarse_head")
CONFIG_NAME = "config.yaml"
SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "specificity")


@dataclass(frozen=True)
class FoldPaths:
    """Files of one fold inside a run directory."""

    root: Path

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def state(self) -> Path:
        return self.root / "state.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def test_metrics(self) -> Path:
        return self.root / "test_metrics.json"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.csv"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def stop_request(self) -> Path:
        """Touching this file asks the training process to stop after the current epoch and
        evaluate the best checkpoint so far (the viewer's stop button does this)."""
        return self.root / "STOP"

    def finished(self) -> bool:
        return self.test_metrics.is_file() and self.checkpoint.is_file()

    def started(self) -> bool:
        return self.state.is_file() or self.metrics.is_file() or self.checkpoint.is_file()


def load_run_config(run_dir: str | Path) -> Config:
    """The resolved config stored in a run directory (keys an older hmil did not write take
    the values that reproduce that run: :meth:`hmil.config.Config.from_run_file`)."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise RunError(run_dir, f"not a run directory (no {CONFIG_NAME})")
    return Config.from_run_file(path)


def fold_paths(run_dir: str | Path, fold: int) -> FoldPaths:
    """The files of fold ``fold`` of the run in ``run_dir`` (``RUN/fold_<k>/``)."""
    return FoldPaths(Path(run_dir) / f"fold_{fold}")


def list_folds(run_dir: str | Path) -> list[int]:
    """Fold indices that have a ``fold_<k>`` directory, sorted."""
    out = []
    for d in Path(run_dir).glob("fold_*"):
        suffix = d.name.removeprefix("fold_")
        if d.is_dir() and suffix.isdigit():
            out.append(int(suffix))
    return sorted(out)


def resolve_folds(spec: str, available: list[int]) -> list[int]:
    """``"all"`` or ``"0,2"`` → fold indices, each of which must have a split file."""
    if spec.strip().lower() == "all":
        return available
    try:
        folds = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(
            "data.folds", f"expected 'all' or comma-separated integers, got '{spec}'"
        ) from None
    missing = [f for f in folds if f not in available]
    if missing or not folds:
        raise ConfigError(
            "data.folds", f"no split for fold(s) {missing or spec} (available: {available})"
        )
    return folds


# ---- locking ----------------------------------------------------------------------------------
class FoldLock:
    """Exclusive claim on one fold directory for the lifetime of a training process.

    Created with O_EXCL; a lock left by a dead process on this host is taken over, also once
    its pid was given to another process (the lock names the process by pid and start time).
    A lock held by a live process (or by another host, which we cannot check) is a
    :class:`RunError`.
    """

    def __init__(self, paths: FoldPaths) -> None:
        self.paths = paths
        self._held = False

    def __enter__(self) -> FoldLock:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        me: dict[str, Any] = {**process_record(), "host": socket.gethostname(), "since": _now()}
        if os.environ.get("SLURM_JOB_ID"):
            me["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
        for _ in range(2):
            try:
                fd = os.open(self.paths.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_json(self.paths.lock)
                if _alive(holder):
                    raise RunError(
                        self.paths.root,
                        f"already being trained by pid {holder.get('pid')} on "
                        f"{holder.get('host')} since {holder.get('since')}; refusing a second "
                        "training in the same run directory",
                    ) from None
                self.paths.lock.unlink(missing_ok=True)  # stale lock of a dead process
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(me, handle)
            self._held = True
            return self
        raise RunError(self.paths.root, "could not acquire the fold lock")

    def __exit__(self, *exc: object) -> None:
        if self._held:
            self.paths.lock.unlink(missing_ok=True)
            self._held = False


def _alive(holder: dict[str, Any]) -> bool:
    """Whether a fold lock's holder still runs (see :class:`FoldLock`)."""
    if not holder:
        return False
    if holder.get("host") != socket.gethostname():
        # another machine: a SLURM job can be asked about; anything else is assumed alive
        job = holder.get("slurm_job_id")
        return _slurm_job_active(str(job)) if job else True
    return record_alive(holder)


def _slurm_job_active(job_id: str) -> bool:
    """Whether SLURM still lists ``job_id`` (pending or running); True when squeue cannot
    answer, so an unreachable scheduler never lets two processes train one fold."""
    try:
        result = subprocess.run(
            ["squeue", "--noheader", "--format=%T", "--jobs", job_id],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return True
    if result.returncode != 0:
        # squeue exits non-zero with "Invalid job id" for jobs it no longer knows
        return "invalid job id" not in result.stderr.lower()
    return bool(result.stdout.strip())


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


# ---- status -------------------------------------------------------------------------------------
def write_status(paths: FoldPaths, **fields: Any) -> None:
    """Merge ``fields`` into ``status.json`` (state, epoch, epochs, best, eta_s, ...)."""
    status = _read_json(paths.status)
    status.update(fields)
    status["updated"] = _now()
    status["pid"] = os.getpid()
    status["host"] = socket.gethostname()
    write_json_atomic(paths.status, status)


def read_status(paths: FoldPaths) -> dict[str, Any]:
    """The fold's status, with ``state`` corrected for a dead process (→ ``interrupted``)."""
    status = _read_json(paths.status)
    if paths.finished():
        status["state"] = "finished"
    elif status.get("state") == "running" and not _alive(_read_json(paths.lock)):
        status["state"] = "interrupted"  # no lock file (reads as {}) or its process is gone
    if not status and paths.root.is_dir():
        status["state"] = "pending"
    status.setdefault("epochs_done", len(read_jsonl(paths.metrics)))
    return status


# ---- summary ------------------------------------------------------------------------------------
def summarise_run(run_dir: str | Path) -> dict[str, Any]:
    """Mean ± std (population std, ddof=0) of test metrics over finished folds; writes
    ``RUN/summary.json`` atomically and returns it."""
    run = Path(run_dir)
    per_fold: dict[int, dict[str, Any]] = {}
    for fold in list_folds(run):
        paths = fold_paths(run, fold)
        if paths.test_metrics.is_file():
            per_fold[fold] = _read_json(paths.test_metrics)
    summary: dict[str, Any] = {"folds": sorted(per_fold), "n_folds": len(per_fold)}
    for level in LEVELS:
        stats: dict[str, Any] = {}
        for metric in SUMMARY_METRICS:
            values = [
                per_fold[f][level][metric]
                for f in sorted(per_fold)
                if level in per_fold[f] and per_fold[f][level].get(metric) is not None
            ]
            values = [float(v) for v in values if v is not None and np.isfinite(v)]
            if values:
                stats[metric] = {
                    "mean": float(np.mean(values)),
                    "std": float(np.std(values)),
                    "values": values,
                }
        if stats:
            summary[level] = stats
    found = [per_fold[f].get("consistency") for f in sorted(per_fold)]
    consistency = [c for c in found if c is not None]
    if consistency:
        summary["consistency"] = {"mean": float(np.mean(consistency)), "values": consistency}
    summary["updated"] = _now()
    write_json_atomic(run / "summary.json", summary)
    return summary
