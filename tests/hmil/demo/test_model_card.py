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
