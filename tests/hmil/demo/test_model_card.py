"""``hmil.demo.model_card``: which fold ships with the demo, where, and how the card words it
(the card itself is written by the end-to-end demo test,
tests/hmil/demo/test_pipeline_end_to_end.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from hmil.demo import model_card
from hmil.demo.model_card import FoldChoice, choose_fold, default_checkpoint_dir
from hmil.errors import HMILError

REPO = Path(__file__).resolve().parents[3]


def write_fold(run: Path, fold: int, epochs: list[dict[str, Any]], finished: bool = True) -> None:
    """``fold_<k>`` with one ``metrics.jsonl`` line per epoch record (and the finished files)."""
    root = run / f"fold_{fold}"
    root.mkdir(parents=True)
    (root / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in epochs))
    if finished:
        (root / "checkpoint.pt").write_bytes(b"weights")
        (root / "test_metrics.json").write_text("{}")


def epoch(number: int, value: float | None, loss: float, best: bool) -> dict[str, Any]:
    select = {"metric": "fine_auc", "value": value, "best": best}
    return {"epoch": number, "val": {"loss": loss}, "select": select}


def test_the_fold_with_the_best_validation_score_ships(tmp_path: Path) -> None:
    write_fold(tmp_path, 0, [epoch(0, 0.70, 1.0, True), epoch(1, 0.60, 0.9, False)])
    write_fold(tmp_path, 1, [epoch(0, 0.50, 1.0, True), epoch(3, 0.80, 1.2, True)])
    write_fold(tmp_path, 2, [epoch(0, 0.99, 0.1, True)], finished=False)  # not finished
    assert choose_fold(tmp_path) == FoldChoice(fold=1, metric="fine_auc", value=0.80, epoch=3)


def test_ties_go_to_the_lower_loss_then_the_lower_fold(tmp_path: Path) -> None:
    write_fold(tmp_path, 0, [epoch(2, 0.75, 0.5, True)])
    write_fold(tmp_path, 1, [epoch(4, 0.75, 0.4, True)])
    write_fold(tmp_path, 2, [epoch(1, 0.75, 0.4, True)])
    assert choose_fold(tmp_path).fold == 1


def test_an_undefined_score_ranks_last(tmp_path: Path) -> None:
    write_fold(tmp_path, 0, [epoch(0, None, 0.1, True)])
    write_fold(tmp_path, 1, [epoch(0, 0.2, 2.0, True)])
    choice = choose_fold(tmp_path)
    assert choice.fold == 1 and choice.value == pytest.approx(0.2)


def test_a_run_without_a_finished_fold_is_refused(tmp_path: Path) -> None:
    write_fold(tmp_path, 0, [epoch(0, 0.7, 1.0, False)])  # finished, but no best epoch recorded
    write_fold(tmp_path, 1, [epoch(0, 0.7, 1.0, True)], finished=False)
    with pytest.raises(HMILError, match="no finished fold with a checkpoint and validation"):
        choose_fold(tmp_path)


def test_the_checkpoint_goes_to_this_checkouts_demo_folder() -> None:
    assert default_checkpoint_dir() == REPO / "checkpoints" / "demo"


def test_card_wording() -> None:
    assert model_card._bags(1) == "1 bag" and model_card._bags(64) == "64 bags"
    assert model_card._averaging(0.0, 0.0) == "the kept weights are the live ones (no average)"
    assert model_card._averaging(0.0, 1.0).endswith("average over 1 epoch")
    assert model_card._averaging(0.0, 0.5).endswith("average over 0.5 epochs")
    assert model_card._averaging(0.999, 0.5).endswith("average (decay 0.999)")
    assert model_card._fmt(0.12345) == "0.123" and model_card._fmt(math.nan) == "n/a"
    assert model_card._fmt(None) == "n/a"


def _calibration(before: float, after: float, t_fine: float, call: dict[str, Any]) -> Any:
    level = {"before": {"ece": before}, "after": {"ece": after}}
    return {"temperature": {"fine": t_fine, "coarse": 1.0}, "fine": level, "coarse": level,
            "coarse_head": level, "call": call}  # fmt: skip


def test_the_card_states_ece_temperatures_and_the_call_pooled_over_folds() -> None:
    calls = [
        {"coverage_target": 0.9, "n": 10, "coverage": 1.0, "share_fine": 0.6,
         "share_coarse": 0.2, "share_none": 0.2},
        {"coverage_target": 0.9, "n": 30, "coverage": 0.8, "share_fine": 0.2,
         "share_coarse": 0.4, "share_none": 0.4},
    ]  # fmt: skip
    sections = {
        0: _calibration(0.10, 0.04, 1.8, calls[0]),
        1: _calibration(0.2, 0.06, 1.2, calls[1]),
    }
    text = "\n".join(model_card.calibration_section(sections, {0: 12, 1: 12}, shipped=1))
    assert "| fine | 0.150 | 0.050 |" in text and "| coarse classifier | 0.150 | 0.050 |" in text
    assert "fine T = 1.20, coarse classifier T = 1.00 in the shipped fold 1" in text
    assert "per fold: fine 1.80, 1.20;" in text
    # (10·1.0 + 30·0.8) / 40 = 0.85; fine (6 + 6) / 40 = 30 %; coarse (2 + 12) / 40 = 35 %
    assert "right on 0.85 of the 40 test slides; fine answer on 30 %, coarse only on 35 %" in text
    assert "guarantee needs" not in text  # 12 validation slides are enough at 90 %
    few = "\n".join(model_card.calibration_section(sections, {0: 7, 1: 8}, shipped=0))
    assert "fitted its call on 7 or 8 validation slides; a 90 % guarantee needs at least 9" in few
    assert model_card.calibration_section({}, {}, shipped=0) == []


def test_the_calibration_of_a_trained_run_is_read_from_its_files(tiny_run: Path) -> None:
    sections, validation_n = model_card.read_calibration(tiny_run)
    assert list(sections) == [0]  # fold 1 never trained
    assert sections[0]["call"]["coverage_target"] == pytest.approx(0.9)
    assert validation_n[0] > 0  # the validation slides the call was fitted on
    lines = model_card.calibration_section(sections, validation_n, shipped=0)
    assert lines[0] == "## Calibrated confidence (held-out test slides of all folds)"
