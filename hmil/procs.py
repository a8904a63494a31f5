"""Is a process still running? One answer for fold locks, job and launch records and the viewer.

A pid alone names a process only while it runs: once it ends, the kernel hands the number to
a later process, and a record naming the pid alone would read as alive for as long as that
unrelated process runs (a killed training's lock would block its own resume). Records therefore
keep the process's start time too (:func:`process_record`), and :func:`record_alive` counts a
record as alive only while the pid runs *and* started at that time. Records written before the
start time was kept count as alive only while the pid runs an ``hmil train`` (or a submitit job).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

#: the record key holding the process's start time (clock ticks after boot, ``/proc/<pid>/stat``)
START_KEY = "pid_start"


def pid_alive(pid: object, cmd_hint: str = "", started: int | None = None) -> bool:
    """True while process ``pid`` of this machine runs.

    A zombie (exited, not yet reaped by its parent) counts as ended. Two guards against pid
    reuse, each applied where ``/proc`` is readable: ``started``, the process's start time as
    :func:`process_start` gave it, must match; ``cmd_hint`` must be in its command line. A
    process we may not signal (another user's) counts as running.
    """
    if not _is_pid(pid):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    fields = _stat_fields(pid)
    if fields is None:
        return True  # no /proc (macOS): os.kill already said it exists
    if fields[0] == "Z":
        return False
    if started is not None and _start_of(fields) not in (None, started):
        return False
    if cmd_hint:
        argv = process_argv(pid)
        return argv is None or cmd_hint in " ".join(argv)
    return True


def process_start(pid: object) -> int | None:
    """When process ``pid`` started, in clock ticks after boot (None: no such process, or no
    ``/proc``). With the pid it names one process: a later process given the same pid has a
    later start time."""
    if not _is_pid(pid):
        return None
    fields = _stat_fields(pid)
    return None if fields is None else _start_of(fields)


def process_argv(pid: int) -> list[str] | None:
    """The command line of process ``pid`` (None when ``/proc`` cannot tell)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").rstrip("\0").split("\0") if raw else []


def process_record(pid: int | None = None) -> dict[str, int]:
    """``{"pid", "pid_start"}`` of ``pid`` (default: this process), for a lock or launch record
    that :func:`record_alive` checks later; ``pid_start`` is left out where unknown."""
    pid = os.getpid() if pid is None else pid
    start = process_start(pid)
    return {"pid": pid} if start is None else {"pid": pid, START_KEY: start}


def looks_like_training(argv: Sequence[str]) -> bool:
    """Whether a command line trains folds: ``hmil train`` (the console script or
    ``python -m hmil``) or a submitit job (a local or SLURM fold job)."""
    names = [Path(arg).name for arg in argv]
    if any(name.startswith("submitit") for name in names):
        return True
    return any(name == "hmil" and "train" in names[index + 1 :] for index, name in enumerate(names))


def record_alive(
    record: Mapping[str, Any], legacy: Callable[[Sequence[str]], bool] = looks_like_training
) -> bool:
    """Whether the process a record of this machine names (``pid``, ``pid_start``) still runs.

    A record without ``pid_start`` (written by an older hmil) counts as alive only while its
    pid runs and its command line passes ``legacy`` (by default: a training), so a stale one
    never blocks once its pid belongs to an unrelated process.
    """
    pid = record.get("pid")
    start = record.get(START_KEY)
    if _is_pid(start):
        return pid_alive(pid, started=start)
    if not _is_pid(pid) or not pid_alive(pid):
        return False
    argv = process_argv(pid)
    return argv is None or legacy(argv)


def _is_pid(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name (field 3, the state, comes first); None
    when unreadable. The name is in parentheses and may hold spaces, hence the split on the
    last ')'."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_of(fields: list[str]) -> int | None:
    """Field 22 of ``/proc/<pid>/stat`` (``starttime``) from :func:`_stat_fields`."""
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None
