"""Fold states from files whose processes are gone: a lock or a local job record whose pid was
handed to another process reads as dead, and each state reads in words with the epoch reached
(an interrupted fold says it can be continued; a fold that ended before its planned epochs says
why)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hmil.io import write_json_atomic
from hmil.procs import process_start
from hmil.train.runs import fold_paths
from hmil.train.status import fold_views

HOST = socket.gethostname()


@pytest.fixture
def stranger() -> Iterator[int]:
    """A live process started after the records below: it holds a pid they name, and its
    command line even says ``submitit`` (an older job record's only check)."""
    code = "import time; time.sleep(120)"
    proc = subprocess.Popen([sys.executable, "-c", code, "submitit", "hmil", "train"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _fold(run: Path, fold: int, state: str, done: int, total: int = 300) -> None:
    paths = fold_paths(run, fold)
    paths.root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        paths.status,
        {"state": state, "epoch": done - 1, "epochs": total, "host": HOST, "pid": 1},
    )
    paths.metrics.write_text("".join(json.dumps({"epoch": e}) + "\n" for e in range(done)))


def _finished(run: Path, fold: int, done: int, total: int = 300) -> None:
    _fold(run, fold, "finished", done, total)
    fold_paths(run, fold).checkpoint.write_bytes(b"x")
    fold_paths(run, fold).test_metrics.write_text("{}")


def test_a_lock_whose_pid_now_runs_another_process_reads_interrupted(
    tmp_path: Path, stranger: int
) -> None:
    started = process_start(stranger)
    assert started is not None
    _fold(tmp_path, 0, "running", 11)
    write_json_atomic(
        fold_paths(tmp_path, 0).lock, {"pid": stranger, "host": HOST, "pid_start": started - 1}
    )
    _fold(tmp_path, 1, "running", 11)  # an older lock: no start time, pid runs no training
    write_json_atomic(fold_paths(tmp_path, 1).lock, {"pid": os.getpid(), "host": HOST})
    _fold(tmp_path, 2, "running", 11)  # the same lock, its process still there
    write_json_atomic(
        fold_paths(tmp_path, 2).lock, {"pid": stranger, "host": HOST, "pid_start": started}
    )
    assert [v.state for v in fold_views(tmp_path)] == ["interrupted", "interrupted", "running"]


def test_a_local_job_whose_controller_pid_was_reused_is_not_queued(
    tmp_path: Path, stranger: int
) -> None:
    started = process_start(stranger)
    assert started is not None
    for fold, start in ((0, started - 1), (1, started)):
        fold_paths(tmp_path, fold).root.mkdir()
        job = {"launcher": "local", "job_id": str(stranger), "host": HOST, "pid_start": start}
        write_json_atomic(fold_paths(tmp_path, fold).root / "job.json", job)
    assert [v.state for v in fold_views(tmp_path)] == ["failed", "queued"]


def test_each_state_reads_in_words_with_the_epoch_reached(tmp_path: Path) -> None:
    _fold(tmp_path, 0, "running", 11)  # killed: no lock left
    _finished(tmp_path, 1, 11)
    fold_paths(tmp_path, 1).stop_request.write_text("{}")  # the page's stop button
    _finished(tmp_path, 2, 11)  # early stopping
    _finished(tmp_path, 3, 300)
    _fold(tmp_path, 4, "interrupted", 0)
    fold_paths(tmp_path, 5).root.mkdir()
    views = fold_views(tmp_path)
    assert [v.state for v in views] == [
        "interrupted", "finished", "finished", "finished", "interrupted", "pending",
    ]  # fmt: skip
    assert [v.stop_requested for v in views] == [False, True, False, False, False, False]
    assert [v.describe() for v in views] == [
        "interrupted after epoch 11/300: continue it (resume)",
        "stopped on request after epoch 11/300, then tested",
        "finished early (early stopping) after epoch 11/300",
        "finished, epoch 300/300",
        "interrupted before its first epoch: continue it (resume)",
        "pending",
    ]
