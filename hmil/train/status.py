"""What each fold of a run is doing, whichever launcher started it (``hmil status``, viewer,
and the checks before a launch).

Three records are combined, each written by a different process so that none of them races:

* ``fold_<k>/status.json`` — written by the fold's own process (``queued`` while a local job
  waits for a worker slot, then ``loading``/``running``/``finished`` from the training loop,
  ``failed`` with the error, ``interrupted`` when stopped);
* ``fold_<k>/.lock`` — held (pid, its start time, host) while a process trains the fold;
* ``fold_<k>/job.json`` — written by the launcher at submission (launcher, job id, logs).

A status file alone cannot tell a live fold from a dead one (a killed process writes nothing),
so the lock's and the job's liveness decide: the lock holder's and the local controller's pid
and start time on this host (:func:`hmil.procs.record_alive`: a pid given to another process
since is dead), SLURM's ``sacct`` for cluster jobs. Where liveness cannot be checked (another
host, no ``sacct``) the files are trusted.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import shutil
import socket
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hmil.procs import record_alive
from hmil.train.runs import (
    FoldPaths,
    fold_paths,
    list_folds,
    load_run_config,
    read_status,
    resolve_folds,
)

JOB_FILE = "job.json"

#: the states ``hmil status`` reports
STATES = ("pending", "queued", "running", "finished", "interrupted", "failed")

#: status.json states written while a process is working on the fold
_ACTIVE = ("loading", "running", "stopping")

#: sacct states of a job that is still going to run (or running)
_SLURM_ALIVE = {
    "PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "COMPLETING",
    "CONFIGURING", "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING",
}  # fmt: skip
#: sacct states of a job that ended with an error (CANCELLED, TIMEOUT, PREEMPTED: interrupted)
_SLURM_FAILED = {"FAILED", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}


@dataclass
class JobActivity:
    """Whether a fold's job is still alive: True, False, or None when it cannot be checked."""

    alive: bool | None = None
    scheduler_state: str = ""


@dataclass
class FoldView:
    """One fold as ``hmil status`` shows it.

    Attributes:
        state: one of :data:`STATES`.
        epochs_done: finished epochs (lines of metrics.jsonl).
        epochs: planned epochs, when known.
        best_value: best validation value of ``select_metric`` so far, at ``best_epoch``.
        eta_s: seconds left (running folds only), from the last status update.
        launcher: ``inline``, ``local`` or ``slurm`` (``""``: never started).
        job_id: the scheduler's job id (local: the job's controller pid).
        scheduler_state: SLURM's own state word, when ``sacct`` answered.
        error: the problem of a failed fold.
        log: the job's stderr log.
        stop_requested: the fold's ``STOP`` file exists (the viewer's stop button): it stops,
            or stopped, after an epoch and tests the checkpoint kept so far.
    """

    fold: int
    state: str
    epochs_done: int = 0
    epochs: int | None = None
    best_value: float | None = None
    best_epoch: int | None = None
    select_metric: str = ""
    eta_s: float | None = None
    launcher: str = ""
    job_id: str = ""
    scheduler_state: str = ""
    error: str = ""
    log: str = ""
    updated: str = ""
    stop_requested: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def progress_line(self) -> str:
        """``fold 1: running, epoch 3/10, best fine_auc 0.812 (epoch 2)`` (no ETA: the line is
        printed when it changes, and the ETA changes every second)."""
        parts = [f"fold {self.fold}: {self.state}"]
        if self.epochs:
            parts.append(f"epoch {self.epochs_done}/{self.epochs}")
        if self.best_value is not None:
            metric = self.select_metric or "value"
            parts.append(f"best {metric} {self.best_value:.4f} (epoch {self.best_epoch})")
        if self.error:
            parts.append(self.error)
        return ", ".join(parts)

    def describe(self) -> str:
        """The state in words with the epoch reached (the viewer's Training page).

        ``finished`` alone would hide that a fold ended before its planned epochs, so such a
        fold says why (a stop request, early stopping), and an interrupted one says that
        ``--resume`` continues it from the epoch it reached.
        """
        total = self.epochs or 0
        reached = f"epoch {self.epochs_done}/{total}" if total else f"epoch {self.epochs_done}"
        short = self.epochs_done < total
        if self.state == "interrupted":
            when = f"after {reached}" if self.epochs_done else "before its first epoch"
            return f"interrupted {when}: continue it (resume)"
        if self.state == "finished" and short:
            if self.stop_requested:
                return f"stopped on request after {reached}, then tested"
            return f"finished early (early stopping) after {reached}"
        if self.state == "running" and self.stop_requested:
            return f"stopping after the current epoch, {reached}"
        if self.state in ("finished", "running", "failed") and (self.epochs_done or self.epochs):
            return f"{self.state}, {reached}"
        return self.state


