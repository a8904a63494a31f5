"""The local launcher end to end: folds as parallel submitit processes, bit-identical to
sequential inline training at the same thread count (SYNTHETIC bags)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from scaleout_helpers import train_args

from hmil.cli import main
from hmil.io import read_jsonl
from hmil.launch.folds import assigned_device, worker_slot
from hmil.train.runs import fold_paths

#: the same pinned thread count in both launchers: CPU kernels split reductions by thread
#: count, so 1 vs 2 threads already differ in the last bits of the losses
FAST = [
    "--folds",
    "0,1",
    "--epochs",
    "3",
    "--bags-per-step",
    "8",
    "--device",
    "cpu",
    "--threads",
    "1",
]


def _strip_times(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time_s"} for r in records]


def test_parallel_local_folds_equal_sequential_inline(
    small_cohort: Path, split_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inline, local = tmp_path / "inline", tmp_path / "local"
    start = time.monotonic()
    assert main(train_args(small_cohort, split_cohort, inline, *FAST, "--quiet")) == 0
    inline_s = time.monotonic() - start
    capsys.readouterr()
    start = time.monotonic()
    code = main(
        train_args(
            small_cohort, split_cohort, local, *FAST, "--launcher", "local", "--workers", "2"
        )
    )
    local_s = time.monotonic() - start
    out, err = capsys.readouterr()
    assert code == 0, err
    with capsys.disabled():
        print(f"\nwall time: inline sequential {inline_s:.1f} s, local 2 workers {local_s:.1f} s")

    for fold in (0, 1):
        a, b = fold_paths(inline, fold), fold_paths(local, fold)
        assert _strip_times(read_jsonl(a.metrics)) == _strip_times(read_jsonl(b.metrics))
        assert len(read_jsonl(b.metrics)) == 3
        assert json.loads(a.test_metrics.read_text()) == json.loads(b.test_metrics.read_text())
        pd.testing.assert_frame_equal(pd.read_csv(a.predictions), pd.read_csv(b.predictions))
        wa = torch.load(a.checkpoint, weights_only=True)["state_dict"]
        wb = torch.load(b.checkpoint, weights_only=True)["state_dict"]
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
        job = json.loads((b.root / "job.json").read_text())
        assert job["launcher"] == "local" and job["job_id"].isdigit()
        assert job["threads"] == 1 and job["slots"] == 2
        assert Path(job["stderr"]).is_file() and "fold" in Path(job["stderr"]).read_text()
    # slot 1 is only taken while slot 0 is held: the two folds really overlapped in time
    slots = {json.loads(fold_paths(local, f).status.read_text())["worker"]["slot"] for f in (0, 1)}
    assert slots == {0, 1}
    summary_a = json.loads((inline / "summary.json").read_text())
    summary_b = json.loads((local / "summary.json").read_text())
    assert summary_a["fine"] == summary_b["fine"] and summary_b["n_folds"] == 2
    # the CLI reports like the inline launcher, with progress lines from the run directory
    assert "fold 0: best epoch" in out and "fold 1: best epoch" in out
    assert "summary.json: fine balanced accuracy" in out
    # (lines are polled once a second, so only the states every run passes through are checked)
    assert "fold 0: queued" in err or "fold 0: running" in err
    assert "fold 0: finished, epoch 3/3" in err and "fold 1: finished, epoch 3/3" in err

    assert main(["status", str(local)]) == 0
    table = capsys.readouterr().out
    assert "2 fold(s): 2 finished" in table
    assert f"local {json.loads((local / 'fold_0' / 'job.json').read_text())['job_id']}" in table
    # a second launch into the same run is refused before anything is submitted
    assert main(train_args(small_cohort, split_cohort, local, *FAST, "--launcher", "local")) == 2
    assert "fold already finished" in capsys.readouterr().err


def test_a_failing_fold_job_is_reported_with_its_error(
    small_cohort: Path, split_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    cohort = tmp_path / "cohort"
    shutil.copytree(small_cohort, cohort)
    victim = pd.read_csv(split_cohort / "splits_0.csv")["train"].dropna().iloc[0]
    (cohort / "features" / f"{victim}.h5").unlink()
    run = tmp_path / "run"
    args = train_args(
        cohort,
        split_cohort,
        run,
        "--folds",
        "0",
        "--epochs",
        "1",
        "--strict",
        "--launcher",
        "local",
        "--quiet",
    )
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"error: {run}/fold_0: {victim}: no bag {victim}.h5 or {victim}.pt" in err
    assert "(log: " in err and "Traceback" not in err
    status = json.loads(fold_paths(run, 0).status.read_text())
    assert status["state"] == "failed" and victim in status["error"]
    assert main(["status", str(run), "--json"]) == 0
    view = json.loads(capsys.readouterr().out)["folds"][0]
    assert view["state"] == "failed" and victim in view["error"] and view["log"].endswith(".err")


def test_worker_slots_bound_parallel_jobs(tmp_path: Path) -> None:
    """Slots are flock locks: the lowest free one is taken, a waiter gets the first released."""
    waited: list[str] = []
    got: list[int] = []
    with worker_slot(tmp_path, 2) as first, worker_slot(tmp_path, 2) as second:
        assert (first, second) == (0, 1)

        def third() -> None:
            with worker_slot(tmp_path, 2, on_wait=lambda: waited.append("x"), poll_s=0.02) as s:
                got.append(s)

        thread = threading.Thread(target=third)
        thread.start()
        time.sleep(0.2)
        assert got == [] and waited == ["x"]  # both slots busy: queued
    thread.join(timeout=5)
    assert got in ([0], [1])
    with worker_slot(tmp_path, 1) as again:  # released when the block ends
        assert again == 0


def test_gpus_are_assigned_round_robin_by_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert [assigned_device("auto", s) for s in range(4)] == [
        "cuda:0",
        "cuda:1",
        "cuda:2",
        "cuda:0",
    ]
    assert assigned_device("cuda", 4) == "cuda:1"
    assert assigned_device("cpu", 1) is None  # an explicit device is kept
    assert assigned_device("cuda:2", 0) is None
    assert assigned_device("auto", None) is None  # no slot (SLURM): the job's own GPUs
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert assigned_device("auto", 1) is None


@pytest.mark.slow
def test_detached_folds_queue_for_one_worker_and_show_in_status(
    small_cohort: Path, split_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    args = train_args(
        small_cohort, split_cohort, run, *FAST, "--launcher", "local", "--workers", "1", "--detach"
    )
    start = time.monotonic()
    assert main(args) == 0
    assert time.monotonic() - start < 10  # returned without waiting for training
    out = capsys.readouterr().out
    assert "fold 0: local job" in out and "fold 1: local job" in out and "hmil status" in out
    seen: set[tuple[str, ...]] = set()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert main(["status", str(run), "--json"]) == 0
        states = tuple(f["state"] for f in json.loads(capsys.readouterr().out)["folds"])
        seen.add(states)
        if states == ("finished", "finished"):
            break
        time.sleep(0.5)
    assert ("finished", "finished") in seen
    # one worker: never two folds running at once, and the second fold waited its turn
    assert ("running", "running") not in seen
    assert any("queued" in states and "running" in states for states in seen)
    slots = [json.loads(fold_paths(run, f).status.read_text())["worker"]["slot"] for f in (0, 1)]
    assert slots == [0, 0]
