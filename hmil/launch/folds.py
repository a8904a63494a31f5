"""The fold job: what a local worker process or a SLURM job runs for one fold.

It waits for a worker slot (local launcher), picks its GPU, pins torch's threads and calls
:func:`hmil.train.api.run_fold_job`, which rebuilds the fold from ``RUN/config.yaml``. This
module is imported when a job is unpickled, before it may start, so it imports nothing heavy
at module level: a fold waiting for a slot should not hold a torch import in memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from submitit.helpers import Checkpointable, DelayedSubmission

from hmil.errors import HMILError
from hmil.launch.executors import JOBS_DIR
from hmil.train.runs import fold_paths, write_status
from hmil.train.status import lock_alive

if TYPE_CHECKING:
    from hmil.train.loop import FoldResult

SLOTS_DIR = "slots"


@dataclass(frozen=True)
class FoldJobSpec:
    """Everything a fold job needs besides ``RUN/config.yaml``.

    Attributes:
        run_dir: the run directory (absolute).
        fold: the fold index.
        resume: continue the fold from its last finished epoch.
        strict: stop at the first bad bag.
        threads: torch intra-op threads (0: leave torch's default).
        slots: worker slots shared by the local launcher's jobs (0: start at once).
    """

    run_dir: str
    fold: int
    resume: bool = False
    strict: bool = False
    threads: int = 0
    slots: int = 0


class FoldJob(Checkpointable):
    """Callable submitted to submitit; on preemption or time-out it requeues itself with
    ``resume=True``, so the fold continues from its last finished epoch (``state.pt``)."""

    def __call__(self, spec: FoldJobSpec) -> FoldResult:
        return run_fold_in_job(spec)

    def checkpoint(self, spec: FoldJobSpec) -> DelayedSubmission:
        return DelayedSubmission(FoldJob(), replace(spec, resume=True))


def run_fold_in_job(spec: FoldJobSpec) -> FoldResult:
    """Train one fold inside a job; a failure is recorded in ``status.json`` and re-raised."""
    paths = fold_paths(spec.run_dir, spec.fold)
    slot_holder: contextlib.AbstractContextManager[int | None] = contextlib.nullcontext(None)
    if spec.slots:
        folder = Path(spec.run_dir) / JOBS_DIR / SLOTS_DIR
        queued = functools.partial(write_status, paths, state="queued")
        slot_holder = worker_slot(folder, spec.slots, on_wait=queued)
    try:
        with slot_holder as slot:
            from hmil.train.api import run_fold_job
            from hmil.train.runs import load_run_config

            device = assigned_device(load_run_config(spec.run_dir).train.device, slot)
            write_status(paths, worker={"slot": slot, "device": device, "threads": spec.threads})
            return run_fold_job(
                spec.run_dir, spec.fold, resume=spec.resume, strict=spec.strict, verbose=True,
                on_skip=_log_skip, device=device, threads=spec.threads,
            )  # fmt: skip
    except Exception as exc:
        if lock_alive(paths) is False:  # never overwrite the status of a fold another job runs
            message = str(exc) if isinstance(exc, HMILError) else f"{type(exc).__name__}: {exc}"
            write_status(paths, state="failed", error=message)
        raise


@contextlib.contextmanager
def worker_slot(
    folder: Path, n_slots: int, on_wait: Callable[[], None] | None = None, poll_s: float = 0.5
) -> Iterator[int]:
    """Hold one of ``n_slots`` slot locks (``folder/slot_<i>.lock``) for the block.

    ``flock`` locks are released by the kernel when their process ends, however it ends, so a
    killed fold can never leak its slot. The lowest free slot is taken, which maps slot ``i``
    to GPU ``i mod n_gpus`` (:func:`assigned_device`). ``on_wait`` is called once when every
    slot is busy.
    """
    folder.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for index in range(n_slots):
            fd = os.open(folder / f"slot_{index}.lock", os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                yield index
            finally:
                os.close(fd)  # closing the only descriptor releases the lock
            return
        if not waited and on_wait is not None:
            on_wait()
        waited = True
        time.sleep(poll_s)


def assigned_device(configured: str, slot: int | None) -> str | None:
    """``cuda:<slot mod n_gpus>`` when the config asks for ``auto``/``cuda``, several GPUs are
    visible and the fold holds a slot; otherwise None (the config's device is used)."""
    if slot is None or configured not in ("auto", "cuda"):
        return None
    import torch

    n_gpus = torch.cuda.device_count()
    return f"cuda:{slot % n_gpus}" if n_gpus > 1 else None


def _log_skip(where: str, problem: str) -> None:
    """Skipped bags go to the job's log in the CLI's ``error: <where>: <problem>`` form."""
    print(f"error: {where}: {problem}", file=sys.stderr, flush=True)