def read_job(paths: FoldPaths) -> dict[str, Any]:
    """The fold's ``job.json`` ({} when it was never submitted as a job)."""
    return _read_json(paths.root / JOB_FILE)


def fold_view(run_dir: str | Path, fold: int) -> FoldView:
    """The state of one fold (see :func:`fold_views`)."""
    return fold_views(run_dir, [fold])[0]


def fold_views(run_dir: str | Path, folds: list[int] | None = None) -> list[FoldView]:
    """The state of each fold: the run's planned folds (``data.folds`` of its config, when its
    splits are still readable) and every ``fold_<k>`` directory present."""
    run = Path(run_dir)
    wanted = folds if folds is not None else planned_folds(run)
    jobs = {fold: read_job(fold_paths(run, fold)) for fold in wanted}
    activity = job_activities(jobs)
    return [_view(fold_paths(run, fold), fold, jobs[fold], activity[fold]) for fold in wanted]


def planned_folds(run: Path) -> list[int]:
    """The folds a run will have: those its config and splits name, plus any fold directory."""
    from hmil.data.splits import list_split_files
    from hmil.errors import HMILError

    planned: list[int] = []
    try:
        config = load_run_config(run)
        planned = resolve_folds(config.data.folds, list(list_split_files(config.data.splits)))
    except HMILError:
        pass  # splits moved or deleted: show the folds that have directories
    return sorted(set(planned) | set(list_folds(run)))


def _view(paths: FoldPaths, fold: int, job: dict[str, Any], activity: JobActivity) -> FoldView:
    status = read_status(paths) if paths.root.is_dir() else {}
    raw = status.get("state", "")
    state = _resolve_state(paths, raw, job, activity)
    best = status.get("best_value")
    view = FoldView(
        fold=fold,
        state=state,
        epochs_done=int(status.get("epochs_done", 0)),
        epochs=status.get("epochs"),
        best_value=float(best) if isinstance(best, int | float) and math.isfinite(best) else None,
        best_epoch=status.get("best_epoch"),
        select_metric=str(status.get("select_metric", "")),
        launcher=str(job.get("launcher") or ("inline" if status.get("pid") else "")),
        job_id=str(job.get("job_id", "")),
        scheduler_state=activity.scheduler_state,
        error=str(status.get("error", "")) if state == "failed" else "",
        log=str(job.get("stderr", "")),
        updated=str(status.get("updated", "")),
        stop_requested=paths.stop_request.is_file(),
    )
    if view.best_value is None:
        view.best_epoch = None
    if state == "failed" and not view.error:
        view.error = _failure_hint(job, activity)
    if state == "running":
        view.eta_s = _eta(status)
    return view


def _resolve_state(paths: FoldPaths, raw: str, job: dict[str, Any], activity: JobActivity) -> str:
    """Map the files and the job's liveness onto one of :data:`STATES` (order matters: a
    finished fold is finished whatever its job says; a live lock beats a stale status)."""
    if paths.finished():
        return "finished"
    lock = lock_alive(paths)  # a lock checked alive wins; one on another host needs the job
    if raw in _ACTIVE and (lock is True or (lock is None and activity.alive is not False)):
        return "running"
    if activity.alive:
        return "queued"  # submitted: pending in SLURM, waiting for a slot, or starting up
    if raw == "failed" or activity.scheduler_state in _SLURM_FAILED:
        return "failed"
    if raw in (*_ACTIVE, "interrupted", "queued") or paths.started():
        return "interrupted"
    if job and activity.alive is False:
        return "failed"  # the job ended before the fold's process wrote anything
    return "pending"


