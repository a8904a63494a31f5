"""``hmil evaluate``: a run's folds re-evaluated from their checkpoints, one line per fold."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from hmil.cli import evaluate as evaluate_cli
from hmil.cli import main


@pytest.fixture()
def run(tiny_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    return copy


def test_every_fold_with_a_checkpoint_is_evaluated(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (run / "fold_0" / "predictions.csv").unlink()
    (run / "summary.json").unlink()
    argv = ["evaluate", "--run", str(run), "--device", "cpu", "--decoding", "top_down"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    pattern = r"fold 0: n=21 fine bacc \d\.\d{3} auc \d\.\d{3} \| coarse bacc \d\.\d{3}"
    assert re.match(pattern, out[0])
    assert out[0].endswith("| consistency 1.000 (top_down)")  # top-down is consistent
    metrics = json.loads((run / "fold_0" / "test_metrics.json").read_text())
    assert metrics["decoding"] == "top_down"
    assert (run / "fold_0" / "predictions.csv").is_file()
    assert json.loads((run / "summary.json").read_text())["n_folds"] == 1


def test_a_fold_without_a_checkpoint_is_an_error(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", "--run", str(run), "--fold", "1", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {run}: no fold with a checkpoint to evaluate\n"


def test_an_unknown_decoding_is_refused_by_the_parser(run: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--run", str(run), "--decoding", "coarse_first"])
    assert exit_info.value.code == 2
    assert evaluate_cli.NAME == "evaluate"
