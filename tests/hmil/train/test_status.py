"""``hmil status`` on a run whose folds are in every state, from files alone (no training)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hmil.cli import main
from hmil.config import Config
from hmil.io import write_json_atomic
from hmil.launch.training import plan_folds
from hmil.train.api import prepare_run
from hmil.train.runs import FoldLock, fold_paths
from hmil.train.status import fold_views

HOST = socket.gethostname()


def _status(run: Path, fold: int, **fields: object) -> None:
    write_json_atomic(fold_paths(run, fold).status, {"host": HOST, "pid": 1, **fields})


def _epochs(run: Path, fold: int, n: int) -> None:
    path = fold_paths(run, fold).metrics
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"epoch": e}) + "\n" for e in range(n)))


def _job(run: Path, fold: int, job_id: int, jobs: Path) -> None:
    write_json_atomic(
        fold_paths(run, fold).root / "job.json",
        {
            "launcher": "local",
            "job_id": str(job_id),
            "host": HOST,
            "jobs_dir": str(jobs),
            "stderr": str(jobs / f"{job_id}_0_log.err"),
        },
    )


@pytest.fixture
def run(small_cohort: Path, split_cohort: Path, tmp_path: Path):
    """A run with folds 0..6: finished, running, interrupted, queued, failed, pending, and a
    local job whose pid now belongs to an unrelated process (it ended before training)."""
    config = Config().override(
        {
            "data.labels": str(small_cohort / "labels.csv"),
            "data.features": str(small_cohort),
            "data.splits": str(split_cohort),
            "data.hierarchy": "bracs",
            "train.epochs": 10,
        }
    )
    run = prepare_run(config, tmp_path / "run")
    jobs = run / "jobs"
    best = {"epochs": 10, "select_metric": "fine_auc", "best_epoch": 7, "best_value": 0.875}
    _status(run, 0, state="finished", epoch=9, **best)
    _epochs(run, 0, 10)
    fold_paths(run, 0).checkpoint.write_bytes(b"x")
    fold_paths(run, 0).test_metrics.write_text("{}")

    _status(
        run, 1, state="running", epoch=3, eta_s=600.0, updated="2999-01-01T00:00:00+00:00", **best
    )
    _epochs(run, 1, 4)
    _job(run, 1, 111, jobs)

    _status(run, 2, state="running", epoch=1, **best)  # killed: no lock left
    _epochs(run, 2, 2)

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "submitit"])
    _status(run, 3, state="queued")
    _job(run, 3, sleeper.pid, jobs)

    _status(run, 4, state="failed", error="s7: no bag s7.h5 or s7.pt")
    _job(run, 4, 2**22 + 17, jobs)  # a pid that does not exist

    fold_paths(run, 5).root.mkdir()
    _job(run, 6, os.getpid(), jobs)  # alive, but not a submitit process: pid reused
    with FoldLock(fold_paths(run, 1)):
        yield run
    sleeper.kill()
    sleeper.wait()


def test_status_shows_every_state(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    views = {v.fold: v for v in fold_views(run)}
    states = {f: v.state for f, v in views.items()}
    assert states == {
        0: "finished",
        1: "running",
        2: "interrupted",
        3: "queued",
        4: "failed",
        5: "pending",
        6: "failed",
    }
    assert (views[1].epochs_done, views[1].epochs, views[1].best_value) == (4, 10, 0.875)
    assert views[1].eta_s == 600.0 and views[0].eta_s is None
    assert views[2].epochs_done == 2 and views[2].best_epoch == 7
    assert views[4].error == "s7: no bag s7.h5 or s7.pt"
    assert views[6].error.startswith(f"job {os.getpid()} ended before training started; see ")

    assert main(["status", str(run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        f"{run}: 7 fold(s): 2 failed, 1 finished, 1 interrupted, 1 pending, 1 queued, 1 running"
    )
    assert lines[1].split() == ["fold", "state", "epoch", "best", "eta", "job"]
    # a fold without job.json was trained inline (by the process in its status)
    assert lines[2].split() == ["0", "finished", "10/10", "fine_auc", "0.8750", "@7", "-", "inline"]
    assert lines[3].split() == [
        "1",
        "running",
        "4/10",
        "fine_auc",
        "0.8750",
        "@7",
        "0:10:00",
        "local",
        "111",
    ]
    assert lines[4].split()[:3] == ["2", "interrupted", "2/10"]
    assert lines[5].split()[:2] == ["3", "queued"] and lines[5].split()[-2:][0] == "local"
    assert lines[7].split() == ["5", "pending", "-", "-", "-", "-"]
    assert "fold 4: s7: no bag s7.h5 or s7.pt" in lines

    assert main(["status", str(run), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["counts"] == {
        "finished": 1,
        "running": 1,
        "interrupted": 1,
        "queued": 1,
        "failed": 2,
        "pending": 1,
    }
    assert payload["folds"][1]["job_id"] == "111" and payload["folds"][1]["launcher"] == "local"


def test_launching_over_live_folds_is_refused(run: Path) -> None:
    from hmil.errors import RunError

    with pytest.raises(RunError, match="already running"):
        plan_folds(run, [1], resume=True)
    with pytest.raises(RunError, match=r"already queued \(local job \d+\)"):
        plan_folds(run, [3], resume=True)
    to_run, done = plan_folds(run, [0, 2, 4, 5, 6], resume=True)
    assert to_run == [2, 4, 5, 6] and [d.fold for d in done] == [0]
    with pytest.raises(RunError, match="fold already has training files"):
        plan_folds(run, [2], resume=False)


def test_status_of_a_directory_that_is_not_a_run(tmp_path: Path, capsys) -> None:
    assert main(["status", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}: not a run directory (no config.yaml)\n"
