"""Flat MIL peers trained by ``hmil train``'s own fold loop, under their plain recipe and under
the HMIL defaults' recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.peers import (
    RECIPES,
    FlatPeer,
    TrainSettings,
    recipe_overrides,
    train_peer,
)
from hmil.config import Config
from hmil.data.labels import read_labels
from hmil.data.splits import make_splits
from hmil.hierarchy import Hierarchy
from hmil.io import read_jsonl
from hmil.train.runs import fold_paths


def _config(cohort: Path, recipe: str, settings: TrainSettings) -> Config:
    return Config().override(
        {
            "data.labels": str(cohort / "labels.csv"),
            "data.features": str(cohort / "features"),
            "train.device": "cpu",
            **recipe_overrides(recipe, settings),
        }
    )


@pytest.mark.parametrize("recipe", ["plain", "hmil"])
def test_flat_peer_trains_through_the_fold_loop(
    small_cohort: Path, bracs: Hierarchy, tmp_path: Path, recipe: str
) -> None:
    settings = TrainSettings(epochs=3, lr=1e-3, seed=2)
    config = _config(small_cohort, recipe, settings)
    labels = read_labels(small_cohort / "labels.csv", bracs)
    (split,) = make_splits(labels, k=1, seed=0, val_frac=0.2, test_frac=0.2)
    model, result = train_peer("flat_gated", config, bracs, split, tmp_path / "run")
    assert isinstance(model, FlatPeer) and not model.training
    paths = fold_paths(tmp_path / "run", 0)
    epochs = read_jsonl(paths.metrics)
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    assert 0 <= result.best_epoch <= 2
    lrs = [e["lr"] for e in epochs]
    state = torch.load(paths.state, weights_only=True)
    if recipe == "plain":  # cosine schedule, the live weights
        assert lrs[0] == pytest.approx(1e-3) and lrs[2] < lrs[1] < lrs[0]
        assert "weight_average" not in state
    else:  # the defaults: constant lr, a weight average over half an epoch
        assert lrs == pytest.approx([1e-3] * 3)
        assert int(state["weight_average"]["n_averaged"]) == 3 * len(split.train)
    report = json.loads(paths.test_metrics.read_text())
    assert report["n"] == len(split.test) and "coarse_head" not in report  # no coarse head
    assert 0.0 <= report["fine"]["balanced_accuracy"] <= 1.0
    assert report["best_epoch"] == result.best_epoch


def test_the_same_seed_trains_the_same_peer(
    small_cohort: Path, bracs: Hierarchy, tmp_path: Path
) -> None:
    settings = TrainSettings(epochs=2, lr=1e-3)
    config = _config(small_cohort, "plain", settings)
    (split,) = make_splits(read_labels(small_cohort / "labels.csv", bracs), k=1, seed=0,
                           val_frac=0.2, test_frac=0.2)  # fmt: skip
    first, _ = train_peer("flat_gated", config, bracs, split, tmp_path / "a")
    again, _ = train_peer("flat_gated", config, bracs, split, tmp_path / "b")
    for (name, a), (_, b) in zip(
        first.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_recipes_differ_only_in_the_recipe() -> None:
    settings = TrainSettings(epochs=7, lr=3e-4, seed=5)
    plain, hmil = (recipe_overrides(r, settings) for r in ("plain", "hmil"))
    budget = {"train.epochs": 7, "train.lr": 3e-4, "train.seed": 5}
    assert hmil == budget and budget.items() <= plain.items()
    assert plain["train.lr_schedule"] == "cosine" and plain["train.ema_epochs"] == 0.0
    assert set(RECIPES) == {"plain", "hmil"}
    with pytest.raises(ValueError, match="unknown recipe 'x'"):
        recipe_overrides("x", settings)