def _failure_hint(job: dict[str, Any], activity: JobActivity) -> str:
    where = f"see {job['stderr']}" if job.get("stderr") else "see the job's log"
    if activity.scheduler_state:
        return f"job {job.get('job_id', '')} ended {activity.scheduler_state}; {where}"
    return f"job {job.get('job_id', '')} ended before training started; {where}"


def _eta(status: dict[str, Any]) -> float | None:
    eta = status.get("eta_s")
    if not isinstance(eta, int | float):
        return None
    try:
        updated = _dt.datetime.fromisoformat(str(status.get("updated")))
    except ValueError:
        return float(eta)
    elapsed = (_dt.datetime.now(_dt.UTC) - updated).total_seconds()
    return max(0.0, float(eta) - max(0.0, elapsed))


# ---- liveness ---------------------------------------------------------------------------------
def process_alive(host: str | None, record: dict[str, Any]) -> bool | None:
    """Whether the process a record names (``pid``, ``pid_start``) lives on ``host``: None when
    ``host`` is another machine (see :func:`hmil.procs.record_alive`)."""
    if host != socket.gethostname():
        return None
    return record_alive(record)


def lock_alive(paths: FoldPaths) -> bool | None:
    """Whether the fold's lock is held by a live process (None: held on another host)."""
    holder = _read_json(paths.lock)
    if not holder:
        return False
    return process_alive(holder.get("host"), holder)


def _is_submitit(argv: Sequence[str]) -> bool:
    """A local job's controller (``python -m submitit.local._local``)."""
    return any("submitit" in arg for arg in argv)


def _local_activity(jobs: dict[int, dict[str, Any]]) -> dict[int, JobActivity]:
    out = {}
    for fold, job in jobs.items():
        result = Path(str(job.get("jobs_dir", ""))) / f"{job.get('job_id')}_0_result.pkl"
        if result.is_file():
            out[fold] = JobActivity(alive=False)
            continue
        pid = int(job["job_id"]) if str(job.get("job_id", "")).isdigit() else None
        record = {"pid": pid, "pid_start": job.get("pid_start")}
        alive = None
        if job.get("host") == socket.gethostname():  # older records: the controller's command
            alive = record_alive(record, legacy=_is_submitit)
        out[fold] = JobActivity(alive=alive)
    return out


def _slurm_activity(jobs: dict[int, dict[str, Any]]) -> dict[int, JobActivity]:
    states = slurm_states([str(job.get("job_id", "")) for job in jobs.values()])
    out = {}
    for fold, job in jobs.items():
        state = states.get(str(job.get("job_id", "")), "")
        alive = None if not state else state in _SLURM_ALIVE
        out[fold] = JobActivity(alive=alive, scheduler_state=state)
    return out


#: launcher kind → how to check its jobs (folds trained inline have no job)
ACTIVITY: dict[str, Callable[[dict[int, dict[str, Any]]], dict[int, JobActivity]]] = {
    "local": _local_activity,
    "slurm": _slurm_activity,
}


def job_activities(jobs: dict[int, dict[str, Any]]) -> dict[int, JobActivity]:
    """Liveness of each fold's job, one query per launcher kind (one ``sacct`` call for all)."""
    out = {fold: JobActivity() for fold in jobs}
    for kind, check in ACTIVITY.items():
        mine = {f: j for f, j in jobs.items() if j.get("launcher") == kind and j.get("job_id")}
        if mine:
            out.update(check(mine))
    return out


def slurm_states(job_ids: list[str], timeout_s: float = 30.0) -> dict[str, str]:
    """``{job id: state}`` from one ``sacct`` call ({} without ``sacct`` or when it fails).

    ``sacct -X`` lists allocations only (not job steps); the first word of the state is kept
    (``CANCELLED by 123`` → ``CANCELLED``); a requeued job's last line wins.
    """
    ids = sorted({i for i in job_ids if i})
    if not ids or shutil.which("sacct") is None:
        return {}
    command = ["sacct", "-X", "--noheader", "--parsable2", "-o", "JobID,State", "-j", ",".join(ids)]
    try:
        output = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    states: dict[str, str] = {}
    for line in output.splitlines():
        job_id, _, state = line.partition("|")
        if job_id.strip() and state.strip():
            states[job_id.strip()] = state.split()[0].rstrip("+")
    return states


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
