"""Detached ``hmil train`` processes started from the Training page: start, claim, records,
stop requests and log tails.

:func:`start_training_process` runs ``python -I -u -m hmil train --config
RUN/launches/<stamp>.yaml --out RUN ...`` as a detached process (own session, output in
``RUN/launches/<stamp>.log``) so the page stays responsive and the training survives a page
reload or the viewer itself. What is running is read back from disk only
(``RUN/launches.jsonl``; the folds' state is :mod:`viewer.core.fold_table`'s), so a fold
started from the command line shows up the same way. The ``launcher`` section of the config
(inline / local / slurm) is honoured by ``hmil train`` (:func:`hmil.launch.launch_training`,
which this module never calls: it starts the command, in its own process).

One launch per run at a time: deciding and starting one happens under a claim on the run
(:func:`launch_claim`), so of several sessions submitting at once one starts and the others
are told it is already running. A launch record names its process by pid and start time
(:func:`hmil.procs.record_alive`), so a record of a training that ended never blocks the next,
even once its pid belongs to another process. A launch over folds that already have files
passes ``--resume`` (interrupted folds go on from their last epoch, finished ones are skipped).

Whoever reaches the page may start training, so it runs nobody's code: the config is limited
by :mod:`viewer.core.train_form`, and ``hmil`` starts isolated (``-I``: no ``PYTHON*``
variables, neither the working directory nor the user's site-packages on ``sys.path``) in
:data:`SAFE_CWD`, so a ``yaml.py`` planted in a run folder is never imported. Every file the
page reads goes through :mod:`viewer.core.paths`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hmil.config import Config
from hmil.errors import RunError
from hmil.io import append_jsonl, read_jsonl, write_text_atomic
from hmil.procs import process_record, record_alive
from hmil.train.runs import fold_paths, list_folds
from viewer.core.paths import run_file
from viewer.core.train_form import resume_config

LAUNCHES = "launches.jsonl"
LAUNCH_DIR = "launches"
#: the claim file (in ``LAUNCH_DIR``) that one launch decision at a time holds
CLAIM = ".claim"
#: how long a launch waits for another one of the same run to be started
CLAIM_WAIT_S = 30.0
#: working directory of launched trainings: nothing anyone could plant files in
SAFE_CWD = Path(os.path.abspath(os.sep))


@dataclass(frozen=True)
class Launch:
    """One detached ``hmil train`` process started by the viewer (``resume``: it was given
    ``--resume``, some of its folds already had files)."""

    run: Path
    pid: int
    started: str
    folds: str
    log: Path
    config: Path
    command: tuple[str, ...]
    resume: bool = False


def _stamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")


def start_training_process(
    run: Path, config: Config, python: str = sys.executable, extra_args: tuple[str, ...] = ()
) -> Launch:
    """Start ``hmil train`` for ``config`` in a new session, detached from the viewer.

    Under the run's claim (:func:`launch_claim`): refused while a launch of this run is still
    running; ``--resume`` is passed when a fold to train already has files
    (:func:`resume_needed`). The process runs isolated (``python -I``) in :data:`SAFE_CWD`
    (see the module docstring); its output goes to ``RUN/launches/<stamp>.log``; the launch is
    recorded in ``RUN/launches.jsonl`` before the claim is released.

    Raises:
        RunError: a launch of this run is still running, or another one is being started
            and does not finish within :data:`CLAIM_WAIT_S`.
    """
    run.mkdir(parents=True, exist_ok=True)
    with launch_claim(run):
        running = running_launches(run)
        if running:
            raise RunError(run, already_running(running[0]))
        resume = resume_needed(run, config.data.folds)
        if resume and "--resume" not in extra_args:
            extra_args = (*extra_args, "--resume")
        return _start(run, config, python, extra_args, resume)


def _start(
    run: Path, config: Config, python: str, extra_args: tuple[str, ...], resume: bool
) -> Launch:
    """Spawn the process and record it (pid with its start time, read before the reaper
    thread may reap it, and host). A thread reaps the process when it ends (no zombie while
    the viewer lives; after the viewer exits, init reaps it)."""
    folder = run / LAUNCH_DIR
    stamp = _stamp()
    config_path = folder / f"{stamp}.yaml"
    log_path = folder / f"{stamp}.log"
    write_text_atomic(config_path, config.to_yaml())
    command = (
        python, "-I", "-u", "-m", "hmil", "train", "--config", str(config_path), "--out",
        str(run), "--folds", config.data.folds, *extra_args,
    )  # fmt: skip
    env = dict(os.environ)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(SAFE_CWD),
            env=env,
        )
    identity = process_record(proc.pid)
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    launch = Launch(
        run=run,
        pid=proc.pid,
        started=_dt.datetime.now().isoformat(timespec="seconds"),
        folds=config.data.folds,
        log=log_path,
        config=config_path,
        command=command,
        resume=resume,
    )
    append_jsonl(
        run / LAUNCHES,
        {
            **identity,
            "host": socket.gethostname(),
            "started": launch.started,
            "folds": launch.folds,
            "resume": resume,
            "log": str(log_path),
            "config": str(config_path),
            "command": list(command),
        },
    )
    return launch


@contextlib.contextmanager
def launch_claim(run: Path, wait_s: float = CLAIM_WAIT_S) -> Iterator[None]:
    """Hold the run's launch claim (``RUN/launches/.claim``) for the block.

    Deciding whether to launch and recording the launch happen under it, so concurrent
    submits (sessions of one server, or several viewers of this machine) see each other's
    launches instead of all starting one. It is an ``flock``: the kernel releases it when the
    descriptor closes, however the holder ends, so a claim is never left stale; separate opens
    exclude each other even between the threads of one process (a server's sessions).

    Raises:
        RunError: the claim file cannot be opened (a symlink is refused), or another launch
            holds the claim for more than ``wait_s``.
    """
    path = run / LAUNCH_DIR / CLAIM
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise RunError(path, f"cannot be opened ({exc.strerror})") from None
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RunError(run, "another launch is being started here; try again") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the claim


def resume_needed(run: Path, folds: str) -> bool:
    """Whether ``hmil train`` must get ``--resume`` for ``folds`` (``"all"`` or ``"0,2"``) of
    ``run``: one of them already has files. Without the flag hmil refuses such a fold; with it
    an interrupted fold goes on from its last finished epoch and a finished one is skipped."""
    try:
        wanted = [int(part) for part in folds.split(",") if part.strip()]
    except ValueError:
        wanted = []
    if not wanted:  # "all": every fold the run has a directory for
        wanted = list_folds(run)
    return any(fold_paths(run, f).started() or fold_paths(run, f).finished() for f in wanted)


def check_launch(run: Path, config: Config) -> None:
    """hmil's own checks of a launch, nothing written (:func:`hmil.train.api.check_run`), so
    the page reports a refusal at once instead of starting a process that exits with it in
    its log: missing splits, a resumed run whose config differs, a fold already running.

    Raises:
        HMILError: what ``hmil train`` would refuse.
    """
    from hmil.train.api import check_run

    check_run(config, run, resume_needed(run, config.data.folds))


def continue_run(run: Path, roots: tuple[Path, ...]) -> Launch:
    """Relaunch ``run`` with its own config and ``--resume``: interrupted folds go on from
    their last finished epoch, finished ones are skipped (raises HMILError, see
    :func:`viewer.core.train_form.resume_config` and :func:`check_launch`)."""
    config = resume_config(run, roots)
    check_launch(run, config)
    return start_training_process(run, config)


def read_launches(run: Path) -> list[dict[str, Any]]:
    """Launch records of ``run`` (newest first): ``pid``, ``started``, ``folds``, ``alive``
    (True/False: whether the launched process still runs; None: launched on another host) and
    ``log`` — the log file, or None when the record names none inside the run (a record
    pointing elsewhere is not followed)."""
    path = run_file(run, run / LAUNCHES)
    records = []
    for raw in read_jsonl(path) if path is not None else []:
        if not isinstance(raw, dict):
            continue
        log = raw.get("log")
        records.append(
            {
                "pid": raw.get("pid"),
                "started": str(raw.get("started", "")),
                "folds": str(raw.get("folds", "")),
                "alive": _launch_alive(raw),
                "log": run_file(run, log) if isinstance(log, str) and log else None,
            }
        )
    return records[::-1]


def running_launches(run: Path) -> list[dict[str, Any]]:
    """The launch records of ``run`` whose process still runs on this host (newest first)."""
    return [record for record in read_launches(run) if record["alive"]]


def already_running(record: dict[str, Any]) -> str:
    """The refusal of a launch while ``record``'s training runs."""
    return (
        f"a training is already running here (pid {record['pid']}, launched "
        f"{record['started']}); wait for it to end or stop its folds"
    )


def _launch_alive(raw: dict[str, Any]) -> bool | None:
    """Whether a launch record's process runs: pid and start time on this host (an older
    record without them: the pid runs an ``hmil train``); None for another host's record."""
    host = raw.get("host")
    if host is not None and host != socket.gethostname():
        return None
    return record_alive(raw)


def log_tail(path: Path | None, max_bytes: int = 4000) -> str:
    """The last ``max_bytes`` of a launch log (progress bars' carriage returns as newlines);
    '' for None or an unreadable file."""
    if path is None:
        return ""
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


def request_stop(run: Path, fold: int) -> Path:
    """Touch ``RUN/fold_<k>/STOP``; the trainer stops after its current epoch and evaluates."""
    path = fold_paths(run, fold).stop_request
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"requested": _dt.datetime.now().isoformat()}) + "\n")
    return path
