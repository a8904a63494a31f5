"""End to end through the CLI: split → train 2 folds → evaluate → predict (SYNTHETIC bags)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from scaleout_helpers import train_args

from hmil.cli import main
from hmil.io import read_jsonl
from hmil.train.runs import FoldLock, fold_paths

FAST = ["--epochs", "3", "--bags-per-step", "8", "--device", "cpu", "--quiet"]


def _split(cohort: Path, out: Path, k: int = 3) -> Path:
    splits = out / "splits"
    assert (
        main(
            [
                "split",
                "--labels",
                str(cohort / "labels.csv"),
                "--k",
                str(k),
                "--out",
                str(splits),
                "--hierarchy",
                "bracs",
                "--seed",
                "0",
            ]
        )
        == 0
    )
    return splits


def _strip_times(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time_s"} for r in records]


def test_split_train_evaluate_predict(small_cohort, tmp_path, capsys):
    start = time.monotonic()
    splits = _split(small_cohort, tmp_path)
    run = tmp_path / "run"
    assert main(train_args(small_cohort, splits, run, "--folds", "0,1", *FAST)) == 0
    for fold in (0, 1):
        paths = fold_paths(run, fold)
        records = read_jsonl(paths.metrics)
        assert [r["epoch"] for r in records] == [0, 1, 2]
        assert records[0]["beta"] == 1.0 and records[2]["beta"] == pytest.approx(1 / 3)
        assert set(records[0]["train"]["terms"]) == {
            "ce_fine",
            "ce_coarse",
            "bag_align",
            "inst_align",
            "supcon",
        }
        assert {"fine", "coarse", "coarse_head"} <= set(records[0]["val"])
        test = json.loads(paths.test_metrics.read_text())
        assert test["n"] == len(pd.read_csv(paths.predictions))
        assert len(test["fine"]["confusion_matrix"]) == 7
        assert "specificity" in test["coarse"] and "coarse_head" in test
        preds = pd.read_csv(paths.predictions)
        assert {"slide_id", "true_fine", "pred_fine", "pred_coarse", "consistent"} <= set(preds)
        fine_cols = [c for c in preds if c.startswith("p_fine_")]
        assert len(fine_cols) == 7
        assert (preds[fine_cols].sum(axis=1) - 1).abs().max() < 1e-4
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_folds"] == 2
    bacc = summary["fine"]["balanced_accuracy"]
    assert len(bacc["values"]) == 2 and bacc["std"] >= 0
    config = (run / "config.yaml").read_text()
    assert "epochs: 3" in config and str(small_cohort.resolve()) in config

    # evaluate recomputes the same numbers from the checkpoints
    before = json.loads(fold_paths(run, 0).test_metrics.read_text())
    assert main(["evaluate", "--run", str(run), "--fold", "0", "--device", "cpu"]) == 0
    after = json.loads(fold_paths(run, 0).test_metrics.read_text())
    assert after["fine"]["balanced_accuracy"] == pytest.approx(before["fine"]["balanced_accuracy"])
    assert after["fine"]["macro_auc"] == pytest.approx(before["fine"]["macro_auc"], nan_ok=True)

    # predict: contract record, attention on request
    bag = small_cohort / "features" / "synth-0000.h5"
    out = tmp_path / "pred.jsonl"
    ckpt = str(fold_paths(run, 0).checkpoint)
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                ckpt,
                str(bag),
                "--out",
                str(out),
                "--attention",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    record = json.loads(out.read_text().splitlines()[0])
    assert record["slide_id"] == "synth-0000"
    assert sum(record["fine"]["probs"].values()) == pytest.approx(1, abs=1e-4)
    assert sum(record["coarse"]["probs"].values()) == pytest.approx(1, abs=1e-4)
    assert set(record["attention"]["fine"]) == {"N", "PB", "UDH", "FEA", "ADH", "DCIS", "IC"}
    assert len(record["attention"]["coarse"]["benign"]) == record["n_instances"]
    assert isinstance(record["consistent"], bool)
    assert time.monotonic() - start < 60


def test_same_seed_gives_the_same_metrics(small_cohort, tmp_path):
    splits = _split(small_cohort, tmp_path)
    for name in ("a", "b"):
        assert (
            main(
                train_args(
                    small_cohort,
                    splits,
                    tmp_path / name,
                    "--folds",
                    "1",
                    "--epochs",
                    "2",
                    "--bags-per-step",
                    "4",
                    "--quiet",
                )
            )
            == 0
        )
    a = _strip_times(read_jsonl(fold_paths(tmp_path / "a", 1).metrics))
    b = _strip_times(read_jsonl(fold_paths(tmp_path / "b", 1).metrics))
    assert a == b


def test_second_training_into_the_same_run_is_refused(small_cohort, tmp_path, capsys):
    splits = _split(small_cohort, tmp_path)
    run = tmp_path / "run"
    args = train_args(small_cohort, splits, run, "--folds", "0", "--epochs", "1", "--quiet")
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "fold_0: fold already finished" in err
    assert "Traceback" not in err
    # a fold held by a live process (this one) is refused too
    run2 = tmp_path / "run2"
    with FoldLock(fold_paths(run2, 0)):
        assert (
            main(train_args(small_cohort, splits, run2, "--folds", "0", "--epochs", "1", "--quiet"))
            == 2
        )
    assert "already being trained by pid" in capsys.readouterr().err


def test_missing_bag_is_reported_and_skipped(small_cohort, tmp_path, capsys):
    import shutil

    cohort = tmp_path / "cohort"
    shutil.copytree(small_cohort, cohort)
    splits = _split(cohort, tmp_path)
    victim = pd.read_csv(splits / "splits_0.csv")["train"].dropna().iloc[0]
    (cohort / "features" / f"{victim}.h5").unlink()
    run = tmp_path / "run"
    code = main(train_args(cohort, splits, run, "--folds", "0", "--epochs", "1", "--quiet"))
    assert code == 3
    err = capsys.readouterr().err
    assert f"error: {victim}: no bag {victim}.h5 or {victim}.pt" in err
    test = json.loads(fold_paths(run, 0).test_metrics.read_text())
    assert test["skipped"][0]["where"] == victim
    strict = main(
        train_args(
            cohort,
            splits,
            tmp_path / "run_strict",
            "--folds",
            "0",
            "--epochs",
            "1",
            "--quiet",
            "--strict",
        )
    )
    assert strict == 2


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_result(small_cohort, tmp_path):
    """SIGKILL a real `hmil train` process mid-run, resume it, compare with an uninterrupted run."""
    splits = _split(small_cohort, tmp_path)
    common = ["--folds", "0", "--epochs", "6", "--bags-per-step", "4", "--device", "cpu", "--quiet"]
    reference = tmp_path / "reference"
    assert main(train_args(small_cohort, splits, reference, *common)) == 0

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "hmil", *train_args(small_cohort, splits, run, *common)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    metrics = fold_paths(run, 0).metrics
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(read_jsonl(metrics)) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before_kill = len(read_jsonl(metrics))
    assert 2 <= done_before_kill < 6
    assert not fold_paths(run, 0).test_metrics.exists()

    assert main(train_args(small_cohort, splits, run, *common, "--resume")) == 0
    got = _strip_times(read_jsonl(metrics))
    want = _strip_times(read_jsonl(fold_paths(reference, 0).metrics))
    assert [r["epoch"] for r in got] == list(range(6))
    assert got == want
    a = torch.load(fold_paths(run, 0).checkpoint, weights_only=True)["state_dict"]
    b = torch.load(fold_paths(reference, 0).checkpoint, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    test_a = json.loads(fold_paths(run, 0).test_metrics.read_text())
    test_b = json.loads(fold_paths(reference, 0).test_metrics.read_text())
    assert test_a["fine"] == test_b["fine"]
