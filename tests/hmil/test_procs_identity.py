"""A process is named by its pid *and* its start time: once a process ends, the kernel hands its
pid to the next one, and a lock or launch record naming the pid alone would then read as alive
for as long as that unrelated process runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from hmil.procs import looks_like_training, pid_alive, process_record, process_start, record_alive

_SLEEP = "import time; time.sleep(60)"


def _ended(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()


def test_the_start_time_tells_a_reused_pid_from_its_first_process() -> None:
    me = process_start(os.getpid())
    assert isinstance(me, int) and me > 0
    assert pid_alive(os.getpid(), started=me)
    assert not pid_alive(os.getpid(), started=me + 1)  # the same pid, another process
    assert process_start(2**22 + 17) is None and process_start("12") is None
    child = subprocess.Popen([sys.executable, "-c", _SLEEP])
    try:
        assert process_start(child.pid) not in (None, me)
    finally:
        _ended(child)


def test_a_record_is_alive_only_while_its_own_process_runs() -> None:
    mine = process_record()
    assert mine == {"pid": os.getpid(), "pid_start": process_start(os.getpid())}
    assert record_alive(mine)
    assert not record_alive({**mine, "pid_start": mine["pid_start"] + 5})
    assert not record_alive({"pid": 2**22 + 17, "pid_start": 1})
    assert not record_alive({}) and not record_alive({"pid": "x"})


def test_an_old_record_without_start_time_is_alive_only_for_a_training_command_line() -> None:
    assert not record_alive({"pid": os.getpid()})  # pytest: a live process, but no training
    trainer = subprocess.Popen([sys.executable, "-c", _SLEEP, "-m", "hmil", "train"])
    try:
        deadline = time.monotonic() + 10
        while not record_alive({"pid": trainer.pid}) and time.monotonic() < deadline:
            time.sleep(0.05)  # /proc shows the new command line once exec has run
        assert record_alive({"pid": trainer.pid})
    finally:
        _ended(trainer)
    assert not record_alive({"pid": trainer.pid})


def test_which_command_lines_are_trainings() -> None:
    assert looks_like_training(["/venv/bin/hmil", "train", "--out", "run"])
    assert looks_like_training(["/usr/bin/python3", "-I", "-u", "-m", "hmil", "train"])
    assert looks_like_training(["python", "-u", "-m", "submitit.core._submit", "/run/jobs"])
    assert not looks_like_training(["python", "-m", "pytest", "-k", "train"])
    assert not looks_like_training(["/venv/bin/hmil", "view", "run"])
    assert not looks_like_training(["sleep", "60"])
    assert not looks_like_training([])
