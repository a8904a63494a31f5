"""A fold lock left by a killed training never blocks the next one, even after the killed
process's pid was handed to another process (locks name the process by pid and start time;
older locks without a start time count only while the pid runs an ``hmil train``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hmil.cli import main
from hmil.errors import RunError
from hmil.io import write_json_atomic
from hmil.procs import process_start
from hmil.train.runs import FoldLock, fold_paths, read_status

HOST = socket.gethostname()


@pytest.fixture
def reused_pid() -> Iterator[int]:
    """A live process that is no training: what a dead trainer's pid may belong to now."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _stale_locks(pid: int) -> list[dict[str, object]]:
    """The lock of a dead trainer whose pid now runs something else: old format, new format."""
    return [
        {"pid": pid, "host": HOST, "since": "2020-01-01T00:00:00+00:00"},
        {"pid": pid, "host": HOST, "since": "2020-01-01T00:00:00+00:00", "pid_start": 1},
    ]


def test_a_lock_whose_pid_was_reused_is_taken_over(tmp_path: Path, reused_pid: int) -> None:
    paths = fold_paths(tmp_path, 0)
    paths.root.mkdir()
    for stale in _stale_locks(reused_pid):
        write_json_atomic(paths.lock, stale)
        with FoldLock(paths):
            held = json.loads(paths.lock.read_text())
            assert held["pid"] == os.getpid()
            assert held["pid_start"] == process_start(os.getpid())
        assert not paths.lock.exists()


def test_a_live_lock_still_refuses_a_second_training(tmp_path: Path) -> None:
    paths = fold_paths(tmp_path, 0)
    with FoldLock(paths), pytest.raises(RunError, match="already being trained by pid"):
        FoldLock(paths).__enter__()


def test_a_running_status_with_a_reused_lock_reads_interrupted(
    tmp_path: Path, reused_pid: int
) -> None:
    paths = fold_paths(tmp_path, 0)
    paths.root.mkdir()
    write_json_atomic(paths.status, {"state": "running", "epoch": 10, "epochs": 300})
    for stale in _stale_locks(reused_pid):
        write_json_atomic(paths.lock, stale)
        assert read_status(paths)["state"] == "interrupted"


def test_resume_after_a_kill_whose_pid_was_reused(
    small_cohort: Path, tmp_path: Path, reused_pid: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: ``hmil train --resume`` exited 2 ("already being trained by pid …")."""
    splits = tmp_path / "splits"
    split = ["split", "--labels", str(small_cohort / "labels.csv"), "--k", "3"]
    assert main([*split, "--out", str(splits), "--hierarchy", "bracs", "--seed", "0"]) == 0
    run = tmp_path / "run"
    args = ["train", "--labels", str(small_cohort / "labels.csv"), "--features",
            str(small_cohort / "features"), "--splits", str(splits), "--hierarchy", "bracs",
            "--out", str(run), "--folds", "0", "--epochs", "2", "--bags-per-step", "8",
            "--device", "cpu", "--quiet"]  # fmt: skip
    assert main(args) == 0
    paths = fold_paths(run, 0)
    paths.test_metrics.unlink()  # killed before its test evaluation: resumable
    write_json_atomic(paths.status, {"state": "running", "epoch": 1, "epochs": 2, "pid": 1})
    for stale in _stale_locks(reused_pid):
        write_json_atomic(paths.lock, stale)
        capsys.readouterr()
        assert main([*args, "--resume"]) == 0, capsys.readouterr().err
        assert paths.finished() and not paths.lock.exists()
        paths.test_metrics.unlink()
