"""submitit executors for the ``local`` and ``slurm`` launchers, built from ``LauncherConfig``.

submitit is the standard Python front-end to SLURM; its ``LocalExecutor`` runs the very same
pickled job as a local process, so the two launchers differ only in the executor built here.
The concrete executors are used (not ``AutoExecutor``) because they take each backend's own
parameter names: ``launcher.extra`` is handed to ``SlurmExecutor.update_parameters`` as is
(``constraint``, ``exclude``, ``setup``, ``signal_delay_s``, ``additional_parameters`` …), and
the local executor accepts ``visible_gpus``, which ``AutoExecutor`` does not pass through.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from hmil.config import LauncherConfig
from hmil.errors import ConfigError, RunError

#: name of the submitit folder inside a run directory (or an extraction's output folder)
JOBS_DIR = "jobs"
#: where the local job controllers' own output goes (inside ``JOBS_DIR``)
CONTROLLER_LOG = "controllers.log"


@dataclass(frozen=True)
class Backend:
    """One submitit-backed launcher kind.

    Attributes:
        make: builds the executor on a folder.
        parameters: ``(launcher config, job name)`` → ``update_parameters`` keywords.
        waits: whether the CLI waits for the jobs by default. Local jobs are processes of this
            machine, so ``hmil train`` behaves like the inline launcher; SLURM jobs outlive the
            login shell, so the CLI prints their ids and returns.
        slots: whether parallel folds are bounded by worker slots (locally: this machine's
            CPUs and GPUs are shared; on SLURM the scheduler bounds them).
    """

    make: Callable[[Path], submitit.Executor]
    parameters: Callable[[LauncherConfig, str], dict[str, Any]]
    waits: bool
    slots: bool


def _local_parameters(cfg: LauncherConfig, job_name: str) -> dict[str, Any]:
    """The local executor kills a job after ``timeout_min`` (its default is 2 minutes), and it
    sets ``CUDA_VISIBLE_DEVICES`` from ``gpus_per_node`` (default: none), so both are set from
    this machine: the config's time limit and every GPU this process can see."""
    gpus = visible_gpus()
    params: dict[str, Any] = {"timeout_min": cfg.time_min, "tasks_per_node": 1, "nodes": 1}
    if gpus:
        params.update(gpus_per_node=len(gpus), visible_gpus=gpus)
    return params


def slurm_parameters(cfg: LauncherConfig, job_name: str) -> dict[str, Any]:
    """sbatch options: one task on one node; GPUs and memory only when requested (some
    clusters reject ``--gpus-per-node=0``); ``launcher.extra`` last, so it can override.

    Raises:
        ConfigError: a value holding a line break or another control character. Each option
            becomes an ``#SBATCH --key=value`` line of the job script, so a line break would
            start a shell line of the script; only ``setup`` entries are shell lines by design
            (and the viewer never lets anyone set them, see ``viewer/core/train_form.py``).
    """
    params: dict[str, Any] = {
        "job_name": job_name,
        "time": cfg.time_min,
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": cfg.cpus_per_job,
    }
    optional = {
        "gpus_per_node": cfg.gpus_per_job,
        "mem": f"{cfg.mem_gb}GB" if cfg.mem_gb else "",
        "partition": cfg.partition,
        "account": cfg.account,
        "qos": cfg.qos,
    }
    params.update({key: value for key, value in optional.items() if value})
    params.update(cfg.extra)
    for key, value in params.items():
        if key != "setup":
            _check_one_line(f"launcher.{key}", value)
    return params


def _check_one_line(key: str, value: Any) -> None:
    """Every string in ``value`` (nested in lists and dicts too) is one printable line."""
    if isinstance(value, dict):
        for sub_key, sub in value.items():
            _check_one_line(f"{key}.{sub_key}", sub_key)
            _check_one_line(f"{key}.{sub_key}", sub)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_one_line(key, item)
    elif isinstance(value, str) and _CONTROL.search(value):
        raise ConfigError(
            key, "must be one line without control characters (it becomes an #SBATCH line)"
        )


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


#: launcher kind → its submitit backend (``inline`` needs none: it runs in this process)
BACKENDS: dict[str, Backend] = {
    "local": Backend(submitit.LocalExecutor, _local_parameters, waits=True, slots=True),
    "slurm": Backend(submitit.SlurmExecutor, slurm_parameters, waits=False, slots=False),
}


def backend(kind: str) -> Backend:
    """The submitit backend of launcher ``kind``; a ConfigError naming ``launcher.kind``
    otherwise."""
    if kind not in BACKENDS:
        raise ConfigError(
            "launcher.kind", f"'{kind}' runs no jobs (expected {', '.join(BACKENDS)})"
        )
    return BACKENDS[kind]


def make_executor(kind: str, folder: Path, cfg: LauncherConfig, job_name: str) -> submitit.Executor:
    """A configured submitit executor writing its pickles, scripts and logs into ``folder``.

    Raises:
        RunError: SLURM requested where there is no ``srun`` (not a SLURM login node).
        ConfigError: a SLURM parameter (``launcher.extra``) submitit does not know.
    """
    chosen = backend(kind)
    try:
        executor = chosen.make(folder)
    except RuntimeError as exc:  # SlurmExecutor: "Could not detect srun"
        raise RunError(
            "launcher.kind", f"{kind}: {_first_line(exc)} (run on a login node)"
        ) from None
    try:
        executor.update_parameters(**chosen.parameters(cfg, job_name))
    except (ValueError, NameError, TypeError) as exc:
        raise ConfigError("launcher.extra", _first_line(exc)) from None
    return executor


@contextlib.contextmanager
def children_stderr_to(path: Path) -> Iterator[None]:
    """Processes started in the block inherit ``path`` (appended) as their stderr.

    submitit's local executor starts a controller process per job that inherits this
    process's stderr; when Ctrl-C stops a run, each controller prints a KeyboardInterrupt
    traceback there, i.e. on the user's terminal. Submitting inside this block sends that to a
    log instead (the jobs' own output goes to their log files anyway).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as log:
            os.dup2(log.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def visible_gpus() -> tuple[int, ...]:
    """GPU indices this process may use, in the numbering ``CUDA_VISIBLE_DEVICES`` uses.

    submitit's local executor *replaces* ``CUDA_VISIBLE_DEVICES`` for its jobs, so the indices
    must be the physical ones this process sees (``2,3`` stays ``2,3``). Non-integer entries
    (GPU UUIDs, MIG ids) cannot be passed through; then the first ``n`` indices are used.
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        entries = [e.strip() for e in env.split(",") if e.strip()]
        if all(re.fullmatch(r"\d+", e) for e in entries):
            return tuple(int(e) for e in entries)
        return tuple(range(len(entries)))
    import torch

    return tuple(range(torch.cuda.device_count()))


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask, which cgroups and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
