"""``hmil split``: k stratified splits written as CLAM CSVs, with a warning for folds without
validation slides."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from hmil.cli import main
from hmil.cli import split as split_cli


def test_k_splits_partition_the_cohort(small_cohort: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "splits"
    argv = ["split", "--labels", str(small_cohort / "labels.csv"), "--k", "3", "--out", str(out)]
    assert main([*argv, "--hierarchy", "bracs", "--seed", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        str(out / f"splits_{k}.csv") for k in range(3)
    ]
    tests: list[str] = []
    for k in range(3):
        frame = pd.read_csv(out / f"splits_{k}.csv")
        assert list(frame.columns[-3:]) == ["train", "val", "test"]
        parts = {c: set(frame[c].dropna()) for c in ("train", "val", "test")}
        assert not parts["train"] & parts["test"] and not parts["val"] & parts["test"]
        assert lines[k].endswith(
            f"train {len(parts['train'])}, val {len(parts['val'])}, test {len(parts['test'])}"
        )
        tests += parts["test"]
    assert len(tests) == len(set(tests)) == 42  # k-fold: the test parts partition the cohort


def test_no_validation_part_is_warned_about(small_cohort: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "splits"
    argv = ["split", "--labels", str(small_cohort / "labels.csv"), "--k", "2", "--out", str(out)]
    assert main([*argv, "--val-frac", "0"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {out}: some folds have no validation slides" in err
    assert "--select-metric last" in err


def test_a_label_outside_the_hierarchy_is_an_error(tmp_path: Path, capsys) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("slide_id,label\na,N\nb,PB\nc,tumour\n", encoding="utf-8")
    argv = ["split", "--labels", str(labels), "--k", "2", "--out", str(tmp_path / "s")]
    assert main([*argv, "--hierarchy", "bracs"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "tumour" in err and "\n" not in err
    assert not (tmp_path / "s" / "splits_0.csv").exists()


def test_the_command_declares_its_output_folder() -> None:
    assert split_cli.NAME == "split"
    assert split_cli.OUTPUTS == {"out": "folder"}


def test_a_bad_fold_count_is_refused(small_cohort: Path, tmp_path: Path, capsys) -> None:
    argv = ["split", "--labels", str(small_cohort / "labels.csv"), "--out", str(tmp_path / "s")]
    assert main([*argv, "--k", "1"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    with pytest.raises(SystemExit) as exit_info:  # not a number: argparse's usage error
        main([*argv, "--k", "x"])
    assert exit_info.value.code == 2
    assert "argument --k: invalid int value: 'x'" in capsys.readouterr().err
