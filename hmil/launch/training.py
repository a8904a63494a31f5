"""``hmil train --launcher inline|local|slurm``: run a run's folds in this process, in parallel
local worker processes, or as SLURM jobs — one job per fold, each calling
:func:`hmil.train.api.run_fold_job`.

Determinism: every fold is seeded by the config alone (not by its order or its worker), and
:func:`hmil.train.api.pinned_threads` pins torch's threads the same way in every launcher, so
with the same ``launcher.threads`` a fold trained in a local worker is bit-identical to the
same fold trained inline (``tests/hmil/launch``). With ``threads: 0`` the local launcher gives each
of ``workers`` folds ``CPUs // workers`` threads, and CPU kernels split their reductions by
thread count, so results then match an inline run only in the first ~7 digits.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

from hmil.config import Config, LauncherConfig
from hmil.data.splits import list_split_files
from hmil.io import write_json_atomic
from hmil.launch.executors import (
    CONTROLLER_LOG,
    JOBS_DIR,
    backend,
    children_stderr_to,
    make_executor,
    usable_cpus,
)
from hmil.launch.folds import FoldJob, FoldJobSpec
from hmil.procs import START_KEY, process_start
from hmil.train.api import (
    RunResult,
    absolute_paths,
    plan_folds,
    prepare_run,
    train,
)
from hmil.train.cohort import SkipHandler
from hmil.train.runs import fold_paths, resolve_folds, summarise_run
from hmil.train.status import JOB_FILE, fold_view

LineSink = Callable[[str], None]


@dataclass
class Submission:
    """One fold job handed to a scheduler."""

    fold: int
    launcher: str
    job_id: str
    stdout: Path
    stderr: Path


@dataclass
class LaunchOutcome:
    """What a launch did.

    Attributes:
        run_dir: the run directory.
        launcher: the launcher kind.
        submitted: the fold jobs submitted (none for inline).
        result: per-fold results and the summary, once the folds have ended (None when the
            jobs were left running: ``--detach`` or SLURM).
        failed: ``(fold, problem)`` of each fold whose job failed.
    """

    run_dir: Path
    launcher: str
    submitted: list[Submission] = field(default_factory=list)
    result: RunResult | None = None
    failed: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class LaunchRequest:
    """The arguments of :func:`launch_training`, passed to the chosen launcher."""

    config: Config
    out: Path
    resume: bool = False
    strict: bool = False
    verbose: bool = True
    detach: bool = False
    on_skip: SkipHandler | None = None
    on_line: LineSink | None = None
    poll_s: float = 1.0


def launch_training(
    config: Config,
    out: str | Path,
    *,
    resume: bool = False,
    strict: bool = False,
    verbose: bool = True,
    detach: bool = False,
    on_skip: SkipHandler | None = None,
    on_line: LineSink | None = None,
    poll_s: float = 1.0,
) -> LaunchOutcome:
    """Train ``config.data.folds`` with the launcher ``config.launcher.kind``.

    Args:
        config: the run config; its ``launcher`` section chooses where folds run.
        out: the run directory.
        resume: continue interrupted folds and skip finished ones.
        strict: stop a fold at its first bad bag.
        verbose: progress output (inline: bars; jobs: their logs always get progress lines).
        detach: return right after submitting local jobs instead of waiting for them.
        on_skip: called with ``(where, problem)`` for each item skipped (inline only; jobs log
            them).
        on_line: receives one progress line whenever a fold's state or epoch changes while
            waiting for local jobs.
        poll_s: seconds between two looks at the jobs while waiting.

    Raises:
        RunError: a fold is finished (without ``resume``), already started (without
            ``resume``), or being run by another process or job; or the launcher is not
            available here (SLURM without ``srun``).
    """
    request = LaunchRequest(
        config, Path(out), resume, strict, verbose, detach, on_skip, on_line, poll_s
    )
    return LAUNCHERS[config.launcher.kind](request)


def _launch_inline(request: LaunchRequest) -> LaunchOutcome:
    """The folds one after another in this process (``hmil.train.api.train``, unchanged)."""
    result = train(
        request.config, request.out, resume=request.resume, strict=request.strict,
        verbose=request.verbose, on_skip=request.on_skip,
    )  # fmt: skip
    return LaunchOutcome(run_dir=result.run_dir, launcher="inline", result=result)


def _launch_jobs(request: LaunchRequest) -> LaunchOutcome:
    """One submitit job per fold; wait for local jobs unless detached."""
    config = absolute_paths(request.config)
    run = prepare_run(config, request.out, request.resume)  # checks everything, then writes
    folds = resolve_folds(config.data.folds, list(list_split_files(config.data.splits)))
    to_run, already = plan_folds(run, folds, request.resume)
    cfg = config.launcher
    chosen = backend(cfg.kind)
    outcome = LaunchOutcome(run_dir=run, launcher=cfg.kind)
    jobs: dict[int, submitit.Job[Any]] = {}
    if to_run:
        threads = job_threads(cfg)
        slots = cfg.workers if chosen.slots else 0
        executor = make_executor(cfg.kind, run / JOBS_DIR, cfg, job_name=f"hmil-{run.name}")
        log = run / JOBS_DIR / CONTROLLER_LOG
        with _surviving_hangup(request.detach and chosen.waits), children_stderr_to(log):
            for fold in to_run:
                spec = FoldJobSpec(str(run), fold, request.resume, request.strict, threads, slots)
                job = executor.submit(FoldJob(), spec)
                jobs[fold] = job
                outcome.submitted.append(_record_job(run, fold, cfg.kind, job, spec))
    if jobs and (request.detach or not chosen.waits):
        return outcome
    wait_for_folds(run, jobs, request.on_line, request.poll_s)
    result = RunResult(run_dir=run, folds=list(already))
    for fold, job in jobs.items():
        try:
            result.folds.append(job.result())
        except Exception as exc:  # the job's own error, re-raised by submitit
            outcome.failed.append((fold, _failure(run, fold, exc)))
    result.folds.sort(key=lambda f: f.fold)
    result.summary = summarise_run(run)
    outcome.result = result
    return outcome


#: launcher kind → how it runs a request
LAUNCHERS: dict[str, Callable[[LaunchRequest], LaunchOutcome]] = {
    "inline": _launch_inline,
    "local": _launch_jobs,
    "slurm": _launch_jobs,
}


def job_threads(cfg: LauncherConfig) -> int:
    """Torch threads per fold job: ``launcher.threads``, else the CPUs a job may use (local:
    this machine's CPUs shared by ``workers`` folds; SLURM: ``cpus_per_job``)."""
    if cfg.threads:
        return cfg.threads
    return max(1, usable_cpus() // cfg.workers) if cfg.kind == "local" else cfg.cpus_per_job


def wait_for_folds(
    run: Path, jobs: dict[int, submitit.Job[Any]], on_line: LineSink | None, poll_s: float = 1.0
) -> None:
    """Block until every job has ended, reporting each fold's progress as it changes.

    Ctrl-C cancels the jobs (their folds stop as ``interrupted`` and can be resumed) and
    re-raises; a detached launch never gets here.
    """
    shown: dict[int, tuple[str, int]] = {}
    try:
        while True:
            ended = all(job.done() for job in jobs.values())
            for fold in jobs:
                view = fold_view(run, fold)
                key = (view.state, view.epochs_done)
                if shown.get(fold) != key and on_line is not None:
                    on_line(view.progress_line())
                shown[fold] = key
            if ended:
                return
            time.sleep(poll_s)
    except KeyboardInterrupt:
        for job in jobs.values():
            job.cancel(check=False)
        raise


def _record_job(
    run: Path, fold: int, kind: str, job: submitit.Job[Any], spec: FoldJobSpec
) -> Submission:
    """Write ``fold_<k>/job.json``: what ``hmil status`` and the viewer need to find the job
    (a local job's id is its controller's pid, kept with its start time: the pid alone would
    name whichever process gets the number once the controller has ended)."""
    paths = job.paths
    record = {
        "launcher": kind,
        "job_id": str(job.job_id),
        "fold": fold,
        "submitted": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "jobs_dir": str(paths.folder),
        "stdout": str(paths.stdout),
        "stderr": str(paths.stderr),
        "submission_file": str(paths.submission_file) if kind == "slurm" else "",
        "threads": spec.threads,
        "slots": spec.slots,
        "resume": spec.resume,
    }
    start = (
        process_start(int(job.job_id)) if kind == "local" and str(job.job_id).isdigit() else None
    )
    if start is not None:
        record[START_KEY] = start
    write_json_atomic(fold_paths(run, fold).root / JOB_FILE, record)
    return Submission(fold, kind, str(job.job_id), paths.stdout, paths.stderr)


def _failure(run: Path, fold: int, exc: Exception) -> str:
    """The problem of a failed fold: the error its job recorded, else the exception's last
    line, with the log to read."""
    view = fold_view(run, fold)
    if view.error:
        problem = view.error
    else:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        problem = lines[-1].strip() if lines else type(exc).__name__
    return f"{problem} (log: {view.log})" if view.log else problem


@contextlib.contextmanager
def _surviving_hangup(enabled: bool) -> Iterator[None]:
    """Submit with SIGHUP ignored, so detached local jobs (which inherit the ignored signal)
    survive the terminal that launched them closing — ``nohup`` for submitit's processes."""
    if not enabled:
        yield
        return
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)
